"""Writes racing each other: whatever the interleaving, no change is lost or applied twice."""

from __future__ import annotations

import asyncio

from taskqueue_core.models import Outcome, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import SERVER, create, get, new, start


async def test_parents_completing_together_release_the_child_once(
    repository: TaskRepository,
) -> None:
    parents = await repository.create_tasks([new(f"p{i}") for i in range(6)])
    child = await create(repository, parent_ids=tuple(parents))
    await start(repository, *parents)
    results = await asyncio.gather(
        *(repository.complete_tasks(SERVER, [Outcome(p, TaskState.DONE)]) for p in parents)
    )
    assert sorted(i for r in results for i in r) == parents
    task = await get(repository, child)
    assert (task.state, task.pending_parents) == (TaskState.ENQUEUED, 0)
    assert [t.id for t in await repository.claim_tasks("s", 10)] == [child]


async def test_cancel_racing_an_outcome_has_one_winner(repository: TaskRepository) -> None:
    ids = await repository.create_tasks([new(str(i)) for i in range(8)])
    await start(repository, *ids)
    results = await asyncio.gather(
        *(
            coro
            for task_id in ids
            for coro in (
                repository.cancel_tasks([task_id]),
                repository.complete_tasks(SERVER, [Outcome(task_id, TaskState.DONE, result=1)]),
            )
        )
    )
    tasks = {t.id: t for t in await repository.get_tasks(ids)}
    for n, task_id in enumerate(ids):
        cancelled, completed = results[2 * n], results[2 * n + 1]
        assert (cancelled, completed) in (([task_id], []), ([], [task_id]))
        expected = TaskState.CANCELLED if cancelled else TaskState.DONE
        assert tasks[task_id].state is expected


async def test_child_created_while_its_parent_completes_is_not_stranded(
    repository: TaskRepository,
) -> None:
    parents = await repository.create_tasks([new(f"p{i}") for i in range(6)])
    await start(repository, *parents)
    results = await asyncio.gather(
        *(
            coro
            for parent in parents
            for coro in (
                repository.create_tasks([new("child", parent_ids=(parent,))]),
                repository.complete_tasks(SERVER, [Outcome(parent, TaskState.DONE)]),
            )
        )
    )
    children = [results[2 * n][0] for n in range(len(parents))]
    for task in await repository.get_tasks(children):
        # Either created after the parent was done, or released by its completion.
        assert (task.state, task.pending_parents) == (TaskState.ENQUEUED, 0), task
