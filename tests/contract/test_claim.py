"""claim_tasks: which tasks are ready, in what order, and that claimers never share one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from taskqueue_core.models import TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import assert_recent, create, get, new, run, utcnow


async def test_limit_is_respected(repository: TaskRepository) -> None:
    ids = await repository.create_tasks([new(str(i)) for i in range(5)])
    first = await repository.claim_tasks("s", 2)
    second = await repository.claim_tasks("s", 10)
    assert len(first) == 2 and len(second) == 3
    assert sorted(t.id for t in first + second) == ids
    assert await repository.claim_tasks("s", 10) == []


async def test_limit_zero_claims_nothing(repository: TaskRepository) -> None:
    task_id = await create(repository)
    assert await repository.claim_tasks("s", 0) == []
    assert (await get(repository, task_id)).state is TaskState.ENQUEUED


async def test_claimed_task_is_doing_for_the_server(repository: TaskRepository) -> None:
    task_id = await create(repository, args=[1], kwargs={"k": "v"}, context={"c": 1})
    (claimed,) = await repository.claim_tasks("server-x", 1)
    assert claimed.id == task_id
    assert claimed.state is TaskState.DOING
    assert claimed.claimed_by == "server-x"
    assert_recent(claimed.date_started)
    assert (claimed.args, claimed.kwargs, claimed.context) == ([1], {"k": "v"}, {"c": 1})
    assert await get(repository, task_id) == claimed


async def test_order_is_priority_then_schedule_then_id(repository: TaskRepository) -> None:
    now = utcnow()
    a, b, c, d, e, f = await repository.create_tasks(
        [
            new("a", priority=0, date_scheduled=now - timedelta(minutes=10)),
            new("b", priority=5, date_scheduled=now - timedelta(minutes=1)),
            new("c", priority=5, date_scheduled=now - timedelta(minutes=5)),
            new("d", priority=0, date_scheduled=now - timedelta(minutes=10)),
            new("e", priority=-1, date_scheduled=now - timedelta(hours=5)),
            new("f", priority=0, date_scheduled=now - timedelta(minutes=20)),
        ]
    )
    order = []
    for _ in range(6):
        (task,) = await repository.claim_tasks("s", 1)
        order.append(task.id)
    assert order == [c, b, f, a, d, e]


async def test_a_batch_claim_takes_the_first_in_order(repository: TaskRepository) -> None:
    low = await repository.create_tasks([new(f"low{i}") for i in range(3)])
    high = await repository.create_tasks([new(f"high{i}", priority=9) for i in range(3)])
    claimed = await repository.claim_tasks("s", 3)
    assert sorted(t.id for t in claimed) == high
    assert sorted(t.id for t in await repository.claim_tasks("s", 5)) == low


async def test_channels_filter(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks(
        [new("a", channel="alpha"), new("b", channel="beta"), new("c", channel="gamma")]
    )
    claimed = await repository.claim_tasks("s", 10, channels=["alpha", "gamma", "missing"])
    assert sorted(t.id for t in claimed) == [a, c]
    assert await repository.claim_tasks("s", 10, channels=[]) == []
    assert [t.id for t in await repository.claim_tasks("s", 10, channels=None)] == [b]


async def test_tasks_scheduled_in_the_future_are_not_claimed(repository: TaskRepository) -> None:
    now = utcnow()
    later, past = await repository.create_tasks(
        [
            new("later", date_scheduled=now + timedelta(hours=1), priority=10),
            new("past", date_scheduled=now - timedelta(seconds=1)),
        ]
    )
    assert [t.id for t in await repository.claim_tasks("s", 10)] == [past]
    assert await repository.claim_tasks("s", 10) == []
    assert (await get(repository, later)).state is TaskState.ENQUEUED


async def test_waiting_tasks_are_not_claimed(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,), priority=100)
    assert [t.id for t in await repository.claim_tasks("s", 10)] == [parent]
    assert await repository.claim_tasks("s", 10) == []
    assert (await get(repository, child)).state is TaskState.WAITING


async def test_finished_tasks_are_not_claimed_again(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await run(repository, task_id)
    assert await repository.claim_tasks("s", 10) == []


async def test_concurrent_claimers_never_share_a_task(repository: TaskRepository) -> None:
    ids = await repository.create_tasks([new(str(i)) for i in range(30)])
    batches = await asyncio.gather(*(repository.claim_tasks(f"server-{n}", 7) for n in range(6)))
    claimed = [t.id for batch in batches for t in batch]
    assert len(claimed) == len(set(claimed))
    for n, batch in enumerate(batches):
        assert all(t.claimed_by == f"server-{n}" for t in batch)
    # A claimer may come back with fewer than it could (rows locked by another one), but
    # nothing is lost: what is left is still claimable.
    rest = [t.id for t in await repository.claim_tasks("late", 30)]
    assert sorted(claimed + rest) == ids
