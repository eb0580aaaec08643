"""The worker's BatchWriter: a task's log lines are stored before its end, however busy.

A round writes the log lines it holds, then the outcomes it took when it started; outcomes
that arrive while a round writes wait for the next round, after their own lines. The
repository below is slow on purpose (each write takes a few milliseconds, as a commit
does), so that many tasks end while a write is in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskqueue_core.hooks import HookRegistry
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
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
