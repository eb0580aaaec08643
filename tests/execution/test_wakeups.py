"""An idle worker wakes up when a scheduled task becomes due, not at its next poll.

No event announces that a delayed task or a retry is due, so the worker asks the repository
(``next_due``) when it goes idle and sleeps until then. Polls are set to a minute in these
tests: only that wake-up can start the tasks in time.
"""

from __future__ import annotations

from datetime import timedelta

from taskqueue_core.models import Outcome, TaskState
from taskqueue_core.queue import TaskQueue
from tests.execution import tasks
from tests.execution.conftest import running_worker

ON_TIME = timedelta(seconds=0.25)
"""How late after its due time a task may start: a delay=1 task starts within 1.25 s."""


def no_polling(queue: TaskQueue) -> None:
    queue.config.polling_interval = 60.0
    queue.config.fallback_polling_interval = 60.0


async def test_a_delayed_task_starts_when_due(queue_all: TaskQueue) -> None:
    queue = queue_all
    no_polling(queue)
    async with running_worker(queue):
        ref = queue.add_task(tasks.record, "later", delay=1.0)
        assert await ref.wait(10) == "later"
    task = await queue.get_task(await ref.get_task_id())
    assert task.date_scheduled is not None and task.date_started is not None
    assert task.date_scheduled <= task.date_started < task.date_scheduled + ON_TIME


async def test_a_sooner_task_cuts_a_long_sleep_short(queue_all: TaskQueue) -> None:
    queue = queue_all
    no_polling(queue)
    async with running_worker(queue):
        much_later = queue.add_task(tasks.record, "much later", delay=30.0)
        await much_later.get_task_id()  # written: the worker now sleeps until it is due
        sooner = queue.add_task(tasks.record, "sooner", delay=0.5)
        assert await sooner.wait(10) == "sooner"
        assert await much_later.get_state() is TaskState.ENQUEUED
    task = await queue.get_task(await sooner.get_task_id())
    assert task.date_scheduled is not None and task.date_started is not None
    assert task.date_scheduled <= task.date_started < task.date_scheduled + ON_TIME


async def test_a_retry_another_server_scheduled_starts_when_due(queue_all: TaskQueue) -> None:
    queue = queue_all
    no_polling(queue)
    repository = queue.repository
    ref = queue.add_task(tasks.record, "again")
    task_id = await ref.get_task_id()
    # Another server ran it and scheduled a retry one second from now.
    (claimed,) = await repository.claim_tasks("other-server", 1)
    assert claimed.id == task_id
    async with running_worker(queue):
        assert claimed.date_started is not None
        retry_at = claimed.date_started + timedelta(seconds=1)
        outcome = Outcome(task_id, TaskState.ENQUEUED, error_name="Flaky", retry_at=retry_at)
        assert await repository.complete_tasks("other-server", [outcome]) == [task_id]
        assert await ref.wait(10) == "again"
    task = await queue.get_task(task_id)
    assert task.date_started is not None and task.retry_count == 1
    assert retry_at <= task.date_started < retry_at + ON_TIME
