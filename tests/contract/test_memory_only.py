"""What the in-memory fake offers beyond the contract: an injectable clock, and its index.

These run on ``InMemoryRepository`` alone; everything it shares with the database backends
is in the other modules of this package.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.models import Outcome, TaskState
from taskqueue_core.testing import InMemoryRepository as PublicInMemoryRepository
from tests.contract.helpers import new


class Clock:
    """A clock that tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def test_exported_by_the_testing_module() -> None:
    assert PublicInMemoryRepository is InMemoryRepository


async def test_ids_start_at_one() -> None:
    repo = InMemoryRepository()
    assert await repo.create_tasks([new("a"), new("b")]) == [1, 2]


async def test_delayed_task_becomes_due_when_the_clock_moves() -> None:
    clock = Clock()
    repo = InMemoryRepository(clock=clock)
    (task_id,) = await repo.create_tasks([new(date_scheduled=clock.now + timedelta(minutes=5))])
    assert await repo.claim_tasks("s", 1) == []
    clock.advance(minutes=5)
    (task,) = await repo.claim_tasks("s", 1)
    assert (task.id, task.date_started) == (task_id, clock.now)


async def test_retry_backoff_is_honoured_with_the_clock() -> None:
    clock = Clock()
    repo = InMemoryRepository(clock=clock)
    (task_id,) = await repo.create_tasks([new()])
    await repo.claim_tasks("s", 1)
    retry_at = clock.now + timedelta(seconds=30)
    await repo.complete_tasks("s", [Outcome(task_id, TaskState.ENQUEUED, retry_at=retry_at)])
    clock.advance(seconds=29)
    assert await repo.claim_tasks("s", 1) == []
    clock.advance(seconds=1)
    assert [t.id for t in await repo.claim_tasks("s", 1)] == [task_id]


async def test_a_clock_moved_back_makes_tasks_not_due_again() -> None:
    clock = Clock()
    repo = InMemoryRepository(clock=clock)
    (task_id,) = await repo.create_tasks([new()])
    clock.advance(minutes=-1)
    assert await repo.claim_tasks("s", 1) == []
    clock.advance(minutes=1)
    assert [t.id for t in await repo.claim_tasks("s", 1)] == [task_id]


async def test_naive_datetimes_are_taken_as_utc() -> None:
    clock = Clock()
    repo = InMemoryRepository(clock=clock)
    naive = (clock.now + timedelta(minutes=1)).replace(tzinfo=None)
    (task_id,) = await repo.create_tasks([new(date_scheduled=naive)])
    (task,) = await repo.get_tasks([task_id])
    assert task.date_scheduled == clock.now + timedelta(minutes=1)
    assert task.date_scheduled is not None and task.date_scheduled.tzinfo is not None


async def test_claim_order_survives_index_compaction() -> None:
    repo = InMemoryRepository()
    doomed = await repo.create_tasks([new(f"d{i}", priority=5) for i in range(3000)])
    kept = await repo.create_tasks([new(f"k{i}", priority=i % 3) for i in range(30)])
    assert len(await repo.cancel_tasks(doomed)) == 3000
    claimed = [t.id for t in await repo.claim_tasks("s", 100)]
    by_priority = sorted(kept, key=lambda i: (-((i - kept[0]) % 3), i))
    assert claimed == by_priority


async def test_data_survive_close_and_reopen() -> None:
    repo = InMemoryRepository()
    await repo.open()
    (task_id,) = await repo.create_tasks([new()])
    await repo.close()
    await repo.open()
    assert await repo.get_states([task_id]) == {task_id: TaskState.ENQUEUED}
