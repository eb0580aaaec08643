"""Execution on SQLite: the writes and reads of workers running tasks.

The bodies of ``SqliteRepository``'s execution verbs: claiming ready tasks
(``claim_tasks``), applying the outcomes of attempts with their cascades
(``complete_tasks``), the next scheduled date (``next_due``), the states of running tasks
(``get_states``), and what tasks write while they run (``update_contexts``,
``append_logs``). Each runs in the repository's transactions and sends its events after
the commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskqueue_core.exceptions import ArgumentNotSerializable, InvalidTransition
from taskqueue_core.limits import LOG_TYPE_MAX, NAME_MAX, json_text, log_text
from taskqueue_core.models import NewLogRecord, Outcome, Task, TaskState
from taskqueue_core.tortoise.sqlite.codec import (
    distinct_ids,
    dt,
    task_from_row,
    ts,
    utc_now,
)
from taskqueue_core.tortoise.sqlite.statements import (
    IDS,
    OUTCOME_SQL,
    RETURNING_TASK,
    cascade,
    outcome_params,
    release_children,
)

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = [
    "append_logs",
    "claim_tasks",
    "complete_tasks",
    "get_states",
    "next_due",
    "update_contexts",
]


def _claim_key(task: Task) -> tuple[int, datetime, int]:
    assert task.date_scheduled is not None
    return (-task.priority, task.date_scheduled, task.id)


async def claim_tasks(
    repo: SqliteRepository, server_name: str, limit: int, channels: Sequence[str] | None = None
) -> list[Task]:
    """See ``SqliteRepository.claim_tasks``."""
    if limit <= 0 or (channels is not None and not channels):
        return []
    now = ts(utc_now())
    channel_filter = ""
    params: list[Any] = [now, server_name, now]
    if channels is not None:
        channel_filter = f"AND channel IN ({IDS})"
        params.append(json.dumps(list(channels)))
    params.append(limit)
    # ORDER BY -priority, date_scheduled, id over state = 'enqueued' is exactly the
    # partial claim index: read in index order, the first `limit` ready entries are the
    # answer, with no sort. INDEXED BY because without ANALYZE statistics the planner
    # prefers the plain state index and sorts every enqueued row (open() creates it).
    sql = f"""
        UPDATE queued_tasks SET state = 'doing', date_started = ?, claimed_by = ?
        WHERE id IN (
            SELECT id FROM queued_tasks INDEXED BY queued_tasks_claim_idx
            WHERE state = 'enqueued' AND date_scheduled <= ? {channel_filter}
            ORDER BY -priority, date_scheduled, id
            LIMIT ?
        )
        {RETURNING_TASK}
    """
    # A transaction even for one statement: if this call is cancelled while the UPDATE
    # waits for another process's lock, the ROLLBACK queued behind it undoes the claim
    # (a lone statement would still run later, marking tasks doing for nobody).
    async with repo._writing("claim") as conn:
        rows = await conn.execute_fetchall(sql, params)
    return sorted((task_from_row(r) for r in rows), key=_claim_key)


async def complete_tasks(
    repo: SqliteRepository, server_name: str, outcomes: Sequence[Outcome]
) -> list[int]:
    """See ``SqliteRepository.complete_tasks``."""
    firsts: dict[int, Outcome] = {}
    for outcome in outcomes:
        firsts.setdefault(outcome.task_id, outcome)
    if not firsts:
        return []
    now = ts(utc_now())
    params: dict[TaskState, list[dict[str, Any]]] = {state: [] for state in OUTCOME_SQL}
    for outcome in firsts.values():
        state = TaskState(outcome.state)
        if state not in OUTCOME_SQL:
            raise InvalidTransition(
                f"outcome of task {outcome.task_id}: {state.value!r} is not a way to end "
                "an attempt (done, failed, enqueued, cancelled or stopped)"
            )
        params[state].append(outcome_params(outcome, state, now))
    async with repo._writing("complete") as conn:
        live_rows = await conn.execute_fetchall(
            "SELECT id, channel, EXISTS (SELECT 1 FROM queued_task_dependencies "
            "WHERE parent_id = queued_tasks.id) FROM queued_tasks "
            f"WHERE id IN ({IDS}) AND state = 'doing' AND claimed_by = ?",
            (json.dumps(list(firsts)), server_name),
        )
        live = {row[0]: row[1] for row in live_rows}
        parents = {row[0] for row in live_rows if row[2]}
        for state, group in params.items():
            group = [p for p in group if p["id"] in live]
            if group:
                await conn.executemany(OUTCOME_SQL[state], group)
        by_state = {
            state: [p["id"] for p in group if p["id"] in live] for state, group in params.items()
        }

        # Only tasks with children cascade (most tasks have none: no statement at all).
        def having_children(state: TaskState) -> list[int]:
            return [i for i in by_state[state] if i in parents]

        released = await release_children(conn, having_children(TaskState.DONE))
        failed = await cascade(conn, having_children(TaskState.FAILED), TaskState.FAILED, now)
        cancelled = await cascade(
            conn, having_children(TaskState.CANCELLED), TaskState.CANCELLED, now
        )
    changed = [task_id for task_id in firsts if task_id in live]
    retried = by_state[TaskState.ENQUEUED]
    channels = [live[i] for i in retried] + [channel for _, channel in released]
    ended = {i for i in changed if i not in set(retried)} | set(failed) | set(cancelled)
    repo._emit_changes(channels, (), ended)
    return changed


async def next_due(
    repo: SqliteRepository, channels: Sequence[str] | None = None
) -> datetime | None:
    """See ``SqliteRepository.next_due``."""
    if channels is not None and not channels:
        return None
    params: list[Any] = [ts(utc_now())]
    channel_filter = ""
    if channels is not None:
        channel_filter = f"AND channel IN ({IDS})"
        params.append(json.dumps(list(channels)))
    # Stored dates are fixed-width ISO text, so min() and > compare them as dates.
    async with repo._reading("next_due") as conn:
        rows = await conn.execute_fetchall(
            "SELECT min(date_scheduled) FROM queued_tasks "
            f"WHERE state = 'enqueued' AND date_scheduled > ? {channel_filter}",
            params,
        )
    return dt(rows[0][0]) if rows else None


async def get_states(repo: SqliteRepository, task_ids: Sequence[int]) -> dict[int, TaskState]:
    """See ``SqliteRepository.get_states``."""
    ids = distinct_ids(task_ids)
    if not ids:
        return {}
    async with repo._reading("get_states") as conn:
        rows = await conn.execute_fetchall(
            f"SELECT id, state FROM queued_tasks WHERE id IN ({IDS})", (json.dumps(ids),)
        )
    states = {row[0]: TaskState(row[1]) for row in rows}
    return {i: states[i] for i in ids if i in states}


async def update_contexts(repo: SqliteRepository, contexts: Mapping[int, dict[str, Any]]) -> None:
    """See ``SqliteRepository.update_contexts``."""
    params = []
    for task_id, context in contexts.items():
        if not isinstance(context, dict):
            raise ArgumentNotSerializable(
                f"context of task {task_id} must be a dict, got {type(context).__name__}"
            )
        params.append((json_text(context, f"context of task {task_id}"), task_id))
    if not params:
        return
    async with repo._writing("update_contexts") as conn:
        await conn.executemany("UPDATE queued_tasks SET context = ? WHERE id = ?", params)


async def append_logs(repo: SqliteRepository, records: Sequence[NewLogRecord]) -> None:
    """See ``SqliteRepository.append_logs``."""
    now = ts(utc_now())
    params = [
        {
            "task_id": r.task_id,
            "type": log_text(r.type, LOG_TYPE_MAX),
            "name": log_text(r.name, NAME_MAX),
            "message": log_text(r.message),
            "info": None if r.info is None else json_text(r.info, f"log info of task {r.task_id}"),
            "date": now if r.date_created is None else ts(r.date_created),
        }
        for r in records
    ]
    if not params:
        return
    async with repo._writing("append_logs") as conn:
        await conn.executemany(
            "INSERT INTO queued_task_logs "
            "(queued_task_id, type, name, message, info, date_created) "
            "SELECT :task_id, :type, :name, :message, :info, :date "
            "WHERE EXISTS (SELECT 1 FROM queued_tasks WHERE id = :task_id)",
            params,
        )
