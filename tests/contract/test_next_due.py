"""next_due: when the next task scheduled for later becomes ready (an idle worker waits for it)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from taskqueue_core.models import TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import SERVER, create, finish, new, start, utcnow


async def test_nothing_scheduled_is_none(repository: TaskRepository) -> None:
    assert await repository.next_due() is None
    # Tasks ready now do not count: a claim is what finds them.
    await create(repository)
    await create(repository, date_scheduled=utcnow() - timedelta(minutes=1))
    assert await repository.next_due() is None


async def test_earliest_of_every_priority(repository: TaskRepository) -> None:
    now = utcnow()
    in_a_minute = now + timedelta(minutes=1)
    in_an_hour = now + timedelta(hours=1)
    await repository.create_tasks(
        [
            new("later, urgent", priority=9, date_scheduled=in_an_hour),
            new("sooner, unimportant", priority=-3, date_scheduled=in_a_minute),
            new("later still", priority=0, date_scheduled=now + timedelta(hours=2)),
            new("ready", priority=5),
        ]
    )
    assert await repository.next_due() == in_a_minute


async def test_only_enqueued_tasks_count(repository: TaskRepository) -> None:
    now = utcnow()
    soon = now + timedelta(minutes=1)
    cancelled = await create(repository, date_scheduled=soon)
    assert await repository.next_due() == soon
    assert await repository.cancel_tasks([cancelled]) == [cancelled]
    assert await repository.next_due() is None
    # A waiting child is not due whatever its schedule: its parent is not done.
    parent = await create(repository)
    await create(repository, parent_ids=(parent,), date_scheduled=soon)
    assert await repository.next_due() is None


async def test_a_retry_scheduled_by_a_worker_is_due_at_its_retry_time(
    repository: TaskRepository,
) -> None:
    task_id = await create(repository)
    await start(repository, task_id)
    retry_at = utcnow() + timedelta(seconds=30)
    assert await finish(
        repository, task_id, TaskState.ENQUEUED, error_name="E", retry_at=retry_at
    ) == [task_id]
    assert await repository.next_due() == retry_at
    assert await repository.claim_tasks(SERVER, 10) == []


async def test_channels_filter(repository: TaskRepository) -> None:
    now = utcnow()
    mail_at = now + timedelta(minutes=5)
    report_at = now + timedelta(minutes=1)
    await repository.create_tasks(
        [
            new("mail", channel="mail", date_scheduled=mail_at),
            new("report", channel="reports", date_scheduled=report_at),
        ]
    )
    assert await repository.next_due(["mail"]) == mail_at
    assert await repository.next_due(["reports", "mail"]) == report_at
    assert await repository.next_due(["other"]) is None
    assert await repository.next_due([]) is None
    assert await repository.next_due(None) == report_at


async def test_a_due_time_that_passes_leaves_the_answer(repository: TaskRepository) -> None:
    """Once its time has come the task is ready (claimable), not "next due" any more."""
    soon = utcnow() + timedelta(milliseconds=200)
    task_id = await create(repository, date_scheduled=soon)
    assert await repository.next_due() == soon
    assert await repository.claim_tasks(SERVER, 10) == []
    # What is tested here is time passing: wait until the schedule is behind us.
    await asyncio.sleep((soon - utcnow()).total_seconds() + 0.02)
    assert await repository.next_due() is None
    await start(repository, task_id)
