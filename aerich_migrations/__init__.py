"""aerich migrations of the ``taskqueue`` app, shipped in the wheel.

aerich is given this package's directory as its ``location`` and reads the app's migrations
from ``taskqueue/`` below it (see ``taskqueue_core.tortoise.schema.migrate``). A new
migration is made with ``aerich migrate`` against ``schema.migration_config(url)``, then
edited by hand when it needs SQL the ORM cannot express.
"""
