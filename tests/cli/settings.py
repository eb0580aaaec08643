"""Objects for ``taskq --config tests.cli.settings:...`` in the console tests."""

from __future__ import annotations

import os

from taskqueue_core import QueueConfig


def make_config() -> QueueConfig:
    """A config on the database the test put in ``TASKQ_TEST_DATABASE_URL``."""
    return QueueConfig(
        database_url=os.environ["TASKQ_TEST_DATABASE_URL"], max_workers=3, stale_after=45
    )


not_a_config = {"database_url": "sqlite://nope"}
