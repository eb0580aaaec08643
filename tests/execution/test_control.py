"""Cancel and stop (queued and running, awaited or not), control without events, shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from taskqueue_core.models import TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from taskqueue_core.worker import Worker
from tests.execution import tasks
from tests.execution.conftest import counting, running_worker, wait_for_event


async def test_cancelled_and_stopped_queued_tasks_never_run(queue_all: TaskQueue) -> None:
    queue = queue_all
    cancelled = queue.add_task(tasks.record, "cancelled")
    stopped = queue.add_task(tasks.record, "stopped")
    queue.add_task(tasks.record, "kept")
    assert await cancelled.cancel() == [await cancelled.get_task_id()]
    assert await stopped.stop() == [await stopped.get_task_id()]
    await run_until_idle(queue)
    assert tasks.signals.calls == ["kept"]
    assert await cancelled.get_state() is TaskState.CANCELLED
    assert await stopped.get_state() is TaskState.STOPPED
    with pytest.raises(asyncio.CancelledError):
        await stopped.wait(5)


@pytest.mark.parametrize("awaited", [True, False], ids=["awaited", "not-awaited"])
@pytest.mark.parametrize("verb", ["cancel", "stop"])
async def test_a_running_coroutine_is_interrupted_within_a_second(
    queue: TaskQueue, verb: str, awaited: bool
) -> None:
    async with running_worker(queue) as worker:
        ref = queue.add_task(tasks.hold, "running")
        await wait_for_event(tasks.signals.event("started", "running"))
        task_id = await ref.get_task_id()
        begin = time.monotonic()
        control = getattr(ref, verb)()
        if awaited:
            assert await control == [task_id]
        await wait_for_event(tasks.signals.event("interrupted", "running"), 1.0)
        assert time.monotonic() - begin < 1.0
        with pytest.raises(asyncio.CancelledError):
            await ref.wait(5)
        # The slot is free again.
        async with asyncio.timeout(5):
            while worker.active:
                await asyncio.sleep(0.01)
        assert (await queue.add_task(tasks.add, 1, 1).wait(5)) == 2
    # The worker wrote nothing over the final state (its outcome would be ignored anyway).
    final = await queue.get_task(task_id)
    assert final.state is (TaskState.CANCELLED if verb == "cancel" else TaskState.STOPPED)
    assert final.result is None and final.exception_name is None
    assert "running" not in tasks.signals.calls


async def test_a_cancelled_plain_function_ends_and_its_late_result_is_discarded(
    queue: TaskQueue,
) -> None:
    async with running_worker(queue, concurrency=1):
        ref = queue.add_task(tasks.sync_hold, "thread")
        started = tasks.signals.thread_event("thread_started", "thread")
        async with asyncio.timeout(10):
            while not started.is_set():
                await asyncio.sleep(0.01)
        await ref.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ref.wait(5)
        # The only slot serves new work while the cancelled function still runs.
        assert (await queue.add_task(tasks.sync_add, 2, 2).wait(10))["sum"] == 4
        tasks.signals.thread_event("thread_gates", "thread").set()
    task = await queue.get_task(await ref.get_task_id())
    assert task.state is TaskState.CANCELLED and task.result is None


class _DeafSubscription:
    healthy = False

    async def close(self) -> None:
        return None


async def test_control_is_noticed_by_reading_states_when_events_are_down(
    queue: TaskQueue,
) -> None:
    repo = counting(queue)

    async def deaf_subscribe(handler: Any) -> _DeafSubscription:
        return _DeafSubscription()

    repo.subscribe = deaf_subscribe  # type: ignore[method-assign]
    async with running_worker(queue):
        ref = queue.add_task(tasks.hold, "deaf")
        await wait_for_event(tasks.signals.event("started", "deaf"))
        begin = time.monotonic()
        await queue.cancel([await ref.get_task_id()])
        # One state read per second while tasks run.
        await wait_for_event(tasks.signals.event("interrupted", "deaf"), 2.5)
        assert time.monotonic() - begin < 2.5
    assert repo.calls["get_states"] >= 1
    assert await ref.get_state() is TaskState.CANCELLED


async def test_cancelling_a_parent_while_it_runs_cancels_its_children(queue: TaskQueue) -> None:
    async with running_worker(queue):
        parent = queue.add_task(tasks.hold, "parent")
        child = queue.add_task(tasks.record, "child", parent=parent)
        await wait_for_event(tasks.signals.event("started", "parent"))
        parent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await child.wait(5)
    assert await child.get_state() is TaskState.CANCELLED
    assert tasks.signals.calls == []


async def test_stop_hands_unfinished_tasks_back_without_counting_an_attempt(
    queue: TaskQueue,
) -> None:
    worker = Worker(queue)
    job = asyncio.create_task(worker.run())
    ref = queue.add_task(tasks.hold, "shutdown")
    await wait_for_event(tasks.signals.event("started", "shutdown"))
    await asyncio.wait_for(worker.stop(grace=0.1), 10)
    await job
    assert tasks.signals.event("interrupted", "shutdown").is_set()
    task = await queue.get_task(await ref.get_task_id())
    assert task.state is TaskState.ENQUEUED
    assert task.retry_count == 0
    # Another worker runs it again, to the end this time.
    tasks.signals.event("gates", "shutdown").set()
    await run_until_idle(queue)
    assert await ref.wait(5) == "released shutdown"


async def test_stop_lets_running_tasks_finish_within_the_grace(queue: TaskQueue) -> None:
    worker = Worker(queue)
    job = asyncio.create_task(worker.run())
    ref = queue.add_task(tasks.hold, "graceful")
    await wait_for_event(tasks.signals.event("started", "graceful"))
    stopping = asyncio.create_task(worker.stop(grace=10))
    # Stopped workers claim nothing new.
    late = queue.add_task(tasks.record, "late")
    await queue.flush()
    tasks.signals.event("gates", "graceful").set()
    await asyncio.wait_for(stopping, 15)
    await job
    assert await ref.get_state() is TaskState.DONE
    assert await late.get_state() is TaskState.ENQUEUED
    assert not tasks.signals.event("interrupted", "graceful").is_set()


async def test_cancelling_run_puts_running_tasks_back(queue: TaskQueue) -> None:
    worker = Worker(queue)
    job = asyncio.create_task(worker.run())
    ref = queue.add_task(tasks.hold, "cancel-run")
    await wait_for_event(tasks.signals.event("started", "cancel-run"))
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(job, 10)
    assert await ref.get_state() is TaskState.ENQUEUED
    assert (await queue.get_task(await ref.get_task_id())).retry_count == 0


async def test_a_second_stop_with_a_shorter_grace_hurries_the_first(queue: TaskQueue) -> None:
    worker = Worker(queue)
    job = asyncio.create_task(worker.run())
    ref = queue.add_task(tasks.hold, "hurry")
    await wait_for_event(tasks.signals.event("started", "hurry"))
    patient = asyncio.create_task(worker.stop(grace=60))
    await asyncio.sleep(0)  # the first stop starts waiting out its grace
    begin = time.monotonic()
    await asyncio.wait_for(worker.stop(grace=0), 10)
    await asyncio.wait_for(patient, 10)
    await job
    assert time.monotonic() - begin < 5
    assert await ref.get_state() is TaskState.ENQUEUED


async def test_wake_makes_an_idle_worker_look_again(queue: TaskQueue) -> None:
    queue.config.polling_interval = 30.0
    repo = counting(queue)

    async def deaf_subscribe(handler: Any) -> _DeafSubscription:
        return _DeafSubscription()

    repo.subscribe = deaf_subscribe  # type: ignore[method-assign]
    async with running_worker(queue) as worker:
        # No event will announce this task and the next poll is 30 s away.
        task_id = (await queue.repository.create_tasks([_new_task(queue)]))[0]
        worker.wake()
        await wait_for_event(repo.called("complete_tasks"), 5)
    assert (await queue.get_task(task_id)).result == 3


def _new_task(queue: TaskQueue) -> Any:
    from taskqueue_core.models import NewTask

    return NewTask(name="woken", function=queue.codec.dump(tasks.add), args=[1, 2])
