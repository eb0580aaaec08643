"""Opening and closing: schema creation, pragmas, persistence, bad URLs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from taskqueue_core.exceptions import ConfigError, RepositoryError
from taskqueue_core.models import NewLogRecord, Outcome, ServerInfo, TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import new

TABLES = {"queued_tasks", "queued_task_dependencies", "queued_task_logs", "queued_task_workers"}


def schema_objects(path: Path) -> tuple[set[str], set[str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
    return {n for t, n in rows if t == "table"}, {n for t, n in rows if t == "index"}


async def test_open_creates_the_schema_of_a_new_file(db_path: Path, db_url: str) -> None:
    assert not db_path.exists()
    repo = SqliteRepository(db_url)
    await repo.open()
    try:
        tables, indexes = schema_objects(db_path)
        assert TABLES <= tables
        assert "queued_tasks_claim_idx" in indexes
        with sqlite3.connect(db_path) as conn:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"  # persistent on the file
        assert await repo.create_tasks([new()]) == [1]
    finally:
        await repo.close()


async def test_own_connection_has_busy_timeout_foreign_keys_and_wal(repo: SqliteRepository) -> None:
    async with repo._reading("pragmas") as conn:
        timeout = (await conn.execute_fetchall("PRAGMA busy_timeout"))[0][0]
        foreign_keys = (await conn.execute_fetchall("PRAGMA foreign_keys"))[0][0]
        mode = (await conn.execute_fetchall("PRAGMA journal_mode"))[0][0]
    assert timeout >= 5000
    assert foreign_keys == 1
    assert mode == "wal"


async def test_data_persist_across_close_and_open(db_url: str) -> None:
    first = SqliteRepository(db_url)
    await first.open()
    parent, child = await first.create_tasks(
        [new("parent", args=[1, "two"], kwargs={"k": [3]}), new("child", batch_parents=(0,))]
    )
    await first.register_server(ServerInfo(server_name="s1", hostname="h", pid=1, max_workers=2))
    (claimed,) = await first.claim_tasks("s1", 5)
    assert claimed.id == parent
    await first.append_logs([NewLogRecord(task_id=parent, type="info", name="t", message="hi")])
    await first.complete_tasks(
        "s1", [Outcome(task_id=parent, state=TaskState.DONE, result={"ok": True})]
    )
    await first.close()

    second = SqliteRepository(db_url)
    await second.open()
    try:
        stored_parent, stored_child = await second.get_tasks([parent, child])
        assert stored_parent.state is TaskState.DONE
        assert stored_parent.result == {"ok": True}
        assert stored_parent.args == [1, "two"] and stored_parent.kwargs == {"k": [3]}
        assert stored_child.state is TaskState.ENQUEUED and stored_child.parent_task == parent
        assert [log.message for log in await second.get_logs(parent)] == ["hi"]
        assert (await second.get_tree(parent)).edges == [(child, parent)]
        assert [s.server_name for s in await second.list_servers()] == ["s1"]
        # Ids keep growing after a reopen.
        assert await second.create_tasks([new()]) == [child + 1]
    finally:
        await second.close()


async def test_open_and_close_are_idempotent_and_closed_repository_refuses(db_url: str) -> None:
    repo = SqliteRepository(db_url)
    await repo.open()
    await repo.open()
    await repo.close()
    await repo.close()
    with pytest.raises(RepositoryError, match="not open"):
        await repo.get_tasks([1])
    await repo.open()  # and it can be opened again
    try:
        assert await repo.get_tasks([1]) == []
    finally:
        await repo.close()


async def test_memory_database() -> None:
    repo = SqliteRepository("sqlite://:memory:")
    await repo.open()
    try:
        (task_id,) = await repo.create_tasks([new()])
        assert [t.id for t in await repo.claim_tasks("s", 1)] == [task_id]
    finally:
        await repo.close()


def test_url_must_be_sqlite() -> None:
    with pytest.raises(ConfigError, match="sqlite://"):
        SqliteRepository("postgres://localhost/db")


async def test_missing_directory_is_a_repository_error(tmp_path: Path) -> None:
    repo = SqliteRepository(f"sqlite://{tmp_path}/missing/dir/queue.sqlite3")
    with pytest.raises(RepositoryError, match=r"missing/dir.* does not exist"):
        await repo.open()
    await repo.close()
    assert not (tmp_path / "missing").exists()


async def test_driver_errors_become_repository_errors(
    db_path: Path, repo: SqliteRepository
) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE queued_task_logs")
    with pytest.raises(RepositoryError, match="no such table") as info:
        await repo.get_logs(1)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


async def test_opening_leaves_the_host_tortoise_settings_alone(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("USE_TZ", "False")
    repo = SqliteRepository(db_url)
    await repo.open()
    try:
        assert os.environ["TIMEZONE"] == "Europe/Paris"
        assert os.environ["USE_TZ"] == "False"
    finally:
        await repo.close()
