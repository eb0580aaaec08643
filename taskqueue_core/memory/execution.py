"""Execution: what workers write while running tasks.

Claims (and the next due date to wake up for), outcomes (with the release of the children
of tasks done and the cascade from tasks failed or cancelled), contexts and log rows.

Each public function is the body of the ``InMemoryRepository`` method of the same name,
whose docstring states the contract; like every verb, none of them awaits.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from taskqueue_core.exceptions import InvalidTransition
from taskqueue_core.limits import LOG_TYPE_MAX, NAME_MAX, json_text, log_text, utc
from taskqueue_core.memory.rows import Changes, LogRow, Row
from taskqueue_core.memory.store import ReadyEntry, Store
from taskqueue_core.models import NewLogRecord, Outcome, Task, TaskState

_OUTCOME_STATES = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.ENQUEUED, TaskState.CANCELLED, TaskState.STOPPED}
)


def claim_tasks(
    store: Store, server_name: str, limit: int, channels: Sequence[str] | None = None
) -> list[Task]:
    if limit <= 0:
        return []
    now = store.now()
    store.promote_due(now)
    names = list(store.ready) if channels is None else _unique_str(channels)
    heaps = [store.ready[name] for name in names if name in store.ready]
    claimed: list[Task] = []
    while len(claimed) < limit:
        best: list[ReadyEntry] | None = None
        for heap in heaps:
            store.clean_top(heap, now)
            if heap and (best is None or heap[0] < best[0]):
                best = heap
        if best is None:
            break
        entry = heapq.heappop(best)
        row = store.tasks[entry[2]]
        store.move(row, TaskState.DOING)
        row.date_started = now
        row.claimed_by = server_name
        claimed.append(row.snapshot())
    return claimed


def next_due(store: Store, channels: Sequence[str] | None = None) -> datetime | None:
    if channels is not None and not channels:
        return None
    store.promote_due(store.now())
    heap = store.scheduled  # what is left is scheduled after now
    if channels is None:
        # The heap's top is the answer once the entries of tasks that changed are gone.
        while heap and store.valid(heap[0][1], heap[0][2]) is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None
    wanted = set(channels)
    best: datetime | None = None
    for scheduled, task_id, generation in heap:
        if best is not None and scheduled >= best:
            continue
        row = store.valid(task_id, generation)
        if row is not None and row.channel in wanted:
            best = scheduled
    return best


def complete_tasks(store: Store, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
    encoded: list[tuple[Outcome, str, str | None]] = []
    for outcome in outcomes:
        if outcome.state not in _OUTCOME_STATES:
            raise InvalidTransition(
                f"task {outcome.task_id}: an outcome cannot be {outcome.state.value!r}"
            )
        result = json_text(outcome.result, f"result of task {outcome.task_id}")
        context = (
            None
            if outcome.context is None
            else json_text(outcome.context, f"context of task {outcome.task_id}")
        )
        encoded.append((outcome, result, context))

    now = store.now()
    changes = Changes.empty()
    changed: list[int] = []
    for outcome, result, context in encoded:
        row = store.tasks.get(outcome.task_id)
        if row is None or row.state is not TaskState.DOING or row.claimed_by != server_name:
            continue  # cancelled, stopped or rescued meanwhile: the late outcome is stale
        changed.append(row.id)
        if context is not None:
            row.context = context
        if outcome.execution_time is not None:
            row.execution_time = outcome.execution_time
        state = outcome.state
        if state is TaskState.DONE:
            row.result = result
            row.set_error(None, None, None)
            store.end(row, TaskState.DONE, now)
            changes.ended.append(row.id)
            _release_children(store, row, now, changes)
        elif state is TaskState.ENQUEUED:
            if outcome.error_name is not None:
                row.set_error(outcome.error_name, outcome.error_message, outcome.error_info)
            if outcome.count_attempt:
                row.retry_count += 1
            row.claimed_by = None
            retry_at = now if outcome.retry_at is None else utc(outcome.retry_at)
            row.date_scheduled = retry_at
            store.enqueue(row, now)
            changes.channels.add(row.channel)
        else:
            if state is TaskState.FAILED:
                row.set_error(outcome.error_name, outcome.error_message, outcome.error_info)
            store.end(row, state, now)
            changes.ended.append(row.id)
            store.cascade_end(row, state, now, changes)
    store.emit(changes)
    return changed


def update_contexts(store: Store, contexts: Mapping[int, dict[str, Any]]) -> None:
    encoded = {
        task_id: json_text(context, f"context of task {task_id}")
        for task_id, context in contexts.items()
    }
    for task_id, text in encoded.items():
        row = store.tasks.get(task_id)
        if row is not None:
            row.context = text


def append_logs(store: Store, records: Sequence[NewLogRecord]) -> None:
    now = store.now()
    encoded = [
        (
            record,
            None if record.info is None else json_text(record.info, "log info"),
        )
        for record in records
    ]
    for record, info in encoded:
        if record.task_id not in store.tasks:
            continue
        log = LogRow(
            id=store.next_log_id,
            type=log_text(record.type, LOG_TYPE_MAX),
            name=log_text(record.name, NAME_MAX),
            message=log_text(record.message),
            info=info,
            date_created=now if record.date_created is None else utc(record.date_created),
        )
        store.next_log_id += 1
        store.logs.setdefault(record.task_id, []).append(log)


def _release_children(store: Store, parent: Row, now: datetime, changes: Changes) -> None:
    """``parent`` is done: waiting children count one pending parent less."""
    for child_id in store.children.get(parent.id, ()):
        child = store.tasks.get(child_id)
        if child is None or child.state is not TaskState.WAITING:
            continue
        child.pending_parents = max(child.pending_parents - 1, 0)
        if child.pending_parents == 0:
            store.enqueue(child, now)
            changes.channels.add(child.channel)


def _unique_str(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
