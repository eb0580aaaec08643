"""Reads on SQLite: tasks, trees, logs, statistics and servers, for the admin views.

The bodies of ``SqliteRepository``'s read verbs: tasks by id (``get_tasks``), a filtered
page (``list_tasks``), a task with its descendants (``get_tree``), a task's log rows
(``get_logs``), the counts of ``stats`` and the servers' rows (``list_servers``). Reads of
several statements run in one read snapshot, so that they agree.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from taskqueue_core.exceptions import UnknownTask
from taskqueue_core.models import (
    LogRecord,
    ServerInfo,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskState,
    TaskTree,
)
from taskqueue_core.tortoise.sqlite.codec import distinct_ids, dt, load, task_from_row, ts, utc_now
from taskqueue_core.tortoise.sqlite.statements import IDS, TASK_COLUMNS, filter_sql

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["get_logs", "get_tasks", "get_tree", "list_servers", "list_tasks", "stats"]


async def get_tasks(repo: SqliteRepository, task_ids: Sequence[int]) -> list[Task]:
    """See ``SqliteRepository.get_tasks``."""
    wanted = [operator.index(i) for i in task_ids]
    ids = distinct_ids(wanted)
    if not ids:
        return []
    async with repo._reading("get_tasks") as conn:
        rows = await conn.execute_fetchall(
            f"SELECT {TASK_COLUMNS} FROM queued_tasks WHERE id IN ({IDS})",
            (json.dumps(ids),),
        )
    found = {task.id: task for task in map(task_from_row, rows)}
    return [found[i] for i in wanted if i in found]


async def list_tasks(
    repo: SqliteRepository, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
) -> TaskPage:
    """See ``SqliteRepository.list_tasks``."""
    limit, offset = max(limit, 0), max(offset, 0)
    where, params = filter_sql(filter or TaskFilter())
    async with repo._reading("list_tasks", snapshot=True) as conn:
        total_rows = await conn.execute_fetchall(
            f"SELECT COUNT(*) FROM queued_tasks WHERE {where}", params
        )
        rows = await conn.execute_fetchall(
            f"SELECT {TASK_COLUMNS} FROM queued_tasks WHERE {where} "
            "ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
    return TaskPage(tasks=[task_from_row(r) for r in rows], total=int(total_rows[0][0]))


async def get_tree(repo: SqliteRepository, task_id: int) -> TaskTree:
    """See ``SqliteRepository.get_tree``."""
    tree = (
        "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT d.task_id FROM tree "
        "JOIN queued_task_dependencies AS d ON d.parent_id = tree.id) "
    )
    async with repo._reading("get_tree", snapshot=True) as conn:
        rows = await conn.execute_fetchall(
            f"{tree} SELECT {TASK_COLUMNS} FROM queued_tasks "
            "WHERE id IN (SELECT id FROM tree) ORDER BY id",
            (task_id,),
        )
        edges = await conn.execute_fetchall(
            f"{tree} SELECT task_id, parent_id FROM queued_task_dependencies "
            "WHERE task_id IN (SELECT id FROM tree) AND parent_id IN (SELECT id FROM tree) "
            "ORDER BY task_id, parent_id",
            (task_id,),
        )
    tasks = [task_from_row(r) for r in rows]
    if not any(task.id == task_id for task in tasks):
        raise UnknownTask(f"no task has id {task_id}")
    return TaskTree(tasks=tasks, edges=[(row[0], row[1]) for row in edges])


async def get_logs(
    repo: SqliteRepository, task_id: int, *, after_id: int | None = None, limit: int = 200
) -> list[LogRecord]:
    """See ``SqliteRepository.get_logs``."""
    async with repo._reading("get_logs") as conn:
        rows = await conn.execute_fetchall(
            "SELECT id, queued_task_id, type, name, message, info, date_created "
            "FROM queued_task_logs WHERE queued_task_id = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (task_id, after_id if after_id is not None else 0, max(limit, 0)),
        )
    records = []
    for row in rows:
        created = dt(row[6])
        assert created is not None  # NOT NULL column
        records.append(
            LogRecord(
                id=row[0],
                task_id=row[1],
                type=row[2],
                name=row[3],
                message=row[4],
                info=load(row[5]),
                date_created=created,
            )
        )
    return records


async def stats(repo: SqliteRepository) -> Stats:
    """See ``SqliteRepository.stats``."""
    since = ts(utc_now() - timedelta(minutes=1))
    async with repo._reading("stats", snapshot=True) as conn:
        counts = await conn.execute_fetchall(
            "SELECT channel, state, COUNT(*) FROM queued_tasks GROUP BY channel, state"
        )
        recent = await conn.execute_fetchall(
            "SELECT COALESCE(SUM(date_done >= :since), 0), "
            "COALESCE(SUM(date_failed >= :since), 0) FROM queued_tasks "
            "WHERE date_done >= :since OR date_failed >= :since",
            {"since": since},
        )
        servers = await conn.execute_fetchall(
            "SELECT COUNT(*), COALESCE(SUM(max_workers), 0), "
            "COALESCE(SUM(active_workers), 0), COALESCE(SUM(idle_workers), 0) "
            "FROM queued_task_workers WHERE is_running"
        )
    by_state = {state.value: 0 for state in TaskState}
    by_channel: dict[str, dict[str, int]] = {}
    for channel, state, count in counts:
        by_state[state] = by_state.get(state, 0) + count
        by_channel.setdefault(channel, {})[state] = count
    running, total, active, idle = servers[0]
    return Stats(
        by_state=by_state,
        by_channel=by_channel,
        done_last_minute=int(recent[0][0]),
        failed_last_minute=int(recent[0][1]),
        servers_running=int(running),
        workers_total=int(total),
        workers_active=int(active),
        workers_idle=int(idle),
    )


async def list_servers(repo: SqliteRepository) -> list[ServerInfo]:
    """See ``SqliteRepository.list_servers``."""
    async with repo._reading("list_servers") as conn:
        rows = await conn.execute_fetchall(
            "SELECT server_name, hostname, pid, max_workers, active_workers, idle_workers, "
            "is_running, last_heartbeat, started_at, version "
            "FROM queued_task_workers ORDER BY server_name"
        )
    return [
        ServerInfo(
            server_name=row[0],
            hostname=row[1],
            pid=row[2],
            max_workers=row[3],
            active_workers=row[4],
            idle_workers=row[5],
            is_running=bool(row[6]),
            last_heartbeat=dt(row[7]),
            started_at=dt(row[8]),
            version=row[9],
        )
        for row in rows
    ]
