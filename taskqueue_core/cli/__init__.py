"""``taskq``, the console of taskqueue: migrations, workers, inspection and control.

``taskqueue_core.cli.application.main`` is the console script; ``python -m taskqueue_core.cli``
runs the same application.
"""
