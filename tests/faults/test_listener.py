"""The LISTEN connection killed by the server: new tasks still start within seconds."""

from __future__ import annotations

import time

import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, wait_until
from tests.faults.tasks import record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

QUICK = 5.0
"""Seconds within which a task must start: far below the 60 s polls of the worker."""


async def test_tasks_start_quickly_after_the_listener_connection_is_terminated(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    # Polls so rare that only notifications (or the listener's resync) can start tasks.
    worker = await spawn_worker(max_workers=4, polling_interval=60, fallback_polling_interval=60)

    async def listener_backend() -> int | None:
        # The worker's connection whose last statement is LISTEN (or the listener's probe).
        rows = [
            r
            for r in await probe.backends_of(worker.pid)
            if r["query"].upper().startswith("LISTEN") or r["query"] == "SELECT 1"
        ]
        return rows[0]["pid"] if len(rows) == 1 else None

    async def ran(keys: list[str]) -> bool:
        return set(keys) <= set(await probe.executions())

    before = await wait_until(listener_backend, timeout=30, what="worker listening")
    await queue.enqueue(record, "first")
    await wait_until(lambda: ran(["first"]), timeout=QUICK, what="first task started")

    await probe.fetch("SELECT pg_terminate_backend($1)", before)
    # Created while the listener reconnects: its resync must find them.
    during = [f"during{i}" for i in range(3)]
    await queue.enqueue_many([TaskCall(record, (key,)) for key in during])
    started = time.monotonic()
    await wait_until(lambda: ran(during), timeout=QUICK, what="tasks created during reconnect")
    print(f"tasks created during the reconnect started within {time.monotonic() - started:.2f} s")

    async def new_listener() -> int | None:
        backend = await listener_backend()
        return backend if backend not in (None, before) else None

    await wait_until(new_listener, timeout=QUICK, what="listening again")
    after = [f"after{i}" for i in range(3)]
    await queue.enqueue_many([TaskCall(record, (key,)) for key in after])
    started = time.monotonic()
    await wait_until(lambda: ran(after), timeout=QUICK, what="tasks created after reconnect")
    print(f"tasks created after the reconnect started within {time.monotonic() - started:.2f} s")

    async def all_done() -> bool:
        return (await probe.states()) == {"done": 7}

    await wait_until(all_done, timeout=QUICK, what="all done")
    runs = await probe.executions()
    assert all(len(pids) == 1 for pids in runs.values())
