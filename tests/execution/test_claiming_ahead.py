"""Claiming ahead: short tasks are claimed beyond the free slots; what that must never change.

Tasks held ahead of a free slot are handed back untouched when the worker stops, dropped
when an admin cancels them, and never held for slow tasks; a task claimed again while it
runs (its first claim lost in a database crash) is not run a second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from taskqueue_core.models import TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.worker import Worker
from tests.execution import tasks
from tests.execution.conftest import counting, running_worker, wait_for_event


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds; it reads the worker's live state."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)


async def warm_up(queue: TaskQueue) -> None:
    """Run a few no-op tasks, so that the worker knows its tasks run short."""
    refs = [queue.add_task(tasks.noop) for _ in range(3)]
    for ref in refs:
        await ref.wait(5)


async def test_tasks_held_ahead_go_back_untouched_on_stop(queue_all: TaskQueue) -> None:
    queue = queue_all
    worker = Worker(queue, concurrency=1)
    job = asyncio.create_task(worker.run(), name="test-worker")
    try:
        await warm_up(queue)
        holder = queue.add_task(tasks.hold, "slot")
        ahead = [queue.add_task(tasks.record, f"ahead-{i}") for i in range(3)]
        await wait_for_event(tasks.signals.event("started", "slot"))
        ahead_ids = [await ref.get_task_id() for ref in ahead]
        await until(lambda: set(ahead_ids) <= set(worker.running_task_ids))
        assert worker.active == 1 and worker.idle == 0
    finally:
        async with asyncio.timeout(15):
            await worker.stop(grace=0)
            await job
    assert tasks.signals.calls == []
    for task_id in ahead_ids:
        task = await queue.get_task(task_id)
        assert task.state is TaskState.ENQUEUED
        assert task.retry_count == 0 and task.exception_name is None and task.claimed_by is None
    interrupted = await queue.get_task(await holder.get_task_id())
    assert interrupted.state is TaskState.ENQUEUED and interrupted.retry_count == 0
    assert interrupted.exception_name == "WorkerShutdown"


async def test_a_task_held_ahead_and_cancelled_never_runs(queue: TaskQueue) -> None:
    async with running_worker(queue, concurrency=1) as worker:
        await warm_up(queue)
        queue.add_task(tasks.hold, "slot")
        dropped = queue.add_task(tasks.record, "dropped")
        kept = queue.add_task(tasks.record, "kept")
        await wait_for_event(tasks.signals.event("started", "slot"))
        dropped_id = await dropped.get_task_id()
        await until(lambda: dropped_id in worker.running_task_ids)
        assert await dropped.cancel() == [dropped_id]
        await until(lambda: dropped_id not in worker.running_task_ids)
        tasks.signals.event("gates", "slot").set()
        assert await kept.wait(5) == "kept"
    assert "dropped" not in tasks.signals.calls
    assert await dropped.get_state() is TaskState.CANCELLED


async def test_slow_tasks_are_claimed_for_free_slots_only(queue: TaskQueue) -> None:
    # Each task sleeps 0.3 s: two slots start fewer than one task per 0.05 s, so none is
    # worth holding ahead (another worker may be free to run it).
    refs = [queue.add_task(tasks.count_context, 1, 1, 0.3) for _ in range(6)]
    await queue.flush()
    await Worker(queue, concurrency=2).run(burst=True)
    sizes = counting(queue).sizes["claim_tasks"]
    assert sum(sizes) == 6 and max(sizes) <= 2, sizes
    for ref in refs:
        assert await ref.get_state() is TaskState.DONE


async def test_a_task_claimed_again_while_it_runs_runs_once(pg_queue: TaskQueue) -> None:
    """Claims commit without waiting for their WAL flush: a database crash can lose one
    while its task runs here, and the task is then claimed again. The run in progress is
    kept, and its outcome completes the new claim."""
    queue = pg_queue
    repo = counting(queue)
    async with running_worker(queue, concurrency=2) as worker:
        ref = queue.add_task(tasks.hold, "twice")
        await wait_for_event(tasks.signals.event("started", "twice"))
        task_id = await ref.get_task_id()
        claims = len(repo.sizes["claim_tasks"])
        # What the database looks like after a crash lost the claim.
        url = repo.inner.database_url.replace("postgres://", "postgresql://", 1)
        db = await asyncpg.connect(url)
        try:
            await db.execute(
                "UPDATE queued_tasks SET state = 'enqueued', claimed_by = NULL WHERE id = $1",
                task_id,
            )
        finally:
            await db.close()
        worker.wake()
        await until(lambda: any(n for n in repo.sizes["claim_tasks"][claims:]))
        assert worker.active == 1
        tasks.signals.event("gates", "twice").set()
        assert await ref.wait(5) == "released twice"
    assert tasks.signals.calls == ["twice"]
    assert await ref.get_state() is TaskState.DONE
