"""Fixtures of the PostgreSQL backend tests: an open repository and raw connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from taskqueue_core.tortoise.postgres import PostgresRepository
from taskqueue_core.tortoise.schema import tortoise_config
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


@pytest.fixture
async def host_client(pg_url: str) -> AsyncIterator[Any]:
    """A host application's Tortoise client (with the taskqueue models) on the test's database,
    for ``PostgresRepository(client=...)``; closed after the test, within a bound (its pool
    waits for every connection lent)."""
    from tortoise.context import TortoiseContext

    context = TortoiseContext()
    with context:
        await context.init(config=tortoise_config(pg_url))
        client = context.db("taskqueue")
    try:
        yield client
    finally:
        await asyncio.wait_for(context.close_connections(), timeout=20)
