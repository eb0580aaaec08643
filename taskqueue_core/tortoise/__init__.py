"""The Tortoise ORM implementation of the storage seam: PostgreSQL (production) and SQLite.

``PostgresRepository`` and ``SqliteRepository`` are imported on first access, so importing
this package does not load a database driver that is not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres import PostgresRepository
    from taskqueue_core.tortoise.sqlite import SqliteRepository

__all__ = ["PostgresRepository", "SqliteRepository"]


def __getattr__(name: str) -> Any:
    if name == "PostgresRepository":
        from taskqueue_core.tortoise.postgres import PostgresRepository

        return PostgresRepository
    if name == "SqliteRepository":
        from taskqueue_core.tortoise.sqlite import SqliteRepository

        return SqliteRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
