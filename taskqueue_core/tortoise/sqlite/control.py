"""Control on SQLite: the admin writes that change tasks from outside their run.

The bodies of ``SqliteRepository``'s control verbs: cancelling and stopping tasks
(``interrupt``, with the cascade of a cancellation to waiting descendants), putting ended
tasks back with the descendants they ended (``retry_tasks``), and deleting pending tasks
(``delete_pending``). Each runs in one write transaction and sends its events after the
commit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, TaskState
from taskqueue_core.tortoise.sqlite.codec import distinct_ids, ts, utc_now
from taskqueue_core.tortoise.sqlite.statements import IDS, cascade, delete_tasks

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["delete_pending", "interrupt", "retry_tasks"]


async def interrupt(repo: SqliteRepository, task_ids: Sequence[int], state: TaskState) -> list[int]:
    """Cancel or stop ``task_ids`` (``state``); see ``SqliteRepository.cancel_tasks``
    and ``SqliteRepository.stop_tasks``."""
    ids = distinct_ids(task_ids)
    if not ids:
        return []
    now = ts(utc_now())
    date_column = "date_cancelled" if state is TaskState.CANCELLED else "date_stopped"
    async with repo._writing(f"{state.value} tasks") as conn:
        # RETURNING yields the new row; the old state is read first to know which
        # tasks were running (their workers get a ``control`` event).
        doing_rows = await conn.execute_fetchall(
            f"SELECT id FROM queued_tasks WHERE id IN ({IDS}) AND state = 'doing'",
            (json.dumps(ids),),
        )
        rows = await conn.execute_fetchall(
            f"UPDATE queued_tasks SET state = ?, {date_column} = ?, date_ended = ? "
            f"WHERE id IN ({IDS}) AND state IN ('waiting', 'enqueued', 'doing') "
            "RETURNING id",
            (state.value, now, now, json.dumps(ids)),
        )
        changed_set = {row[0] for row in rows}
        changed = [i for i in ids if i in changed_set]
        descendants: list[int] = []
        if state is TaskState.CANCELLED:
            descendants = await cascade(conn, changed, TaskState.CANCELLED, now)
    were_doing = {row[0] for row in doing_rows} & changed_set
    everything = sorted({*changed, *descendants})
    repo._emit_changes((), were_doing, everything)
    return everything


async def retry_tasks(repo: SqliteRepository, task_ids: Sequence[int]) -> list[int]:
    """See ``SqliteRepository.retry_tasks``."""
    ids = distinct_ids(task_ids)
    if not ids:
        return []
    now = ts(utc_now())
    pending = (
        "(SELECT COUNT(*) FROM queued_task_dependencies AS d "
        "JOIN queued_tasks AS p ON p.id = d.parent_id "
        "WHERE d.task_id = queued_tasks.id AND p.state <> 'done')"
    )
    cleared = (
        "exception_name = NULL, exception_message = NULL, exception_info = NULL, "
        "date_failed = NULL, date_cancelled = NULL, date_stopped = NULL, "
        "date_ended = NULL, claimed_by = NULL"
    )
    ended_by_parent = (
        f"((t.state = 'failed' AND t.exception_name = '{PARENT_FAILED}') "
        f"OR (t.state = 'cancelled' AND t.exception_name = '{PARENT_CANCELLED}'))"
    )
    async with repo._writing("retry") as conn:
        retried = await conn.execute_fetchall(
            f"""
            UPDATE queued_tasks SET
                pending_parents = {pending},
                state = CASE WHEN {pending} > 0 THEN 'waiting' ELSE 'enqueued' END,
                retry_count = 0,
                date_scheduled = ?,
                {cleared}
            WHERE id IN ({IDS}) AND state IN ('failed', 'cancelled', 'stopped')
            RETURNING id, state, channel
            """,
            (now, json.dumps(ids)),
        )
        restored = []
        if retried:
            # Descendants that a cascade from these tasks ended, through chains of
            # tasks ended the same way; each waits again for its parents.
            restored = await conn.execute_fetchall(
                f"""
                WITH RECURSIVE lost(id) AS (
                    SELECT d.task_id FROM queued_task_dependencies AS d
                    JOIN queued_tasks AS t ON t.id = d.task_id
                    WHERE d.parent_id IN ({IDS}) AND {ended_by_parent}
                    UNION
                    SELECT d.task_id FROM lost
                    JOIN queued_task_dependencies AS d ON d.parent_id = lost.id
                    JOIN queued_tasks AS t ON t.id = d.task_id
                    WHERE {ended_by_parent}
                )
                UPDATE queued_tasks SET
                    pending_parents = {pending},
                    state = CASE WHEN {pending} > 0 THEN 'waiting' ELSE 'enqueued' END,
                    {cleared}
                WHERE id IN (SELECT id FROM lost)
                RETURNING id, state, channel
                """,
                (json.dumps([row[0] for row in retried]),),
            )
    rows = [*retried, *restored]
    ready = (row[2] for row in rows if row[1] == TaskState.ENQUEUED)
    repo._emit_changes(ready, (), ())
    return sorted(row[0] for row in rows)


async def delete_pending(repo: SqliteRepository, channel: str | None = None) -> int:
    """See ``SqliteRepository.delete_pending``."""
    where = "state IN ('waiting', 'enqueued')"
    params: tuple[Any, ...] = ()
    if channel is not None:
        # ``UNION`` visits a fan-in child once.
        where = """id IN (
            WITH RECURSIVE doomed(id) AS (
                SELECT id FROM queued_tasks
                WHERE state IN ('waiting', 'enqueued') AND channel = ?
                UNION
                SELECT d.task_id
                FROM doomed AS p
                JOIN queued_task_dependencies AS d ON d.parent_id = p.id
                JOIN queued_tasks AS c ON c.id = d.task_id AND c.state = 'waiting'
            )
            SELECT id FROM doomed
        )"""
        params = (channel,)
    async with repo._writing("delete_pending") as conn:
        return await delete_tasks(conn, where, params)
