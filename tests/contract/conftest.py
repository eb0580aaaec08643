"""The ``repository`` fixture: every contract test runs once per implementation.

- ``memory``: ``InMemoryRepository()``
- ``sqlite``: ``SqliteRepository`` on a fresh file in the test's temporary directory
- ``postgres``: ``PostgresRepository`` on a fresh migrated database (``pg_url``)

Each repository is opened before the test and closed after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.repository import TaskRepository

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the implementation under test."""
    return str(request.param)


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The database URL of the implementation under test (None for memory).

    A plain fixture, so that ``pg_url`` (async) is only set up for the postgres case.
    """
    if backend == "sqlite":
        return f"sqlite://{tmp_path}/tq.sqlite3"
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return None


@pytest.fixture
async def repository(backend: str, backend_url: str | None) -> AsyncIterator[TaskRepository]:
    """An open repository of the implementation under test, closed afterwards."""
    repo: TaskRepository
    if backend == "memory":
        repo = InMemoryRepository()
    elif backend == "sqlite":
        from taskqueue_core.tortoise.sqlite import SqliteRepository

        assert backend_url is not None
        repo = SqliteRepository(backend_url)
    else:
        from taskqueue_core.tortoise.postgres import PostgresRepository

        assert backend_url is not None
        repo = PostgresRepository(backend_url)
    await repo.open()
    try:
        yield repo
    finally:
        await repo.close()
