"""SQL text of the SQLite repository, and the statements that several verbs share.

The task columns in ``Task`` order, the id list parameter (``IDS``: a JSON array bound as
one parameter), the statements that apply an attempt's outcome with their parameters, and
the ``WHERE`` clause of a ``TaskFilter``. Then the shared statements, each run on a raw
connection inside the caller's transaction: releasing the children of tasks done, ending
the waiting descendants of failed or cancelled tasks, deleting tasks with their logs and
edges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from taskqueue_core.exceptions import ArgumentNotSerializable
from taskqueue_core.limits import json_text, storable_name, storable_text
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, Outcome, TaskFilter, TaskState
from taskqueue_core.tortoise.sqlite.codec import dump_result, ts

__all__ = [
    "FINISHED",
    "IDS",
    "OUTCOME_SQL",
    "RETURNING_TASK",
    "TASK_COLUMNS",
    "cascade",
    "delete_tasks",
    "filter_sql",
    "outcome_params",
    "release_children",
]

TASK_COLUMNS = (
    "id, name, module_name, function_name, serialized_function, signature, state, args, "
    "kwargs, context, result, parent_task, pending_parents, channel, priority, retry_count, "
    "max_retries, timeout, date_enqueued, date_scheduled, date_started, date_done, "
    "date_failed, date_cancelled, date_stopped, date_ended, execution_time, claimed_by, "
    "exception_name, exception_message, exception_info"
)
RETURNING_TASK = "RETURNING " + ", ".join(
    f"queued_tasks.{c.strip()}" for c in TASK_COLUMNS.split(",")
)
IDS = "SELECT value FROM json_each(?)"
FINISHED = "('done', 'failed', 'cancelled', 'stopped')"


_OUTCOME_ERROR = (
    "exception_name = CASE WHEN :error_name IS NULL THEN exception_name ELSE :error_name END, "
    "exception_message = CASE WHEN :error_name IS NULL THEN exception_message "
    "ELSE :error_message END, "
    "exception_info = CASE WHEN :error_name IS NULL THEN exception_info ELSE :error_info END"
)
_OUTCOME_COMMON = (
    "execution_time = COALESCE(:execution_time, execution_time), "
    "context = COALESCE(:context, context)"
)
OUTCOME_SQL: dict[TaskState, str] = {
    TaskState.DONE: (
        "UPDATE queued_tasks SET state = 'done', result = :result, date_done = :now, "
        "date_ended = :now, exception_name = NULL, exception_message = NULL, "
        f"exception_info = NULL, {_OUTCOME_COMMON} WHERE id = :id"
    ),
    TaskState.FAILED: (
        "UPDATE queued_tasks SET state = 'failed', exception_name = :error_name, "
        "exception_message = :error_message, exception_info = :error_info, "
        f"date_failed = :now, date_ended = :now, {_OUTCOME_COMMON} WHERE id = :id"
    ),
    TaskState.ENQUEUED: (
        "UPDATE queued_tasks SET state = 'enqueued', claimed_by = NULL, "
        "retry_count = retry_count + :attempt, date_scheduled = :retry_at, "
        f"{_OUTCOME_ERROR}, {_OUTCOME_COMMON} WHERE id = :id"
    ),
    TaskState.CANCELLED: (
        "UPDATE queued_tasks SET state = 'cancelled', date_cancelled = :now, "
        f"date_ended = :now, {_OUTCOME_COMMON} WHERE id = :id"
    ),
    TaskState.STOPPED: (
        "UPDATE queued_tasks SET state = 'stopped', date_stopped = :now, "
        f"date_ended = :now, {_OUTCOME_COMMON} WHERE id = :id"
    ),
}


def outcome_params(outcome: Outcome, state: TaskState, now: str) -> dict[str, Any]:
    """The named parameters of ``OUTCOME_SQL[state]`` for one outcome (every statement
    gets the same keys; sqlite3 ignores those a statement does not name)."""
    what = f"task {outcome.task_id}"
    context = outcome.context
    if context is not None and not isinstance(context, dict):
        raise ArgumentNotSerializable(f"context of {what} must be a dict")
    return {
        "id": outcome.task_id,
        "now": now,
        "result": dump_result(outcome.result, f"result of {what}")
        if state is TaskState.DONE
        else None,
        "error_name": storable_name(outcome.error_name),
        "error_message": storable_text(outcome.error_message),
        "error_info": storable_text(outcome.error_info),
        "execution_time": outcome.execution_time,
        "context": None if context is None else json_text(context, f"context of {what}"),
        "attempt": 1 if outcome.count_attempt else 0,
        "retry_at": now if outcome.retry_at is None else ts(outcome.retry_at),
    }


def filter_sql(f: TaskFilter) -> tuple[str, list[Any]]:
    clauses = ["1"]
    params: list[Any] = []
    if f.states is not None:
        clauses.append(f"state IN ({IDS})")
        params.append(json.dumps([TaskState(s).value for s in f.states]))
    if f.name is not None:
        clauses.append("instr(taskqueue_casefold(name), ?) > 0")
        params.append(f.name.casefold())
    if f.channel is not None:
        clauses.append("channel = ?")
        params.append(f.channel)
    if f.parent_task is not None:
        clauses.append("parent_task = ?")
        params.append(f.parent_task)
    if f.enqueued_after is not None:
        clauses.append("date_enqueued >= ?")
        params.append(ts(f.enqueued_after))
    if f.enqueued_before is not None:
        clauses.append("date_enqueued < ?")
        params.append(ts(f.enqueued_before))
    return " AND ".join(clauses), params


# -- statements shared by several verbs -------------------------------------------------


async def release_children(conn: Any, done_ids: list[int]) -> list[tuple[int, str]]:
    """Count ``done_ids`` off their children's ``pending_parents``; a waiting child at zero
    becomes enqueued. Returns (id, channel) of the children released."""
    if not done_ids:
        return []
    rows = await conn.execute_fetchall(
        f"""
        UPDATE queued_tasks SET
            pending_parents = MAX(pending_parents - c.n, 0),
            state = CASE WHEN state = 'waiting' AND pending_parents - c.n <= 0
                         THEN 'enqueued' ELSE state END
        FROM (
            SELECT task_id, COUNT(*) AS n FROM queued_task_dependencies
            WHERE parent_id IN ({IDS}) GROUP BY task_id
        ) AS c
        WHERE queued_tasks.id = c.task_id
        RETURNING queued_tasks.id, queued_tasks.state, queued_tasks.channel,
                  queued_tasks.pending_parents
        """,
        (json.dumps(done_ids),),
    )
    # A released row reads enqueued with nothing pending; a child that was already
    # enqueued cannot be among them (it had a parent not done until now).
    return sorted((row[0], row[2]) for row in rows if row[1] == TaskState.ENQUEUED and row[3] == 0)


async def cascade(conn: Any, roots: list[int], state: TaskState, now: str) -> list[int]:
    """End the waiting descendants of ``roots`` (which just became ``state``: failed or
    cancelled), recursively through the descendants ended here. Each gets
    ``ParentFailed``/``ParentCancelled`` and a message naming the task among ``roots``
    whose end reached it. Returns their ids, sorted."""
    if not roots:
        return []
    if state is TaskState.FAILED:
        name, verb, date_column = PARENT_FAILED, "failed", "date_failed"
    else:
        name, verb, date_column = PARENT_CANCELLED, "was cancelled", "date_cancelled"
    rows = await conn.execute_fetchall(
        f"""
        WITH RECURSIVE doomed(id, root) AS (
            SELECT d.task_id, d.parent_id FROM queued_task_dependencies AS d
            JOIN queued_tasks AS t ON t.id = d.task_id
            WHERE d.parent_id IN (SELECT value FROM json_each(:roots)) AND t.state = 'waiting'
            UNION
            SELECT d.task_id, doomed.root FROM doomed
            JOIN queued_task_dependencies AS d ON d.parent_id = doomed.id
            JOIN queued_tasks AS t ON t.id = d.task_id
            WHERE t.state = 'waiting'
        ),
        picked AS (SELECT id, MIN(root) AS root FROM doomed GROUP BY id)
        UPDATE queued_tasks SET
            state = :state, exception_name = :name, exception_info = NULL,
            exception_message = 'parent task ' || picked.root || ' ' || :verb,
            {date_column} = :now, date_ended = :now
        FROM picked
        WHERE queued_tasks.id = picked.id AND queued_tasks.state = 'waiting'
        RETURNING queued_tasks.id
        """,
        {"roots": json.dumps(roots), "state": state.value, "name": name, "verb": verb, "now": now},
    )
    return sorted(row[0] for row in rows)


async def delete_tasks(conn: Any, where: str, params: Sequence[Any]) -> int:
    """Delete the tasks matching ``where`` with their logs and edges; unlink children.
    Explicit rather than by foreign keys, so it holds on a connection that has them off."""
    ids = [row[0] for row in await conn.execute_fetchall(
        f"SELECT id FROM queued_tasks WHERE {where}", params
    )]  # fmt: skip
    if not ids:
        return 0
    doomed = (json.dumps(ids),)
    await conn.execute_fetchall(
        f"DELETE FROM queued_task_logs WHERE queued_task_id IN ({IDS})", doomed
    )
    await conn.execute_fetchall(
        f"DELETE FROM queued_task_dependencies WHERE task_id IN ({IDS}) OR parent_id IN ({IDS})",
        doomed * 2,
    )
    await conn.execute_fetchall(
        f"UPDATE queued_tasks SET parent_task = NULL WHERE parent_task IN ({IDS})", doomed
    )
    await conn.execute_fetchall(f"DELETE FROM queued_tasks WHERE id IN ({IDS})", doomed)
    return len(ids)
