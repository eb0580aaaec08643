"""Task functions of the fault tests, run by real worker processes.

Each records every execution in the test database's own table ``executions`` (created by
the ``fault_db`` fixture) before doing its work, so a test can count how many times each
task ran and where. The database is the worker's own: ``QUEUE_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

EXECUTIONS_DDL = """
CREATE TABLE executions (
    id bigserial PRIMARY KEY,
    task_key text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

_pool: asyncpg.Pool | None = None


def _dsn() -> str:
    return os.environ["QUEUE_DATABASE_URL"].replace("postgres://", "postgresql://", 1)


async def _connections() -> asyncpg.Pool:
    # One small pool per worker process (tasks run on its one event loop).
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(_dsn(), min_size=1, max_size=4)
    return _pool


async def record(key: str, seconds: float = 0.0) -> str:
    """Record this execution, then take ``seconds``."""
    pool = await _connections()
    await pool.execute("INSERT INTO executions (task_key, pid) VALUES ($1, $2)", key, os.getpid())
    if seconds:
        await asyncio.sleep(seconds)
    return key


def sync_record(key: str) -> str:
    """A plain function: record this execution (from its worker thread)."""

    async def insert() -> None:
        conn = await asyncpg.connect(_dsn())
        try:
            await conn.execute(
                "INSERT INTO executions (task_key, pid) VALUES ($1, $2)", key, os.getpid()
            )
        finally:
            await conn.close()

    asyncio.run(insert())
    return key


def block(seconds: float) -> str:
    """A plain function that holds its thread for ``seconds``, whatever its timeout."""
    time.sleep(seconds)
    return "finished"
