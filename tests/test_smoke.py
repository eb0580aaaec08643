from __future__ import annotations

import asyncpg

from tests.conftest import _asyncpg_url


async def test_migrated_database_has_the_tables(pg_url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    names = {r["table_name"] for r in rows}
    assert {
        "queued_tasks",
        "queued_task_logs",
        "queued_task_workers",
        "queued_task_dependencies",
    } <= names
