"""Fixtures of the PostgreSQL backend tests: an open repository and raw connections."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskqueue_core.tortoise.postgres import PostgresRepository
from tests.conftest import _asyncpg_url

pytestmark = pytest.mark.postgres


@pytest.fixture
async def repo(pg_url: str) -> AsyncIterator[PostgresRepository]:
    """An open ``PostgresRepository`` (NOTIFY on) on the test's migrated database."""
    repository = PostgresRepository(pg_url)
    await repository.open()
    try:
        yield repository
    finally:
        await repository.close()


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test's database, for checks and interference."""
    conn = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        yield conn
    finally:
        await conn.close()
