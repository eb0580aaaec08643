"""``taskq migrate``: in process on SQLite and PostgreSQL, and the installed script."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.cli.process import taskq_command
from tests.cli.test_options import run
from tests.conftest import _asyncpg_url

TABLES = {"queued_tasks", "queued_task_dependencies", "queued_task_logs", "queued_task_workers"}


async def _pg_tables(url: str) -> set[str]:
    conn = await asyncpg.connect(_asyncpg_url(url))
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


def test_sqlite_creates_the_schema_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'fresh.sqlite3'}"
    first = run(f"migrate --database-url={url} --json")
    assert first.code == 0, first
    assert first.json() == {"database": url, "applied": ["schema"], "up_to_date": False}
    second = run(f"migrate --database-url={url}")
    assert second.code == 0, second
    assert second.out.strip() == f"{url} is up to date."
    assert run(f"status --database-url={url} --json").code == 0


def test_memory_needs_no_migration() -> None:
    result = run("migrate --database-url=memory://")
    assert result.code == 0
    assert "nothing to migrate" in result.out


@pytest.mark.postgres
def test_installed_script_migrates_an_empty_database(empty_pg_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_")}
    env["QUEUE_DATABASE_URL"] = empty_pg_url
    first = subprocess.run(
        [*taskq_command(), "migrate"], capture_output=True, text=True, env=env, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"Migrated {empty_pg_url}: applied ")
    assert TABLES <= asyncio.run(_pg_tables(empty_pg_url))
    again = subprocess.run(
        [*taskq_command(), "migrate", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert '"up_to_date": true' in again.stdout
    status = subprocess.run(
        [*taskq_command(), "status", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert '"pending": 0' in status.stdout


@pytest.mark.postgres
def test_migrate_in_process_on_postgres(empty_pg_url: str) -> None:
    first = run(f"migrate --database-url={empty_pg_url} --json")
    assert first.code == 0, first
    applied = first.json()["applied"]
    assert applied
    assert run(f"migrate --database-url={empty_pg_url} --json").json()["applied"] == []


@pytest.mark.postgres
def test_missing_database_is_one_line(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/tq_test_does_not_exist"
    result = run(f"migrate --database-url={missing}")
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert "tq_test_does_not_exist" in result.err


@pytest.mark.postgres
def test_commands_on_an_unmigrated_database_point_to_migrate(empty_pg_url: str) -> None:
    result = run(f"status --database-url={empty_pg_url}")
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"error: cannot open the database {empty_pg_url}: ")
    assert "taskq migrate" in result.err
