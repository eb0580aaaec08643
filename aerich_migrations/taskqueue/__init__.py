"""Migrations of the ``taskqueue`` app, oldest first (``<n>_<date>_<name>.py``)."""
