"""Multi-process mode as a terminal and a process manager see it: Ctrl-C, a killed parent."""

from __future__ import annotations

import json
import os
import signal

import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, WorkerProcess, wait_until
from tests.faults.tasks import record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def start_two(probe: Probe, spawn_worker: SpawnWorker, **settings: object) -> WorkerProcess:
    worker = await spawn_worker(processes=2, **settings)

    async def two_servers() -> bool:
        return len(await probe.servers()) == 2

    await wait_until(two_servers, timeout=60, what="both children registered")
    return worker


async def test_ctrl_c_in_a_terminal_is_one_graceful_stop(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    worker = await start_two(probe, spawn_worker, max_workers=2, shutdown_grace=20)
    keys = [f"t{i}" for i in range(4)]
    await queue.enqueue_many([TaskCall(record, (key, 2.0)) for key in keys])

    async def all_running() -> bool:
        return set(keys) <= set(await probe.executions())

    await wait_until(all_running, timeout=20, interval=0.05, what="tasks running")
    # A terminal sends SIGINT to the whole foreground group: parent and children.
    os.killpg(worker.pid, signal.SIGINT)
    assert await worker.wait(30) == 0
    # One graceful stop, not two signals meaning "at once": the running tasks finished.
    rows = await probe.fetch("SELECT args, state FROM queued_tasks")
    assert {json.loads(r["args"])[0]: r["state"] for r in rows} == dict.fromkeys(keys, "done")
    assert await probe.servers() == {}


async def test_children_stop_by_themselves_when_the_parent_is_killed(
    probe: Probe, spawn_worker: SpawnWorker
) -> None:
    worker = await start_two(probe, spawn_worker)
    children = set(await probe.servers())
    worker.send(signal.SIGKILL)
    assert await worker.wait(10) == -signal.SIGKILL

    async def children_gone() -> bool:
        alive = {pid for pid in children if os.path.exists(f"/proc/{pid}")}
        return not alive and await probe.servers() == {}

    # They notice the parent's end of their pipe closing, stop gracefully and unregister.
    await wait_until(children_gone, timeout=30, what="children stopped and unregistered")
