"""PostgreSQL restarted under load: the workers recover by themselves and finish everything."""

from __future__ import annotations

import time

import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.conftest import SERVER_URL
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, pg_ctlcluster, postgres_running, wait_until
from tests.faults.tasks import record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TASKS = 300


async def test_workers_recover_from_a_postgres_restart(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker
) -> None:
    # Two processes under one parent (multi-process mode). stale_after exceeds the outage
    # (no server is declared dead) and bounds how long a task whose claim reply was lost
    # stays doing before its server hands it back (twice stale_after).
    worker = await spawn_worker(processes=2, max_workers=6, stale_after=6)

    async def two_servers() -> bool:
        return len(await probe.servers()) == 2

    await wait_until(two_servers, timeout=60, what="both worker processes registered")
    await queue.enqueue_many(
        [TaskCall(record, (f"t{i}", 0.1 + (i % 4) * 0.1), max_retries=20) for i in range(TASKS)]
    )

    async def some_done() -> bool:
        return (await probe.states())["done"] >= TASKS // 5

    await wait_until(some_done, timeout=60, what="work under way")
    try:
        started = time.monotonic()
        await pg_ctlcluster("restart")
        print(f"PostgreSQL restarted in {time.monotonic() - started:.1f} s")
    finally:
        if not await postgres_running(SERVER_URL):
            await pg_ctlcluster("start")
    restarted = time.monotonic()
    done_at_restart = (await probe.states())["done"]

    async def progress() -> bool:
        states = await probe.try_fetch(
            "SELECT count(*) AS n FROM queued_tasks WHERE state = 'done'"
        )
        return states is not None and states[0]["n"] > done_at_restart

    await wait_until(progress, timeout=60, what="progress after the restart")
    print(f"first task done {time.monotonic() - restarted:.1f} s after the restart")

    async def all_done() -> bool:
        return (await probe.states()) == {"done": TASKS}

    try:
        await wait_until(all_done, timeout=60, what=f"{TASKS} tasks done")
    except AssertionError:
        print("states:", await probe.states())
        print("servers:", await probe.servers())
        for row in await probe.fetch(
            "SELECT id, state, claimed_by, retry_count, date_started, date_scheduled, "
            "exception_name, exception_message FROM queued_tasks WHERE state <> 'done' LIMIT 20"
        ):
            print(dict(row))
        raise
    print(f"all done {time.monotonic() - restarted:.1f} s after the restart")

    runs = await probe.executions()
    assert set(runs) == {f"t{i}" for i in range(TASKS)}  # none lost
    # At least once: a task may run again only if it was in flight when the server went
    # down (its run, claim or outcome was cut off), and then only once more.
    restarted_at = (await probe.fetch("SELECT pg_postmaster_start_time() AS at"))[0]["at"]
    twice = await probe.fetch(
        "SELECT task_key, array_agg(started_at ORDER BY id) AS at FROM executions "
        "GROUP BY task_key HAVING count(*) > 1"
    )
    print(f"tasks run twice: {sorted(r['task_key'] for r in twice)}")
    for row in twice:
        assert len(row["at"]) == 2, dict(row)
        assert row["at"][0] < restarted_at, dict(row)
    assert len(await probe.servers()) == 2  # both still (or again) registered
    assert worker.returncode is None
