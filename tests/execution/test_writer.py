"""The worker's BatchWriter: a task's log lines are stored before its end, however busy,
and an item the storage refuses holds back nothing else.

A round writes the log lines it holds, then the outcomes it took when it started; outcomes
that arrive while a round writes wait for the next round, after their own lines. The
repository below is slow on purpose (each write takes a few milliseconds, as a commit
does), so that many tasks end while a write is in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskqueue_core.exceptions import ArgumentNotSerializable, RepositoryError
from taskqueue_core.hooks import HookRegistry
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.models import TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from taskqueue_core.writer import SPLIT_AFTER
from tests.execution import tasks
from tests.execution.conftest import make_config


class SlowWrites(InMemoryRepository):
    """An in-memory repository whose writes take ``delay`` seconds, recording their order."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.logged: set[int] = set()
        self.ended_before_logged: list[int] = []
        self.outcome_batches: list[int] = []

    async def append_logs(self, records: Any) -> None:
        await asyncio.sleep(self.delay)  # a commit's duration, not a synchronisation
        await super().append_logs(records)
        self.logged.update(record.task_id for record in records)

    async def complete_tasks(self, server_name: str, outcomes: Any) -> list[int]:
        self.ended_before_logged += [o.task_id for o in outcomes if o.task_id not in self.logged]
        self.outcome_batches.append(len(outcomes))
        await asyncio.sleep(self.delay)
        return await super().complete_tasks(server_name, outcomes)


async def test_log_lines_are_written_before_their_tasks_end() -> None:
    repository = SlowWrites(delay=0.005)
    queue = TaskQueue(make_config(max_workers=8), repository=repository, hooks=HookRegistry())
    async with queue:
        refs = [queue.add_task(tasks.log_many, 2) for _ in range(300)]
        await run_until_idle(queue)
        ids = [await ref.get_task_id() for ref in refs]
        assert repository.ended_before_logged == []
        assert set(ids) <= repository.logged
        # Batched all the same: far fewer writes than tasks.
        assert sum(repository.outcome_batches) == 300
        assert len(repository.outcome_batches) < 100
        for task_id in ids[:5]:
            assert len(await queue.repository.get_logs(task_id)) == 2


class RefusingWrites(InMemoryRepository):
    """An in-memory repository that refuses any write holding an item of a task in
    ``poisoned``: with a ``RepositoryError``, as a database refuses a value, or (``refusal``)
    with an ``ArgumentNotSerializable``, as the repository itself refuses a value no column
    holds before writing anything. ``down`` makes every write and the server list fail (an
    unreachable database) until ``writes_while_down`` writes have failed."""

    def __init__(self, refusal: type[Exception] = RepositoryError) -> None:
        super().__init__()
        self.refusal = refusal
        self.poisoned: set[int] = set()
        self.down = False
        self.writes_while_down = 0
        self.failed_writes = 0

    def _check(self, task_ids: list[int]) -> None:
        if self.down:
            self.failed_writes += 1
            if self.failed_writes >= self.writes_while_down:
                self.down = False
            raise RepositoryError("task database error: connection refused")
        refused = self.poisoned.intersection(task_ids)
        if refused:
            self.failed_writes += 1
            raise self.refusal(f"task database error: value of task {min(refused)} refused")

    async def append_logs(self, records: Any) -> None:
        self._check([record.task_id for record in records])
        await super().append_logs(records)

    async def update_contexts(self, contexts: Any) -> None:
        self._check(list(contexts))
        await super().update_contexts(contexts)

    async def complete_tasks(self, server_name: str, outcomes: Any) -> list[int]:
        self._check([o.task_id for o in outcomes if o.error_name != "OutcomeNotStored"])
        return await super().complete_tasks(server_name, outcomes)

    async def list_servers(self) -> Any:
        if self.down:
            raise RepositoryError("task database error: connection refused")
        return await super().list_servers()


@pytest.mark.parametrize("refusal", [RepositoryError, ArgumentNotSerializable])
async def test_an_outcome_and_a_log_line_the_storage_refuses_hold_back_nothing_else(
    refusal: type[Exception],
) -> None:
    repository = RefusingWrites(refusal)
    queue = TaskQueue(make_config(max_workers=8), repository=repository, hooks=HookRegistry())
    async with queue:
        refs = [queue.add_task(tasks.log_many, 2) for _ in range(40)]
        ids = [await ref.get_task_id() for ref in refs]
        bad = ids[17]
        repository.poisoned.add(bad)
        await run_until_idle(queue, timeout=60)
        states = await repository.get_states(ids)
        assert {states[task_id] for task_id in ids if task_id != bad} == {TaskState.DONE}
        task = await queue.get_task(bad)
        assert task.state == TaskState.FAILED
        assert task.exception_name == "OutcomeNotStored"
        assert f"value of task {bad} refused" in (task.exception_message or "")
        # The refused task's lines are dropped; every other task's are stored.
        assert await repository.get_logs(bad) == []
        for task_id in ids:
            if task_id != bad:
                assert len(await repository.get_logs(task_id)) == 2
        if refusal is RepositoryError:
            # Retried first: the database may refuse only for now.
            assert repository.failed_writes >= SPLIT_AFTER
        else:
            # Halved down to the culprit at once, never retried as it was: one refusal per
            # halving of a batch of lines (80 at most) and of outcomes (40), against three
            # per halving with retries.
            assert repository.failed_writes <= 7 + 6


async def test_nothing_is_dropped_while_the_storage_is_unreachable() -> None:
    repository = RefusingWrites()
    queue = TaskQueue(make_config(max_workers=8), repository=repository, hooks=HookRegistry())
    async with queue:
        refs = [queue.add_task(tasks.log_many, 2) for _ in range(40)]
        ids = [await ref.get_task_id() for ref in refs]
        # Down for 12 failed writes: long enough for writes to be split down to single items.
        repository.writes_while_down = 12
        repository.down = True
        await run_until_idle(queue, timeout=120)
        assert repository.failed_writes == 12
        states = await repository.get_states(ids)
        assert {states[task_id] for task_id in ids} == {TaskState.DONE}
        for task_id in ids:
            assert len(await repository.get_logs(task_id)) == 2
