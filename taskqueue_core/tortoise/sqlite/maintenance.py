"""Maintenance on SQLite: the servers' rows and the queue's upkeep.

The bodies of ``SqliteRepository``'s server and maintenance verbs: a server's row
(``register_server``, ``heartbeat``, ``unregister_server``), the rescue of tasks left doing
on servers that stopped sending heartbeats (``rescue``, with the cascade of the tasks it
fails), and the deletion of old finished tasks (``prune``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from taskqueue_core.models import WORKER_LOST, ServerInfo, TaskState
from taskqueue_core.tortoise.sqlite.codec import ts, utc_now
from taskqueue_core.tortoise.sqlite.statements import FINISHED, cascade, delete_tasks

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["heartbeat", "prune", "register_server", "rescue", "unregister_server"]


async def register_server(repo: SqliteRepository, server: ServerInfo) -> None:
    """See ``SqliteRepository.register_server``."""
    now = utc_now()
    started = server.started_at or now
    async with repo._writing("register_server", single=True) as conn:
        await conn.execute_fetchall(
            """
            INSERT INTO queued_task_workers (server_name, hostname, pid, max_workers,
                active_workers, idle_workers, is_running, last_heartbeat, started_at, version)
            VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
            ON CONFLICT (server_name) DO UPDATE SET
                hostname = excluded.hostname, pid = excluded.pid,
                max_workers = excluded.max_workers,
                active_workers = excluded.active_workers,
                idle_workers = excluded.idle_workers, is_running = 1,
                last_heartbeat = excluded.last_heartbeat,
                started_at = excluded.started_at, version = excluded.version
            """,
            (
                server.server_name,
                server.hostname,
                server.pid,
                server.max_workers,
                server.active_workers,
                server.idle_workers,
                ts(now),
                ts(started),
                server.version,
            ),
        )


async def heartbeat(
    repo: SqliteRepository, server_name: str, active_workers: int, idle_workers: int
) -> bool:
    """See ``SqliteRepository.heartbeat``."""
    async with repo._writing("heartbeat", single=True) as conn:
        rows = await conn.execute_fetchall(
            "UPDATE queued_task_workers SET last_heartbeat = ?, active_workers = ?, "
            "idle_workers = ? WHERE server_name = ? RETURNING id",
            (ts(utc_now()), active_workers, idle_workers, server_name),
        )
    return bool(rows)


async def unregister_server(repo: SqliteRepository, server_name: str) -> None:
    """See ``SqliteRepository.unregister_server``."""
    async with repo._writing("unregister_server", single=True) as conn:
        await conn.execute_fetchall(
            "DELETE FROM queued_task_workers WHERE server_name = ?", (server_name,)
        )


async def rescue(repo: SqliteRepository, stale: str) -> list[int]:
    """Rescue the tasks of servers silent since ``stale`` (stored text); see
    ``SqliteRepository.rescue_stale``."""
    now = ts(utc_now())
    used_up = "retry_count >= max_retries"
    async with repo._writing("rescue_stale") as conn:
        rows = await conn.execute_fetchall(
            f"""
            UPDATE queued_tasks SET
                state = CASE WHEN {used_up} THEN 'failed' ELSE 'enqueued' END,
                date_failed = CASE WHEN {used_up} THEN :now ELSE date_failed END,
                date_ended = CASE WHEN {used_up} THEN :now ELSE date_ended END,
                date_scheduled = CASE WHEN {used_up} THEN date_scheduled ELSE :now END,
                exception_name = :lost,
                exception_message = 'server ' || COALESCE(claimed_by, '(none)')
                    || ' stopped sending heartbeats while running the task',
                exception_info = NULL,
                claimed_by = CASE WHEN {used_up} THEN claimed_by ELSE NULL END,
                retry_count = CASE WHEN {used_up} THEN retry_count ELSE retry_count + 1 END
            WHERE state = 'doing' AND date_started < :stale
              AND (claimed_by IS NULL OR claimed_by NOT IN (
                  SELECT server_name FROM queued_task_workers WHERE last_heartbeat >= :stale
              ))
            RETURNING id, state, channel
            """,
            {"now": now, "lost": WORKER_LOST, "stale": stale},
        )
        await conn.execute_fetchall(
            "DELETE FROM queued_task_workers WHERE last_heartbeat < ?", (stale,)
        )
        failed = sorted(row[0] for row in rows if row[1] == TaskState.FAILED)
        descendants = await cascade(conn, failed, TaskState.FAILED, now)
    requeued = (row[2] for row in rows if row[1] == TaskState.ENQUEUED)
    repo._emit_changes(requeued, (), [*failed, *descendants])
    return sorted(row[0] for row in rows)


async def prune(repo: SqliteRepository, ended_before: datetime) -> int:
    """See ``SqliteRepository.prune``."""
    async with repo._writing("prune") as conn:
        return await delete_tasks(
            conn, f"state IN {FINISHED} AND date_ended < ?", (ts(ended_before),)
        )
