"""Creation of tasks on SQLite: a batch checked and encoded, then inserted with its edges.

``create_tasks`` is the body of ``SqliteRepository.create_tasks``. ``encode_new_tasks``
raises (``InvalidTaskError``, ``ArgumentNotSerializable``) before anything is written;
``insert_tasks`` runs inside the caller's write transaction and raises ``UnknownParent`` for
a parent id that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from taskqueue_core.exceptions import UnknownParent
from taskqueue_core.limits import check_new_task, json_text
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, NewTask, TaskState
from taskqueue_core.tortoise.sqlite.codec import ts, utc_now
from taskqueue_core.tortoise.sqlite.statements import IDS

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["create_tasks", "encode_new_tasks", "insert_tasks"]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


class _Plan:
    """What ``insert_tasks`` did: ids in order, channels made ready, tasks born ended."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.channels: tuple[str, ...] = ()
        self.ended: list[int] = []


async def create_tasks(
    repo: SqliteRepository, tasks: Sequence[NewTask], transaction: Any
) -> list[int]:
    """Check, then insert ``tasks`` in one write (or in the caller's ``transaction``), then
    send the events; see ``SqliteRepository.create_tasks``."""
    tasks = list(tasks)
    if not tasks:
        return []
    rows = encode_new_tasks(tasks)
    existing = sorted({p for task in tasks for p in task.parent_ids})
    cm = repo._joining(transaction, "create") if transaction is not None else None
    async with cm if cm is not None else repo._writing("create") as conn:
        plan = await insert_tasks(conn, tasks, rows, existing)
    repo._emit_changes(plan.channels, (), plan.ended)
    return plan.ids


def encode_new_tasks(tasks: list[NewTask]) -> list[dict[str, Any]]:
    """Check every task and serialize its fields; raises before anything is written."""
    encoded = []
    for position, task in enumerate(tasks):
        what = f"task {position} ({task.name!r})"
        check_new_task(task, position, what)
        ref = task.function
        encoded.append(
            {
                "name": task.name,
                "module_name": ref.module_name,
                "function_name": ref.function_name,
                "serialized_function": ref.serialized_function,
                "signature": ref.signature,
                "args": json_text(list(task.args), f"{what}: args"),
                "kwargs": json_text(task.kwargs, f"{what}: kwargs"),
                "context": json_text(task.context, f"{what}: context"),
                "channel": task.channel,
                "priority": task.priority,
                "max_retries": task.max_retries,
                "timeout": task.timeout,
                "date_scheduled": None if task.date_scheduled is None else ts(task.date_scheduled),
            }
        )
    return encoded


async def insert_tasks(
    conn: Any, tasks: list[NewTask], rows: list[dict[str, Any]], existing: list[int]
) -> _Plan:
    """Insert the checked ``rows`` of ``tasks`` and their edges (4 statements in all)."""
    states: dict[int, str] = {}
    if existing:
        found = await conn.execute_fetchall(
            f"SELECT id, state FROM queued_tasks WHERE id IN ({IDS})", (json.dumps(existing),)
        )
        states = {row[0]: row[1] for row in found}
        for task in tasks:
            for parent in task.parent_ids:
                if parent not in states:
                    raise UnknownParent(f"parent task {parent} does not exist")
    # Ids are assigned here, under the write lock, so that the edges of parents created in
    # this same batch can be written with one executemany. AUTOINCREMENT never reuses an
    # id, so start above both the sequence and the current maximum.
    base_rows = await conn.execute_fetchall(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'queued_tasks'), 0),"
        " COALESCE((SELECT MAX(id) FROM queued_tasks), 0))"
    )
    base = int(base_rows[0][0])
    now = ts(utc_now())
    plan = _Plan()
    ready: list[str] = []
    edges: list[tuple[int, int]] = []
    for position, (task, row) in enumerate(zip(tasks, rows, strict=True)):
        task_id = base + position + 1
        parents = list(
            dict.fromkeys([*task.parent_ids, *(base + p + 1 for p in task.batch_parents)])
        )
        row.update(
            id=task_id,
            parent_task=parents[0] if parents else None,
            pending_parents=sum(1 for p in parents if states[p] != TaskState.DONE),
            date_enqueued=now,
            date_scheduled=row["date_scheduled"] or now,
            exception_name=None,
            exception_message=None,
            date_failed=None,
            date_cancelled=None,
            date_ended=None,
        )
        # Born ended if a parent already failed or was cancelled, as if it had just ended.
        # As if that parent had just ended; a failure wins over a cancellation.
        ended_parent = next((p for p in parents if states[p] == TaskState.FAILED), None)
        if ended_parent is None:
            ended_parent = next((p for p in parents if states[p] == TaskState.CANCELLED), None)
        if ended_parent is not None:
            failed = states[ended_parent] == TaskState.FAILED
            state = TaskState.FAILED if failed else TaskState.CANCELLED
            row.update(
                exception_name=PARENT_FAILED if failed else PARENT_CANCELLED,
                exception_message=(
                    f"parent task {ended_parent} {'failed' if failed else 'was cancelled'}"
                ),
                date_ended=now,
                **{"date_failed" if failed else "date_cancelled": now},
            )
            plan.ended.append(task_id)
        elif row["pending_parents"]:
            state = TaskState.WAITING
        else:
            state = TaskState.ENQUEUED
            ready.append(task.channel)
        row["state"] = state.value
        states[task_id] = state.value
        edges.extend((task_id, parent) for parent in parents)
        plan.ids.append(task_id)
    await conn.executemany(
        """
        INSERT INTO queued_tasks (id, name, module_name, function_name, serialized_function,
            signature, state, args, kwargs, context, result, parent_task, pending_parents,
            channel, priority, retry_count, max_retries, timeout, date_enqueued,
            date_scheduled, date_failed, date_cancelled, date_ended, exception_name,
            exception_message)
        VALUES (:id, :name, :module_name, :function_name, :serialized_function, :signature,
            :state, :args, :kwargs, :context, NULL, :parent_task, :pending_parents, :channel,
            :priority, 0, :max_retries, :timeout, :date_enqueued, :date_scheduled,
            :date_failed, :date_cancelled, :date_ended, :exception_name, :exception_message)
        """,
        rows,
    )
    if edges:
        await conn.executemany(
            "INSERT INTO queued_task_dependencies (task_id, parent_id) VALUES (?, ?)", edges
        )
    plan.channels = _unique(ready)
    return plan
