"""Fixtures of the SQLite backend tests: a fresh database file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskqueue_core.tortoise.sqlite import SqliteRepository


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where this test's database file lives (not created yet)."""
    return tmp_path / "queue.sqlite3"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite://{db_path}"


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[SqliteRepository]:
    """An open repository on this test's file, closed afterwards."""
    repository = SqliteRepository(db_url)
    await repository.open()
    try:
        yield repository
    finally:
        await repository.close()
