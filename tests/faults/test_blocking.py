"""A plain function that blocks its thread past its timeout: the pool keeps serving others."""

from __future__ import annotations

import json
import signal
import time

import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, wait_until
from tests.faults.tasks import block, record, sync_record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def test_threads_stuck_past_their_timeout_do_not_starve_the_pool(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker(max_workers=2)

    async def is_registered() -> bool:
        return worker.pid in await probe.servers()

    await wait_until(is_registered, timeout=30, what="worker registered")
    # Both slots taken by functions that ignore their 1 s timeout for two minutes.
    blockers = await queue.enqueue_many(
        [TaskCall(block, (120,), timeout=1.0, max_retries=0) for _ in range(2)]
    )

    async def both_blocking() -> bool:
        return (await probe.states())["doing"] == 2

    await wait_until(both_blocking, timeout=10, what="blockers running")
    others = [TaskCall(sync_record, (f"sync{i}",)) for i in range(6)]
    others += [TaskCall(record, (f"async{i}",)) for i in range(6)]
    started = time.monotonic()
    await queue.enqueue_many(others)

    async def all_settled() -> bool:
        return (await probe.states()) == {"done": 12, "failed": 2}

    await wait_until(all_settled, timeout=20, what="others served")
    print(f"12 tasks served in {time.monotonic() - started:.1f} s beside two stuck threads")
    runs = await probe.executions()
    assert {len(pids) for pids in runs.values()} == {1} and len(runs) == 12
    for ref in blockers:
        task = await queue.get_task(await ref.get_task_id())
        assert task.exception_name == "TimeoutError"
        assert "cannot be interrupted" in (task.exception_message or "")
    rows = await probe.fetch("SELECT args FROM queued_tasks WHERE state = 'failed'")
    assert [json.loads(r["args"]) for r in rows] == [[120], [120]]

    # The stuck threads do not keep the process from exiting.
    worker.send(signal.SIGTERM)
    assert await worker.wait(20) == 0
