"""TaskRef.wait: woken by repository events, polling only as a fallback; every ending."""

from __future__ import annotations

import asyncio

import pytest

from taskqueue_core import (
    Outcome,
    QueueClosed,
    TaskFailed,
    TaskQueue,
    TaskState,
    TaskTimeout,
    UnknownParent,
    UnknownTask,
)
from tests.core.conftest import CountingRepository, parked
from tests.core.tasks import add, finish


async def test_wait_is_woken_by_the_ended_event(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    ref = queue.add_task(add, 2, 3)
    waiter = await parked(counting, ref)
    task_id = await ref.get_task_id()
    await finish(queue.repository, task_id, result=5)
    assert await asyncio.wait_for(waiter, 10) == 5
    # polling every hour could not have done it: one read to park, one after the event
    assert counting.get_tasks_calls == [[task_id], [task_id]]
    assert queue._end_watcher().polls == 0


async def test_many_waits_share_one_subscription(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    refs = [queue.add_task(add, i, 0) for i in range(5)]
    ids = [await asyncio.wait_for(r.get_task_id(), 30) for r in refs]
    waiters = [asyncio.create_task(r.wait(timeout=30)) for r in refs for _ in range(2)]
    claimed = await queue.repository.claim_tasks("tests-core", 100)
    assert sorted(t.id for t in claimed) == sorted(ids)
    await queue.repository.complete_tasks(
        "tests-core", [Outcome(i, TaskState.DONE, result=i) for i in ids]
    )
    results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert results == [i for i in ids for _ in range(2)]
    assert counting.subscribe_calls == 1
    assert queue._end_watcher().waiting == frozenset()


async def test_failed_task_raises_task_failed_with_the_remote_error(queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1)
    task_id = await asyncio.wait_for(ref.get_task_id(), 30)
    await finish(
        queue.repository,
        task_id,
        TaskState.FAILED,
        error_name="ValueError",
        error_message="bad input",
        error_info="Traceback (most recent call last):\n  ...\nValueError: bad input",
    )
    with pytest.raises(TaskFailed, match=f"task {task_id} failed: ValueError: bad input") as info:
        await ref.wait(timeout=10)
    assert info.value.task_id == task_id
    assert info.value.exception_name == "ValueError"
    assert info.value.exception_message == "bad input"
    assert info.value.exception_info is not None
    assert info.value.exception_info.endswith("ValueError: bad input")


async def test_cancel_without_await_then_wait_raises_cancelled(queue: TaskQueue) -> None:
    parent = queue.add_task(add, 1, 1)
    child = queue.add_task(add, 2, 2, parent=parent)
    parent.cancel()  # not awaited: the write happens anyway
    with pytest.raises(asyncio.CancelledError, match=r"task \d+ was cancelled"):
        await asyncio.wait_for(parent.wait(timeout=10), 20)
    with pytest.raises(asyncio.CancelledError, match="was cancelled"):
        await child.wait(timeout=10)
    assert await child.get_state() is TaskState.CANCELLED


async def test_awaited_cancel_returns_the_ids_including_descendants(queue: TaskQueue) -> None:
    parent = queue.add_task(add, 1, 1)
    child = queue.add_task(add, 2, 2, parent=parent)
    ids = await asyncio.wait_for(parent.cancel(), 20)
    assert sorted(ids) == sorted([await parent.get_task_id(), await child.get_task_id()])
    assert await parent.cancel() == []  # already ended


async def test_stop_then_retry(queue: TaskQueue) -> None:
    parent = queue.add_task(add, 1, 1)
    child = queue.add_task(add, 2, 2, parent=parent)
    await asyncio.wait_for(parent.stop(), 20)
    with pytest.raises(asyncio.CancelledError, match=r"task \d+ was stopped"):
        await parent.wait(timeout=10)
    assert await child.get_state() is TaskState.WAITING
    pid = await parent.get_task_id()
    assert await queue.retry([pid]) == [pid]
    assert await parent.get_state() is TaskState.ENQUEUED


async def test_wait_timeout(queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1)
    await asyncio.wait_for(ref.get_task_id(), 30)  # the message names the id once it is known
    with pytest.raises(TaskTimeout, match=r"task \d+ did not end within 0.05 s"):
        await ref.wait(timeout=0.05)
    assert await ref.get_state() is TaskState.ENQUEUED  # the task itself is left alone
    assert queue._end_watcher().waiting == frozenset()


async def test_wait_for_an_ended_task_returns_at_once(queue: TaskQueue) -> None:
    ref = await queue.enqueue(add, 1, 1)
    await finish(queue.repository, await ref.get_task_id(), result={"sum": 2})
    assert await queue.wait_for(await ref.get_task_id(), timeout=10) == {"sum": 2}


async def test_wait_for_unknown_task(queue: TaskQueue) -> None:
    with pytest.raises(UnknownTask, match="no task has id 987654"):
        await queue.wait_for(987654, timeout=10)


async def test_wait_raises_the_creation_error(queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1, parent=987654)
    with pytest.raises(UnknownParent, match="987654"):
        await ref.wait(timeout=10)


async def test_close_ends_pending_waits(counting: CountingRepository, queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1)
    waiter = await parked(counting, ref)
    await asyncio.wait_for(queue.close(), 30)
    with pytest.raises(QueueClosed, match="closed while waiting"):
        await asyncio.wait_for(waiter, 10)


@pytest.mark.parametrize("events", ["down", "refused"])
async def test_without_events_wait_polls_only_the_waited_ids(
    queue: TaskQueue, counting: CountingRepository, events: str
) -> None:
    counting.events = events
    queue.config.polling_interval = 0.05
    other = queue.add_task(add, 0, 0)
    ref = queue.add_task(add, 1, 1)
    await asyncio.wait_for(other.get_task_id(), 30)
    task_id = await asyncio.wait_for(ref.get_task_id(), 30)
    waiter = await parked(counting, ref)
    claimed = await queue.repository.claim_tasks("tests-core", 1)  # lowest id: `other`
    assert [t.id for t in claimed] == [await other.get_task_id()]
    claimed = await queue.repository.claim_tasks("tests-core", 1)
    from taskqueue_core import Outcome

    await queue.repository.complete_tasks(
        "tests-core", [Outcome(task_id, TaskState.DONE, result=2)]
    )
    assert await asyncio.wait_for(waiter, 10) == 2
    assert queue._end_watcher().polls >= 1
    assert counting.get_states_calls and all(c == [task_id] for c in counting.get_states_calls)


async def test_a_lost_notification_is_caught_by_the_safety_poll(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    counting.events = "lost"  # healthy subscription, but this event never arrives
    counting.notify = True
    queue.config.polling_interval = 0.05
    queue.config.fallback_polling_interval = 0.3
    ref = queue.add_task(add, 1, 1)
    waiter = await parked(counting, ref)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await finish(queue.repository, await ref.get_task_id(), result=2)
    assert await asyncio.wait_for(waiter, 10) == 2
    # healthy: polled at the fallback interval, not every polling_interval
    assert loop.time() - started >= 0.2
    assert queue._end_watcher().polls <= 2
