"""Creation: ``create_tasks`` checks a whole batch, then writes its tasks and edges.

Nothing is written unless every task of the batch is valid. ``create_tasks`` is the body of
``InMemoryRepository.create_tasks``, whose docstring states the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from taskqueue_core.exceptions import UnknownParent
from taskqueue_core.limits import check_new_task, json_text, utc
from taskqueue_core.memory.rows import Changes, Row
from taskqueue_core.memory.store import Store
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, NewTask, TaskState


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A ``NewTask`` checked and encoded, ready to be written."""

    new: NewTask
    parents: list[int]
    batch_parents: list[int]
    args: str
    kwargs: str
    context: str
    scheduled: datetime


def create_tasks(store: Store, tasks: Sequence[NewTask]) -> list[int]:
    now = store.now()
    prepared: list[_Prepared] = []
    for position, new in enumerate(tasks):
        what = f"task {position} ({new.name!r})"
        parent_ids, batch_parents = check_new_task(new, position, what)
        for parent_id in parent_ids:
            if parent_id not in store.tasks:
                raise UnknownParent(f"{what}: parent task {parent_id} does not exist")
        prepared.append(
            _Prepared(
                new=new,
                parents=parent_ids,
                batch_parents=batch_parents,
                args=json_text(list(new.args), f"{what}: args"),
                kwargs=json_text(new.kwargs, f"{what}: kwargs"),
                context=json_text(new.context, f"{what}: context"),
                scheduled=now if new.date_scheduled is None else utc(new.date_scheduled),
            )
        )

    # Everything is valid: write. Ids are consecutive, so a batch position maps to
    # first_id + position.
    first_id = store.next_task_id
    store.next_task_id += len(prepared)
    changes = Changes.empty()
    ids: list[int] = []
    for position, item in enumerate(prepared):
        new = item.new
        task_id = first_id + position
        parents = item.parents + [first_id + index for index in item.batch_parents]
        rows = [store.tasks[parent_id] for parent_id in parents]
        row = Row(
            id=task_id,
            name=new.name,
            function=new.function,
            state=TaskState.WAITING,
            args=item.args,
            kwargs=item.kwargs,
            context=item.context,
            result=None,
            parent_task=parents[0] if parents else None,
            pending_parents=sum(1 for parent in rows if parent.state is not TaskState.DONE),
            channel=new.channel,
            priority=new.priority,
            retry_count=0,
            max_retries=new.max_retries,
            timeout=new.timeout,
            date_enqueued=now,
            date_scheduled=item.scheduled,
        )
        store.tasks[task_id] = row
        store.by_state[TaskState.WAITING].add(task_id)
        store.parents[task_id] = parents
        for parent_id in parents:
            store.children.setdefault(parent_id, []).append(task_id)
        failed = next((p for p in rows if p.state is TaskState.FAILED), None)
        cancelled = next((p for p in rows if p.state is TaskState.CANCELLED), None)
        # As if the parent had just ended: a failure wins over a cancellation.
        if failed is not None:
            store.end(row, TaskState.FAILED, now)
            row.set_error(PARENT_FAILED, f"parent task {failed.id} failed", None)
            changes.ended.append(task_id)
        elif cancelled is not None:
            store.end(row, TaskState.CANCELLED, now)
            row.set_error(PARENT_CANCELLED, f"parent task {cancelled.id} was cancelled", None)
            changes.ended.append(task_id)
        elif row.pending_parents == 0:
            store.enqueue(row, now)
            changes.channels.add(row.channel)
        ids.append(task_id)
    store.emit(changes)
    return ids
