"""Reads: tasks by id, pages of tasks, trees, log lines, statistics and servers.

Each function is one verb of ``PostgresRepository`` (which documents its contract) run on a
connection of the pool, mapping rows with ``codec``; none of them writes.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from taskqueue_core.tortoise.postgres.codec import decode, server, task
from taskqueue_core.tortoise.postgres.filters import filter_sql
from taskqueue_core.tortoise.postgres.statements import (
    SELECT_TASKS,
    SERVER_COLUMNS,
    STATS_SQL,
    TREE_SQL,
    WORKER_STATS_SQL,
)

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository


async def get_tasks(repo: PostgresRepository, task_ids: Sequence[int]) -> list[Task]:
    if not task_ids:
        return []
    async with repo._connection() as conn:
        rows = await conn.fetch(f"{SELECT_TASKS} WHERE id = ANY($1::bigint[])", list(set(task_ids)))
    found = {r[0]: task(r) for r in rows}
    return [found[i] for i in task_ids if i in found]


async def list_tasks(
    repo: PostgresRepository, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
) -> TaskPage:
    where, args = filter_sql(filter or TaskFilter())
    async with repo._connection() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM queued_tasks{where}", *args)
        n = len(args)
        rows = await conn.fetch(
            f"{SELECT_TASKS}{where} ORDER BY id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            max(limit, 0),
            max(offset, 0),
        )
    return TaskPage(tasks=[task(r) for r in rows], total=int(total))


async def get_tree(repo: PostgresRepository, task_id: int) -> TaskTree:
    async with repo._connection() as conn:
        rows = await conn.fetch(TREE_SQL, task_id)
        if not rows:
            raise UnknownTask(f"task {task_id} does not exist")
        ids = [r[0] for r in rows]
        edges = await conn.fetch(
            "SELECT task_id, parent_id FROM queued_task_dependencies "
            "WHERE task_id = ANY($1::bigint[]) AND parent_id = ANY($1::bigint[]) "
            "ORDER BY task_id, id",
            ids,
        )
    return TaskTree(tasks=[task(r) for r in rows], edges=[(e[0], e[1]) for e in edges])


async def get_logs(
    repo: PostgresRepository, task_id: int, *, after_id: int | None = None, limit: int = 200
) -> list[LogRecord]:
    async with repo._connection() as conn:
        rows = await conn.fetch(
            "SELECT id, queued_task_id, type, name, message, info::text, date_created "
            "FROM queued_task_logs WHERE queued_task_id = $1 AND id > $2 "
            "ORDER BY id LIMIT $3",
            task_id,
            after_id or 0,
            max(limit, 0),
        )
    return [
        LogRecord(
            id=r[0],
            task_id=r[1],
            type=r[2],
            name=r[3],
            message=r[4],
            info=decode(r[5]),
            date_created=r[6],
        )
        for r in rows
    ]


async def stats(repo: PostgresRepository) -> Stats:
    async with repo._connection() as conn:
        rows = await conn.fetch(STATS_SQL)
        workers = await conn.fetchrow(WORKER_STATS_SQL)
    assert workers is not None
    by_state = {state.value: 0 for state in TaskState}
    by_channel: dict[str, dict[str, int]] = {}
    done = failed = 0
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + r["n"]
        by_channel.setdefault(r["channel"], {})[r["state"]] = r["n"]
        done += r["done_recently"]
        failed += r["failed_recently"]
    return Stats(
        by_state=by_state,
        by_channel=by_channel,
        done_last_minute=done,
        failed_last_minute=failed,
        servers_running=workers["servers"],
        workers_total=workers["total"],
        workers_active=workers["active"],
        workers_idle=workers["idle"],
    )


async def list_servers(repo: PostgresRepository) -> list[ServerInfo]:
    async with repo._connection() as conn:
        rows = await conn.fetch(
            f"SELECT {SERVER_COLUMNS} FROM queued_task_workers ORDER BY server_name"
        )
    return [server(r) for r in rows]
