"""Claim order (priority, channels) and scheduled tasks (delay/eta) never started early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskqueue_core.models import TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from taskqueue_core.worker import Worker
from tests.execution import tasks
from tests.execution.conftest import running_worker


async def test_higher_priority_runs_first_then_oldest_first(queue_all: TaskQueue) -> None:
    queue = queue_all
    for label, priority in [("p0-a", 0), ("p5", 5), ("p1", 1), ("p0-b", 0), ("p10", 10)]:
        queue.add_task(tasks.record, label, priority=priority)
    await queue.flush()
    await Worker(queue, concurrency=1).run(burst=True)
    assert tasks.signals.calls == ["p10", "p5", "p1", "p0-a", "p0-b"]


async def test_a_worker_claims_only_from_its_channels(queue_all: TaskQueue) -> None:
    queue = queue_all
    fast = [queue.add_task(tasks.record, f"fast-{i}", channel="fast") for i in range(3)]
    slow = [queue.add_task(tasks.record, f"slow-{i}", channel="slow") for i in range(3)]
    await queue.flush()
    await Worker(queue, channels=["fast"]).run(burst=True)
    assert sorted(tasks.signals.calls) == ["fast-0", "fast-1", "fast-2"]
    for ref in slow:
        assert await ref.get_state() is TaskState.ENQUEUED
    await Worker(queue, channels=["slow", "other"]).run(burst=True)
    for ref in [*fast, *slow]:
        assert await ref.get_state() is TaskState.DONE


async def test_channels_can_come_from_the_config(queue: TaskQueue) -> None:
    queue.config.channels = ("mail",)
    mail = queue.add_task(tasks.record, "mail", channel="mail")
    other = queue.add_task(tasks.record, "other")
    await run_until_idle(queue)
    assert await mail.get_state() is TaskState.DONE
    assert await other.get_state() is TaskState.ENQUEUED


async def test_a_delayed_task_is_not_started_before_its_time(queue_all: TaskQueue) -> None:
    queue = queue_all
    # Delayed tasks are found by polling (no event announces "now due"): poll often.
    queue.config.fallback_polling_interval = 0.5
    before = datetime.now(UTC)
    ref = queue.add_task(tasks.record, "later", delay=1.0)
    # A burst worker right now finds nothing ready and leaves it alone.
    await run_until_idle(queue)
    assert tasks.signals.calls == []
    assert await ref.get_state() is TaskState.ENQUEUED
    async with running_worker(queue):
        assert await ref.wait(15) == "later"
    task = await queue.get_task(await ref.get_task_id())
    assert task.date_scheduled is not None and task.date_started is not None
    # The delay counts from the add_task call.
    assert task.date_scheduled >= before + timedelta(seconds=1)
    assert task.date_started >= task.date_scheduled


async def test_an_eta_task_is_not_started_before_its_time(queue: TaskQueue) -> None:
    queue.config.fallback_polling_interval = 0.5
    eta = datetime.now(UTC) + timedelta(seconds=1)
    now_ref = queue.add_task(tasks.record, "now")
    later_ref = queue.add_task(tasks.record, "at eta", eta=eta)
    async with running_worker(queue):
        assert await now_ref.wait(10) == "now"
        assert await later_ref.wait(15) == "at eta"
    assert tasks.signals.calls == ["now", "at eta"]
    later = await queue.get_task(await later_ref.get_task_id())
    assert later.date_scheduled is not None and later.date_started is not None
    assert abs((later.date_scheduled - eta).total_seconds()) < 0.01
    assert later.date_started >= later.date_scheduled


async def test_a_worker_is_woken_by_new_tasks_without_waiting_for_a_poll(
    queue: TaskQueue,
) -> None:
    queue.config.polling_interval = 30.0
    queue.config.fallback_polling_interval = 30.0
    async with running_worker(queue):
        # Let the worker's first (empty) claim pass, so only an event can wake it.
        ref = queue.add_task(tasks.add, 1, 2)
        assert await ref.wait(5) == 3
        second = queue.add_task(tasks.add, 2, 2)
        assert await second.wait(5) == 4
