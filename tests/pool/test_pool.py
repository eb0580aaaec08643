"""WorkerPool in this process: runtime settings, slots, server rows, election, stop, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.models import ServerInfo, TaskState
from taskqueue_core.pool import WorkerPool
from taskqueue_core.queue import TaskCall, TaskQueue
from tests.pool import tasks
from tests.pool.support import eventually


def make_config(database_url: str, **overrides: object) -> QueueConfig:
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": "pool-tests",
        "max_workers": 2,
        "heartbeat_interval": 0.1,
        "stale_after": 0.6,
        "polling_interval": 0.1,
        "worker_idle_timeout": 60.0,
        "shutdown_grace": 5.0,
    }
    values.update(overrides)
    return QueueConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fresh_tasks() -> Iterator[None]:
    tasks.reset()
    yield
    tasks.reset()


@pytest.fixture
async def queue(backend: str, database_url: str) -> AsyncIterator[TaskQueue]:
    config = make_config(database_url)
    repository = InMemoryRepository() if backend == "memory" else None
    async with TaskQueue(config, repository=repository) as opened:
        yield opened


async def true(value: object) -> bool:
    return bool(value)


async def server_row(queue: TaskQueue, name: str) -> ServerInfo | None:
    return next((s for s in await queue.servers() if s.server_name == name), None)


async def test_runtime_max_workers_takes_effect(queue: TaskQueue) -> None:
    async with WorkerPool(queue) as pool:
        await queue.enqueue_many([TaskCall(tasks.hold, (f"t{i}", "g")) for i in range(6)])
        await eventually(lambda: true(pool.active == 2))
        queue.config.max_workers = 4
        await eventually(lambda: true(pool.active == 4))
        queue.config.max_workers = 1
        tasks.GATES["g"].set()
        # The remaining tasks now run one at a time.
        refs = [queue.ref(i) for i in range(1, 7)]
        for ref in refs:
            await ref.wait(timeout=10)
        assert sorted(tasks.STARTED) == [f"t{i}" for i in range(6)]
        row = await eventually(lambda: server_row(queue, queue.config.resolved_server_name))
        await eventually(lambda: _max_workers_is(queue, 1))
        assert row is not None


async def _max_workers_is(queue: TaskQueue, value: int) -> bool:
    row = await server_row(queue, queue.config.resolved_server_name)
    return row is not None and row.max_workers == value


async def test_runtime_task_timeout_takes_effect(queue: TaskQueue) -> None:
    async with WorkerPool(queue):
        first = await queue.enqueue(tasks.nap, 0.3, max_retries=0)
        assert await first.wait(timeout=10) == 0.3
        queue.config.task_timeout = 0.1
        second = await queue.enqueue(tasks.nap, 0.3, max_retries=0)
        with pytest.raises(Exception) as raised:
            await second.wait(timeout=10)
        task = await queue.get_task(await second.get_task_id())
        assert task.state is TaskState.FAILED and task.exception_name == "TimeoutError"
        assert raised.type.__name__ == "TaskFailed"


async def test_idle_slots_retire_and_come_back_on_demand(queue: TaskQueue) -> None:
    queue.config.max_workers = 3
    async with WorkerPool(queue) as pool:
        assert pool.executor is not None
        name = queue.config.resolved_server_name
        refs = await queue.enqueue_many(
            [TaskCall(tasks.hold_sync, (f"s{i}", "g")) for i in range(3)]
        )
        await eventually(lambda: true(pool.active == 3 and pool.executor.busy == 3))  # type: ignore[union-attr]
        row = await eventually(lambda: _counts_are(queue, name, 3, 0))
        assert row
        tasks.GATES["g"].set()
        for ref in refs:
            await ref.wait(timeout=10)
        # Three warm slots, idle; the heartbeat reports them.
        await eventually(lambda: _counts_are(queue, name, 0, 3))
        threads = [t for t in threading.enumerate() if t.name.startswith("taskqueue-slot")]
        assert len(threads) == 3
        # A shorter idle timeout, set at run time, retires them: their threads exit.
        queue.config.worker_idle_timeout = 0.2
        await eventually(lambda: true(pool.executor.slots == 0), timeout=5)  # type: ignore[union-attr]
        await eventually(lambda: _counts_are(queue, name, 0, 0))
        assert not [t for t in threading.enumerate() if t.name.startswith("taskqueue-slot")]
        # Demand brings a slot back.
        ref = await queue.enqueue(tasks.thread_name)
        assert (await ref.wait(timeout=10)).startswith("taskqueue-slot")
        assert pool.executor.started == 4


async def _counts_are(queue: TaskQueue, name: str, active: int, idle: int) -> bool:
    row = await server_row(queue, name)
    return row is not None and (row.active_workers, row.idle_workers) == (active, idle)


async def test_registration_row_lives_as_long_as_the_pool(queue: TaskQueue) -> None:
    name = queue.config.resolved_server_name
    pool = WorkerPool(queue)
    await pool.start()
    try:
        assert pool.server is not None and pool.server.name == name
        row = await server_row(queue, name)
        assert row is not None
        assert (row.pid, row.max_workers, row.is_running) == (os.getpid(), 2, True)
        first_beat = row.last_heartbeat
        later = await eventually(lambda: _beat_after(queue, name, first_beat))
        assert later
    finally:
        await pool.stop()
    assert await server_row(queue, name) is None
    await pool.stop()  # idempotent


async def _beat_after(queue: TaskQueue, name: str, when: object) -> bool:
    row = await server_row(queue, name)
    return row is not None and row.last_heartbeat is not None and row.last_heartbeat > when  # type: ignore[operator]


async def test_two_pools_elect_one_reaper(backend: str, database_url: str) -> None:
    repository = InMemoryRepository() if backend == "memory" else None
    first_config = make_config(database_url, server_name="pool-one")
    second_config = make_config(database_url, server_name="pool-two")
    async with TaskQueue(first_config, repository=repository) as q1:
        async with TaskQueue(second_config, repository=repository or None) as q2:
            async with WorkerPool(q1) as one, WorkerPool(q2) as two:
                assert one.server is not None and two.server is not None
                await eventually(
                    lambda: true(one.server.reaper_rounds >= 3 and two.server.reaper_rounds >= 3)  # type: ignore[union-attr]
                )
                assert [one.server.is_reaper, two.server.is_reaper] == [True, False]


async def test_stop_hands_running_tasks_back(queue: TaskQueue) -> None:
    pool = WorkerPool(queue)
    await pool.start()
    quick = await queue.enqueue(tasks.nap, 0.3)
    slow = await queue.enqueue(tasks.hold, "slow", "never")
    await eventually(lambda: true(pool.active == 2))
    await pool.stop(grace=1.0)
    # Finished within the grace period, or handed back without counting an attempt.
    assert await quick.get_state() is TaskState.DONE
    task = await queue.get_task(await slow.get_task_id())
    assert (task.state, task.retry_count, task.exception_name) == (
        TaskState.ENQUEUED,
        0,
        "WorkerShutdown",
    )
    assert await queue.servers() == []
    assert not pool.running


async def test_stop_writes_pending_creations(queue: TaskQueue) -> None:
    pool = WorkerPool(queue)
    await pool.start()
    refs = [queue.add_task(tasks.nap, 0) for _ in range(5)]
    await pool.stop(grace=0)
    assert queue.pending_count == 0
    for ref in refs:
        assert await ref.get_task_id() > 0


async def test_a_second_stop_request_hurries_the_first(queue: TaskQueue) -> None:
    pool = WorkerPool(queue)
    await pool.start()
    await queue.enqueue(tasks.hold, "slow", "never")
    await eventually(lambda: true(pool.active == 1))
    stopping = pool.request_stop(grace=60)
    assert not pool.running
    # The second request returns the same stop, now in a hurry: far less than 60 s.
    assert pool.request_stop(grace=0) is stopping
    await asyncio.wait_for(asyncio.shield(stopping), timeout=10)
    states = {t.state for t in (await queue.list_tasks()).tasks}
    assert states == {TaskState.ENQUEUED}


async def test_an_embedded_pool_installs_no_signal_handlers(queue: TaskQueue) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    async with WorkerPool(queue):
        assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_sigterm_stops_a_pool_that_owns_the_signals(queue: TaskQueue) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    pool = WorkerPool(queue, install_signal_handlers=True)
    runner = asyncio.create_task(pool.run_forever())
    await eventually(lambda: true(pool.running))
    assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    ref = await queue.enqueue(tasks.hold, "slow", "never")
    await eventually(lambda: true(pool.active == 1))
    os.kill(os.getpid(), signal.SIGTERM)
    # The grace (5 s) is cut short by a second signal.
    await eventually(lambda: true(not pool.running))
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, timeout=10)
    assert await ref.get_state() is TaskState.ENQUEUED
    assert await queue.servers() == []
    # The handlers are gone with the pool.
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_an_ignored_signal_stays_ignored(queue: TaskQueue) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        async with WorkerPool(queue, install_signal_handlers=True):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


async def test_imports_are_imported_at_start(queue: TaskQueue) -> None:
    queue.config.imports = ("tests.pool.sample_imported",)
    with pytest.raises(ConfigError, match=r"cannot import 'tests\.pool\.sample_imported'"):
        await WorkerPool(queue).start()
    queue.config.imports = ("json",)
    async with WorkerPool(queue):
        pass


def test_bad_arguments_are_refused() -> None:
    queue = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
    with pytest.raises(ConfigError, match="processes must be a whole number >= 1, got 0"):
        WorkerPool(queue, processes=0)
    with pytest.raises(ConfigError, match="processes > 1 needs a database"):
        WorkerPool(queue, processes=2)
    with pytest.raises(ConfigError, match="channels must be a list"):
        WorkerPool(queue, channels="default")


async def test_a_pool_starts_once(queue: TaskQueue) -> None:
    async with WorkerPool(queue) as pool:
        with pytest.raises(RuntimeError, match="starts once"):
            await pool.start()
