"""cancel_tasks, stop_tasks and retry_tasks: admin writes, their cascade and its undoing."""

from __future__ import annotations

from datetime import timedelta

from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, Outcome, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import (
    assert_recent,
    create,
    finish,
    get,
    new,
    run,
    start,
    states,
    utcnow,
)


async def one_of_each(repository: TaskRepository) -> dict[TaskState, int]:
    """A task in each of done, failed, doing, enqueued and waiting (waiting on doing)."""
    done, failed, doing, enqueued = await repository.create_tasks(
        [new("done"), new("failed"), new("doing"), new("enqueued", channel="later")]
    )
    waiting = await create(repository, name="waiting", parent_ids=(doing,), channel="later")
    claimed = await repository.claim_tasks("s", 10, channels=["default"])
    assert sorted(t.id for t in claimed) == [done, failed, doing]
    await repository.complete_tasks(
        "s", [Outcome(done, TaskState.DONE), Outcome(failed, TaskState.FAILED, error_name="E")]
    )
    return {
        TaskState.DONE: done,
        TaskState.FAILED: failed,
        TaskState.DOING: doing,
        TaskState.ENQUEUED: enqueued,
        TaskState.WAITING: waiting,
    }


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_applies_to_waiting_enqueued_and_doing(repository: TaskRepository) -> None:
    ids = await one_of_each(repository)
    changed = await repository.cancel_tasks([*ids.values(), 999999])
    expected = [ids[TaskState.DOING], ids[TaskState.ENQUEUED], ids[TaskState.WAITING]]
    assert sorted(changed) == sorted(expected)
    for task in await repository.get_tasks(expected):
        assert task.state is TaskState.CANCELLED
        assert_recent(task.date_cancelled)
        assert task.date_ended == task.date_cancelled
    assert await states(repository, ids[TaskState.DONE], ids[TaskState.FAILED]) == [
        TaskState.DONE,
        TaskState.FAILED,
    ]


async def test_cancel_cascades_to_waiting_descendants(repository: TaskRepository) -> None:
    a, b, c, d = await repository.create_tasks(
        [
            new("a"),
            new("b", batch_parents=(0,)),
            new("c", batch_parents=(1,)),
            new("d", batch_parents=(0,)),
        ]
    )
    await repository.stop_tasks([d])  # not waiting any more: left alone by the cascade
    changed = await repository.cancel_tasks([a])
    assert sorted(changed) == sorted([a, b, c])
    tasks = await repository.get_tasks([a, b, c, d])
    assert [t.state for t in tasks] == [TaskState.CANCELLED] * 3 + [TaskState.STOPPED]
    assert tasks[0].exception_name is None
    assert tasks[1].exception_name == tasks[2].exception_name == PARENT_CANCELLED


async def test_cancel_of_a_doing_task_cascades_too(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await start(repository, parent)
    assert sorted(await repository.cancel_tasks([parent])) == sorted([parent, child])
    assert await states(repository, parent, child) == [TaskState.CANCELLED] * 2
    assert await finish(repository, parent, result="late") == []


async def test_cancel_twice_changes_nothing_the_second_time(repository: TaskRepository) -> None:
    task_id = await create(repository)
    assert await repository.cancel_tasks([task_id, task_id]) == [task_id]
    assert await repository.cancel_tasks([task_id]) == []


# -- stop --------------------------------------------------------------------------------


async def test_stop_applies_to_waiting_enqueued_and_doing(repository: TaskRepository) -> None:
    ids = await one_of_each(repository)
    changed = await repository.stop_tasks(list(ids.values()))
    expected = [ids[TaskState.DOING], ids[TaskState.ENQUEUED], ids[TaskState.WAITING]]
    assert sorted(changed) == sorted(expected)
    for task in await repository.get_tasks(expected):
        assert task.state is TaskState.STOPPED
        assert_recent(task.date_stopped)
        assert task.date_ended == task.date_stopped


async def test_stop_leaves_descendants_waiting(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks(
        [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
    )
    await start(repository, a)
    assert await repository.stop_tasks([a]) == [a]
    assert await states(repository, a, b, c) == [
        TaskState.STOPPED,
        TaskState.WAITING,
        TaskState.WAITING,
    ]
    assert await finish(repository, a) == []


# -- retry -------------------------------------------------------------------------------


async def test_retry_reenqueues_a_failed_task_in_place(repository: TaskRepository) -> None:
    task_id = await create(repository, max_retries=2)
    await start(repository, task_id)
    await finish(repository, task_id, TaskState.ENQUEUED, error_name="E")
    await start(repository, task_id)
    await finish(repository, task_id, TaskState.FAILED, error_name="E", error_message="boom")
    assert (await get(repository, task_id)).retry_count == 1

    assert await repository.retry_tasks([task_id]) == [task_id]
    task = await get(repository, task_id)
    assert task.state is TaskState.ENQUEUED
    assert task.retry_count == 0
    assert task.exception_name is None and task.exception_message is None
    assert task.exception_info is None
    assert task.date_failed is None and task.date_ended is None
    assert [t.id for t in await repository.claim_tasks("s", 5)] == [task_id]


async def test_retry_of_cancelled_and_stopped_tasks(repository: TaskRepository) -> None:
    cancelled, stopped = await repository.create_tasks([new("c"), new("s")])
    await repository.cancel_tasks([cancelled])
    await repository.stop_tasks([stopped])
    assert sorted(await repository.retry_tasks([cancelled, stopped])) == [cancelled, stopped]
    for task in await repository.get_tasks([cancelled, stopped]):
        assert task.state is TaskState.ENQUEUED
        assert task.date_cancelled is None and task.date_stopped is None
        assert task.date_ended is None


async def test_retry_ignores_tasks_that_did_not_end_badly(repository: TaskRepository) -> None:
    ids = await one_of_each(repository)
    others = [ids[s] for s in (TaskState.DONE, TaskState.DOING, TaskState.ENQUEUED)]
    assert await repository.retry_tasks([*others, ids[TaskState.WAITING], 999999]) == []
    assert await states(repository, *others) == [
        TaskState.DONE,
        TaskState.DOING,
        TaskState.ENQUEUED,
    ]


async def test_retry_restores_a_failed_chain(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks(
        [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
    )
    await run(repository, a, TaskState.FAILED, error_name="E")
    assert await states(repository, b, c) == [TaskState.FAILED] * 2

    assert sorted(await repository.retry_tasks([a])) == [a, b, c]
    tasks = await repository.get_tasks([a, b, c])
    assert [t.state for t in tasks] == [TaskState.ENQUEUED, TaskState.WAITING, TaskState.WAITING]
    assert [t.pending_parents for t in tasks] == [0, 1, 1]
    for task in tasks[1:]:
        assert task.exception_name is None and task.exception_message is None
        assert task.date_failed is None and task.date_ended is None

    # The chain runs to the end once its head succeeds.
    await run(repository, a)
    await run(repository, b)
    await run(repository, c)
    assert await states(repository, a, b, c) == [TaskState.DONE] * 3


async def test_retry_restores_a_diamond(repository: TaskRepository) -> None:
    a, b, c, d = await repository.create_tasks(
        [
            new("a"),
            new("b", batch_parents=(0,)),
            new("c", batch_parents=(0,)),
            new("d", batch_parents=(1, 2)),
        ]
    )
    await run(repository, a, TaskState.FAILED, error_name="E")
    assert sorted(await repository.retry_tasks([a])) == [a, b, c, d]
    tasks = {t.id: t for t in await repository.get_tasks([b, c, d])}
    assert tasks[d].state is TaskState.WAITING
    assert tasks[d].pending_parents == 2
    await run(repository, a)
    await start(repository, b, c)
    await finish(repository, b)
    assert (await get(repository, d)).state is TaskState.WAITING
    await finish(repository, c)
    assert (await get(repository, d)).state is TaskState.ENQUEUED


async def test_retry_restores_a_cancelled_cascade(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await repository.cancel_tasks([parent])
    assert sorted(await repository.retry_tasks([parent])) == [parent, child]
    child_task = await get(repository, child)
    assert (child_task.state, child_task.pending_parents) == (TaskState.WAITING, 1)
    assert child_task.exception_name is None


async def test_retry_does_not_restore_tasks_ended_for_other_reasons(
    repository: TaskRepository,
) -> None:
    parent = await create(repository)
    cancelled_by_hand, failed_child = await repository.create_tasks(
        [new("by-hand", parent_ids=(parent,)), new("child", parent_ids=(parent,))]
    )
    await repository.cancel_tasks([cancelled_by_hand])
    await run(repository, parent, TaskState.FAILED, error_name="E")
    assert sorted(await repository.retry_tasks([parent])) == [parent, failed_child]
    assert await states(repository, cancelled_by_hand, failed_child) == [
        TaskState.CANCELLED,
        TaskState.WAITING,
    ]


async def test_retried_task_with_a_parent_not_done_waits(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await repository.stop_tasks([child])
    assert await repository.retry_tasks([child]) == [child]
    task = await get(repository, child)
    assert (task.state, task.pending_parents) == (TaskState.WAITING, 1)
    await run(repository, parent)
    assert (await get(repository, child)).state is TaskState.ENQUEUED


async def test_retried_task_whose_parents_are_done_is_enqueued(
    repository: TaskRepository,
) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await repository.stop_tasks([child])
    await run(repository, parent)
    assert await repository.retry_tasks([child]) == [child]
    task = await get(repository, child)
    assert (task.state, task.pending_parents) == (TaskState.ENQUEUED, 0)


async def test_retried_descendant_of_a_failed_task_waits(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await run(repository, parent, TaskState.FAILED, error_name="E")
    assert await repository.retry_tasks([child]) == [child]
    task = await get(repository, child)
    assert (task.state, task.pending_parents) == (TaskState.WAITING, 1)
    assert (await get(repository, parent)).state is TaskState.FAILED


async def test_retried_task_is_due_at_once(repository: TaskRepository) -> None:
    task_id = await create(repository, date_scheduled=utcnow() + timedelta(hours=2))
    await repository.stop_tasks([task_id])
    assert await repository.retry_tasks([task_id]) == [task_id]
    assert [t.id for t in await repository.claim_tasks("s", 5)] == [task_id]


async def test_failed_by_cascade_then_retried_parent_has_parent_failed(
    repository: TaskRepository,
) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await run(repository, parent, TaskState.FAILED, error_name="E")
    task = await get(repository, child)
    assert task.exception_name == PARENT_FAILED
    await repository.retry_tasks([parent])
    await run(repository, parent, TaskState.FAILED, error_name="E")
    assert (await get(repository, child)).state is TaskState.FAILED
