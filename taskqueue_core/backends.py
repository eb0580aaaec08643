"""Choose the repository implementation a database URL names.

The Tortoise implementations are imported only when asked for, so the core stays free of
ORM imports (and a user of the in-memory fake needs no database driver).
"""

from __future__ import annotations

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_core.repository import TaskRepository

__all__ = ["repository_from_config"]


def repository_from_config(config: QueueConfig) -> TaskRepository:
    """A new, unopened repository for ``config.database_url``.

    ``postgres://`` -> ``PostgresRepository``; ``sqlite://`` -> ``SqliteRepository``;
    ``memory://`` -> ``InMemoryRepository`` (one process only). Raises ``ConfigError``.
    """
    scheme = config.database_url.split("://", 1)[0]
    if scheme in {"postgres", "postgresql", "asyncpg"}:
        from taskqueue_core.tortoise.postgres import PostgresRepository

        return PostgresRepository(
            config.database_url,
            notify_channel=config.notify_channel,
            use_notify=config.use_postgresql_notify,
        )
    if scheme == "sqlite":
        from taskqueue_core.tortoise.sqlite import SqliteRepository

        return SqliteRepository(config.database_url)
    if scheme == "memory":
        from taskqueue_core.testing import InMemoryRepository

        return InMemoryRepository()
    raise ConfigError(f"QUEUE_DATABASE_URL has an unknown scheme: {config.database_url!r}")
