"""Fixtures of the pool tests: an open repository per backend that runs servers for real.

- ``memory``: ``InMemoryRepository()`` (one process)
- ``postgres``: ``PostgresRepository`` on a fresh migrated database (``pg_url``)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.repository import TaskRepository

BACKENDS = ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the repository implementation under test."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """``memory://`` or the URL of this test's own PostgreSQL database."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return "memory://"


@pytest.fixture
async def repository(backend: str, database_url: str) -> AsyncIterator[TaskRepository]:
    """An open repository of the implementation under test, closed afterwards."""
    repo: TaskRepository
    if backend == "memory":
        repo = InMemoryRepository()
    else:
        from taskqueue_core.tortoise.postgres import PostgresRepository

        repo = PostgresRepository(database_url)
    await repo.open()
    try:
        yield repo
    finally:
        await repo.close()
