"""SIGTERM during work: running tasks finish within the grace period or go back to the queue."""

from __future__ import annotations

import json
import signal
import time

import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, WorkerProcess, wait_until
from tests.faults.tasks import record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def registered(probe: Probe, worker: WorkerProcess) -> str:
    async def name() -> str | None:
        return (await probe.servers()).get(worker.pid)

    return await wait_until(name, timeout=30, what="worker registered")


async def all_started(probe: Probe, keys: list[str]) -> None:
    async def started() -> bool:
        return set(keys) <= set(await probe.executions())

    await wait_until(started, timeout=20, interval=0.05, what="every task running")


async def task_rows(probe: Probe) -> dict[str, tuple[str, int, str | None]]:
    rows = await probe.fetch("SELECT args, state, retry_count, exception_name FROM queued_tasks")
    return {
        json.loads(r["args"])[0]: (r["state"], r["retry_count"], r["exception_name"]) for r in rows
    }


async def test_sigterm_finishes_short_tasks_and_hands_long_ones_back(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    grace = 2.0
    worker = await spawn_worker(max_workers=6, shutdown_grace=grace)
    await registered(probe, worker)
    short = [f"short{i}" for i in range(3)]
    long = [f"long{i}" for i in range(3)]
    await queue.enqueue_many(
        [TaskCall(record, (key, 1.0)) for key in short]
        + [TaskCall(record, (key, 5.0)) for key in long]
    )
    await all_started(probe, short + long)

    worker.send(signal.SIGTERM)
    sent = time.monotonic()
    assert await worker.wait(grace + 15) == 0
    took = time.monotonic() - sent

    rows = await task_rows(probe)
    for key in short:
        assert rows[key][0] == "done", (key, rows[key])
    for key in long:
        # Back in the queue, and the interrupted run does not count as an attempt.
        assert rows[key] == ("enqueued", 0, "WorkerShutdown"), (key, rows[key])
    assert (await probe.states())["doing"] == 0
    assert await probe.servers() == {}
    assert grace <= took < grace + 10

    # Another worker runs what was handed back; nothing ran more than it had to.
    await spawn_worker(max_workers=6)

    async def all_done() -> bool:
        return (await probe.states()) == {"done": 6}

    await wait_until(all_done, timeout=30, what="all done")
    runs = await probe.executions()
    assert {key: len(runs[key]) for key in short} == dict.fromkeys(short, 1)
    assert {key: len(runs[key]) for key in long} == dict.fromkeys(long, 2)


async def test_a_second_sigterm_stops_at_once(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker(max_workers=4, shutdown_grace=60)
    await registered(probe, worker)
    keys = [f"slow{i}" for i in range(4)]
    await queue.enqueue_many([TaskCall(record, (key, 60.0)) for key in keys])
    await all_started(probe, keys)

    worker.send(signal.SIGTERM)

    async def first_seen() -> bool:
        return "received SIGTERM" in worker.output()

    await wait_until(first_seen, timeout=10, what="first SIGTERM handled")
    worker.send(signal.SIGTERM)
    sent = time.monotonic()
    assert await worker.wait(20) == 0
    assert time.monotonic() - sent < 10  # not the 60 s grace

    rows = await task_rows(probe)
    assert {key: rows[key][:2] for key in keys} == dict.fromkeys(keys, ("enqueued", 0))
    assert await probe.servers() == {}
