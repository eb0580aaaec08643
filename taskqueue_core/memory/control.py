"""Control: the admin writes (cancel, stop, retry, delete pending tasks).

``end_active`` is the body of both ``cancel_tasks`` and ``stop_tasks``. Every other public
function is the body of the ``InMemoryRepository`` method of the same name, whose docstring
states the contract; like every verb, none of them awaits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from taskqueue_core.memory.rows import Changes, Row
from taskqueue_core.memory.store import Store
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, TaskState

_ACTIVE = frozenset({TaskState.WAITING, TaskState.ENQUEUED, TaskState.DOING})
_RETRYABLE = frozenset({TaskState.FAILED, TaskState.CANCELLED, TaskState.STOPPED})


def end_active(store: Store, task_ids: Sequence[int], state: TaskState) -> list[int]:
    """End as ``state`` (cancelled or stopped) the waiting, enqueued or doing tasks among
    ``task_ids``, with what that cascades to; return the ids changed, ascending."""
    now = store.now()
    changes = Changes.empty()
    for task_id in task_ids:
        row = store.tasks.get(task_id)
        if row is None or row.state not in _ACTIVE:
            continue
        if row.state is TaskState.DOING:
            changes.control.append(task_id)
        store.end(row, state, now)
        changes.ended.append(task_id)
        store.cascade_end(row, state, now, changes)
    store.emit(changes)
    store.maybe_compact()
    return sorted(changes.ended)


def retry_tasks(store: Store, task_ids: Sequence[int]) -> list[int]:
    now = store.now()
    changes = Changes.empty()
    changed: list[int] = []
    for task_id in task_ids:
        row = store.tasks.get(task_id)
        if row is None or row.state not in _RETRYABLE:
            continue
        row.retry_count = 0
        row.date_scheduled = now
        _restore(store, row, now, changes)
        changed.append(row.id)
        stack = list(store.children.get(row.id, ()))
        while stack:
            child = store.tasks.get(stack.pop())
            if child is None or not _ended_by_parent(child):
                continue
            _restore(store, child, now, changes)
            changed.append(child.id)
            stack.extend(store.children.get(child.id, ()))
    store.emit(changes)
    return sorted(changed)


def delete_pending(store: Store, channel: str | None = None) -> int:
    doomed = {
        task_id
        for state in (TaskState.WAITING, TaskState.ENQUEUED)
        for task_id in store.by_state[state]
        if channel is None or store.tasks[task_id].channel == channel
    }
    stack = list(doomed)
    while stack:
        for child_id in store.children.get(stack.pop(), ()):
            child = store.tasks.get(child_id)
            if child is not None and child.state is TaskState.WAITING and child_id not in doomed:
                doomed.add(child_id)
                stack.append(child_id)
    for task_id in doomed:
        store.delete(task_id)
    store.maybe_compact()
    return len(doomed)


def _restore(store: Store, row: Row, now: datetime, changes: Changes) -> None:
    """Put an ended task back: enqueued when all its parents are done, else waiting."""
    row.clear_end()
    row.claimed_by = None
    pending = sum(
        1
        for parent_id in store.parents.get(row.id, ())
        if (parent := store.tasks.get(parent_id)) is not None and parent.state is not TaskState.DONE
    )
    if pending:
        store.move(row, TaskState.WAITING)
        row.pending_parents = pending
    else:
        store.enqueue(row, now)
        changes.channels.add(row.channel)


def _ended_by_parent(row: Row) -> bool:
    """True when ``row`` ended only because an ancestor failed or was cancelled."""
    return (row.state is TaskState.FAILED and row.exception_name == PARENT_FAILED) or (
        row.state is TaskState.CANCELLED and row.exception_name == PARENT_CANCELLED
    )
