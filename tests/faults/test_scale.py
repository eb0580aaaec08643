"""Three worker processes, 10,000 tasks, no faults: every task runs exactly once."""

from __future__ import annotations

import time

import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, wait_until
from tests.faults.tasks import record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TASKS = 10_000


async def test_ten_thousand_tasks_on_three_processes_run_exactly_once(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker(processes=3, max_workers=16)

    async def three_servers() -> dict[int, str] | None:
        servers = await probe.servers()
        return servers if len(servers) == 3 else None

    servers = await wait_until(three_servers, timeout=60, what="three processes registered")
    started = time.monotonic()
    for start in range(0, TASKS, 2_000):
        await queue.enqueue_many(
            [TaskCall(record, (f"t{i}",)) for i in range(start, start + 2_000)]
        )

    async def all_done() -> bool:
        return (await probe.states()) == {"done": TASKS}

    await wait_until(all_done, timeout=180, interval=0.5, what=f"{TASKS} tasks done")
    took = time.monotonic() - started
    print(f"{TASKS} tasks in {took:.1f} s ({TASKS / took:.0f}/s)")

    runs = await probe.executions()
    assert len(runs) == TASKS
    assert {len(pids) for pids in runs.values()} == {1}
    # All three processes took part.
    assert {pid for pids in runs.values() for pid in pids} == set(servers)
    assert worker.returncode is None
