"""A worker process killed with SIGKILL mid-work: its tasks are rescued and run once more."""

from __future__ import annotations

import json
import signal
import time

import asyncpg
import pytest

from taskqueue_core.queue import TaskCall, TaskQueue
from tests.faults.conftest import SpawnWorker
from tests.faults.harness import Probe, wait_until
from tests.faults.tasks import record

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HEARTBEAT = 0.5
STALE_AFTER = 2.0
TASKS = 200
LONG = 3.0


def duration(index: int) -> float:
    """Every tenth task takes seconds; the others a fraction of one."""
    return LONG if index % 10 == 0 else 0.05 + (index % 5) * 0.05


def key_of(row: object) -> str:
    args = json.loads(row["args"])  # type: ignore[index]
    return str(args[0])


async def test_sigkill_of_one_of_two_workers_loses_nothing(
    queue: TaskQueue,
    probe: Probe,
    spawn_worker: SpawnWorker,
    record_property: object,
) -> None:
    settings = {"max_workers": 8, "heartbeat_interval": HEARTBEAT, "stale_after": STALE_AFTER}
    victim = await spawn_worker(**settings)
    survivor = await spawn_worker(**settings)

    async def registered() -> dict[int, str] | None:
        servers = await probe.servers()
        return servers if {victim.pid, survivor.pid} <= set(servers) else None

    servers = await wait_until(registered, timeout=30, what="both workers registered")
    victim_name = servers[victim.pid]

    refs = await queue.enqueue_many(
        [TaskCall(record, (f"t{i}", duration(i)), max_retries=3) for i in range(TASKS)]
    )
    ids = [await ref.get_task_id() for ref in refs]

    async def victim_in_the_middle() -> list[object] | None:
        # Killed while it runs long tasks that have started (their first run is recorded).
        rows = await probe.doing(victim_name)
        runs = await probe.executions()
        started_long = [r for r in rows if int(key_of(r)[1:]) % 10 == 0 and runs.get(key_of(r))]
        return rows if len(started_long) >= 2 else None

    await wait_until(victim_in_the_middle, timeout=30, interval=0.05, what="victim busy")
    victim.send(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await victim.wait(10) == -signal.SIGKILL
    # The victim is dead: what it was running stays as it is until the reaper acts.
    lost = {key_of(r) for r in await probe.doing(victim_name)}
    assert lost

    async def rescued() -> bool:
        return not await probe.doing(victim_name)

    await wait_until(rescued, timeout=30, interval=0.05, what="rescue")
    rescue_seconds = time.monotonic() - killed_at

    async def all_done() -> bool:
        return (await probe.states()) == {"done": TASKS}

    await wait_until(all_done, timeout=90, what=f"{TASKS} tasks done")

    runs = await probe.executions()
    assert set(runs) == {f"t{i}" for i in range(TASKS)}
    for key, pids in runs.items():
        if key in lost:
            # At most the interrupted run on the victim, then exactly one on the survivor.
            assert pids.count(survivor.pid) == 1, (key, pids)
            assert pids.count(victim.pid) <= 1, (key, pids)
            assert len(pids) == pids.count(survivor.pid) + pids.count(victim.pid)
        else:
            assert len(pids) == 1, (key, pids)
    retries = {
        key_of(row): row["retry_count"]
        for row in await probe.fetch(
            "SELECT args, retry_count FROM queued_tasks WHERE id = ANY($1::bigint[])", ids
        )
    }
    # One rescue for each task the victim held, nothing for the others.
    assert {key for key, count in retries.items() if count} == lost
    assert set(retries.values()) == {0, 1}

    # Silent since at most one heartbeat before the kill; found by the next reaper round.
    record_property("rescue_seconds", round(rescue_seconds, 2))  # type: ignore[operator]
    print(f"rescued {len(lost)} task(s) {rescue_seconds:.2f} s after the kill")
    assert rescue_seconds <= STALE_AFTER + HEARTBEAT + 1.5
    assert (await probe.servers()).keys() == {survivor.pid}


CHILDREN = 2_500


async def test_sigkill_in_the_middle_of_a_big_release_loses_no_child(
    queue: TaskQueue, probe: Probe, spawn_worker: SpawnWorker, fault_db: str
) -> None:
    """A parent with more children than one chunk (``RELEASE_CHUNK``): its worker is killed
    after the first chunks, while the one with the 1,011th child waits for a row lock.
    Another worker's reaper finishes the release; every child runs, once (or twice if it was
    running on the victim)."""
    from taskqueue_core.tortoise.postgres.statements import RELEASE_CHUNK

    parent = await queue.enqueue(record, "parent")
    refs = await queue.enqueue_many(
        [TaskCall(record, (f"c{i}",), parent=parent) for i in range(CHILDREN)]
    )
    children = sorted([await ref.get_task_id() for ref in refs])
    # The second chunk starts at children[RELEASE_CHUNK]: hold a row of it.
    holder = await asyncpg.connect(fault_db.replace("postgres://", "postgresql://", 1))
    try:
        holding = holder.transaction()
        await holding.start()
        held = children[RELEASE_CHUNK + 10]
        await holder.execute("SELECT 1 FROM queued_tasks WHERE id = $1 FOR UPDATE", held)
        settings = {"max_workers": 4, "heartbeat_interval": HEARTBEAT, "stale_after": STALE_AFTER}
        victim = await spawn_worker(**settings)

        async def second_chunk_blocked() -> bool:
            rows = await probe.fetch(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%release_next%'"
            )
            return bool(rows[0]["n"])

        await wait_until(second_chunk_blocked, timeout=30, interval=0.05, what="second chunk")
        victim.send(signal.SIGKILL)
        assert await victim.wait(10) == -signal.SIGKILL
        rest = await probe.fetch(
            "SELECT DISTINCT state FROM queued_tasks WHERE id = ANY($1::bigint[])",
            children[RELEASE_CHUNK:],
        )
        assert [r["state"] for r in rest] == ["waiting"]
        await holding.rollback()
    finally:
        await holder.close()

    survivor = await spawn_worker(**settings)

    async def all_done() -> bool:
        return (await probe.states()) == {"done": CHILDREN + 1}

    await wait_until(all_done, timeout=90, what=f"{CHILDREN + 1} tasks done")
    runs = await probe.executions()
    assert set(runs) == {"parent", *(f"c{i}" for i in range(CHILDREN))}
    assert runs["parent"] == [victim.pid]
    # ``children`` is in id order, which is the order of the calls.
    rescued = {
        f"c{i}"
        for i, row in enumerate(
            await probe.fetch(
                "SELECT retry_count FROM queued_tasks WHERE id = ANY($1::bigint[]) ORDER BY id",
                children,
            )
        )
        if row["retry_count"]
    }
    for key, pids in runs.items():
        assert pids.count(survivor.pid) <= 1 and pids.count(victim.pid) <= 1, (key, pids)
        assert len(pids) == 1 or key in rescued, (key, pids)
    left = await probe.fetch("SELECT id FROM queued_tasks WHERE release_next IS NOT NULL")
    assert left == []
