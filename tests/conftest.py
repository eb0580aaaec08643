"""Shared fixtures: PostgreSQL databases created and dropped per test, from a migrated template.

``QUEUE_TEST_DATABASE_URL`` names the server (default: the local one, user postgres); tests
create databases named ``tq_test_*`` on it and drop them afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

SERVER_URL = os.environ.get(
    "QUEUE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    """``SERVER_URL`` with its database replaced by ``name``."""
    base = SERVER_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _asyncpg_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_url(SERVER_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(template: str | None = None) -> str:
    """Create an empty database (or a copy of ``template``) and return its name."""
    name = f"tq_test_{uuid.uuid4().hex[:12]}"
    suffix = f' TEMPLATE "{template}"' if template else ""
    await _admin(f'CREATE DATABASE "{name}"{suffix}')
    return name


async def drop_database(name: str) -> None:
    """Drop ``name``, disconnecting whoever is still connected."""
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database that per-test databases are copied from (migrated once per run)."""
    from taskqueue_core.tortoise.schema import migrate

    async def setup() -> str:
        name = await create_database()
        await migrate(database_url(name))
        return name

    name = asyncio.run(setup())
    yield name
    asyncio.run(drop_database(name))


@pytest.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated PostgreSQL database of this test's own."""
    name = await create_database(template=pg_template)
    try:
        yield database_url(name)
    finally:
        await drop_database(name)


@pytest.fixture
async def empty_pg_url() -> AsyncIterator[str]:
    """The URL of a fresh database with no tables at all."""
    name = await create_database()
    try:
        yield database_url(name)
    finally:
        await drop_database(name)
