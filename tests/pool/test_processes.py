"""WorkerPool(processes=P): spawned children, each a server; supervision, config, stop."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator

import pytest

from taskqueue_core.config import QueueConfig
from taskqueue_core.models import ServerInfo
from taskqueue_core.pool import WorkerPool
from taskqueue_core.queue import TaskQueue
from tests.pool import tasks
from tests.pool.support import eventually

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
async def queue(pg_url: str) -> AsyncIterator[TaskQueue]:
    config = QueueConfig(
        database_url=pg_url,
        secret_key="pool-tests",
        max_workers=2,
        heartbeat_interval=0.2,
        stale_after=1.0,
        shutdown_grace=5.0,
    )
    async with TaskQueue(config) as opened:
        yield opened


async def rows_by_pid(queue: TaskQueue) -> dict[int, ServerInfo]:
    return {s.pid: s for s in await queue.servers()}


async def test_children_are_servers_that_run_tasks_and_follow_the_config(
    queue: TaskQueue,
) -> None:
    pool = WorkerPool(queue, processes=2)
    await pool.start()
    try:
        assert pool.supervisor is not None and pool.server is None and pool.worker is None
        children = set(pool.supervisor.pids)
        assert len(children) == 2 and os.getpid() not in children

        async def both_registered() -> bool:
            return set(await rows_by_pid(queue)) == children

        await eventually(both_registered, timeout=30)
        for pid, row in (await rows_by_pid(queue)).items():
            assert row.server_name == f"{socket.gethostname()}:{pid}"

        refs = [queue.add_task(tasks.process_id) for _ in range(20)]
        ran_in = {await ref.wait(timeout=30) for ref in refs}
        assert ran_in <= children

        # A change of the parent's config object reaches every child.
        queue.config.max_workers = 5

        async def five_everywhere() -> bool:
            rows = await rows_by_pid(queue)
            return set(rows) == children and {r.max_workers for r in rows.values()} == {5}

        await eventually(five_everywhere, timeout=10)
    finally:
        await pool.stop()
    assert await queue.servers() == []
    assert pool.supervisor.pids == []


async def test_a_child_that_dies_is_replaced(queue: TaskQueue) -> None:
    queue.config.server_name = "box"
    async with WorkerPool(queue, processes=2) as pool:
        assert pool.supervisor is not None
        first = set(pool.supervisor.pids)

        async def registered(pids: set[int]) -> bool:
            return pids <= set(await rows_by_pid(queue))

        await eventually(lambda: registered(first), timeout=30)
        names = {r.server_name for r in await queue.servers()}
        assert names == {f"box-{i}:{pid}" for i, pid in enumerate(pool.supervisor.pids)}

        victim = pool.supervisor.pids[0]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> set[int] | None:
            pids = set(pool.supervisor.pids)  # type: ignore[union-attr]
            return pids if len(pids) == 2 and victim not in pids else None

        now = await eventually(replaced, timeout=20)
        assert pool.supervisor.restarts == 1
        await eventually(lambda: registered(now), timeout=30)
        # The dead child's row goes with the reaper's rescue.
        await eventually(lambda: _gone(queue, victim), timeout=10)
    assert await queue.servers() == []


async def _gone(queue: TaskQueue, pid: int) -> bool:
    return pid not in await rows_by_pid(queue)
