"""SlotExecutor: slots start on demand, retire when idle, and abandoned ones are replaced."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from taskqueue_core.config import QueueConfig
from taskqueue_core.pool import SlotExecutor
from tests.pool.support import eventually


def make_config(**overrides: object) -> QueueConfig:
    values: dict[str, object] = {
        "database_url": "memory://",
        "max_workers": 2,
        "worker_idle_timeout": 60.0,
    }
    values.update(overrides)
    return QueueConfig(**values)  # type: ignore[arg-type]


async def value(x: object) -> object:
    return x


def slot_threads(executor: SlotExecutor) -> list[str]:
    prefix = "test-slot-"
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def config() -> QueueConfig:
    return make_config()


@pytest.fixture
def executor(config: QueueConfig) -> SlotExecutor:
    pool = SlotExecutor(config, name="test-slot")
    yield pool  # type: ignore[misc]
    pool.shutdown(wait=False, cancel_futures=True)


async def test_slots_start_on_demand_up_to_max_workers(executor: SlotExecutor) -> None:
    assert executor.slots == 0 and slot_threads(executor) == []
    release = threading.Event()
    loop = asyncio.get_running_loop()
    calls = [loop.run_in_executor(executor, release.wait, 10) for _ in range(3)]
    await eventually(lambda: value(executor.busy == 2))
    # Two slots (max_workers); the third call waits for one of them.
    assert executor.slots == 2 and len(slot_threads(executor)) == 2
    release.set()
    assert await asyncio.gather(*calls) == [True, True, True]
    assert executor.slots == 2 and executor.idle == 2 and executor.busy == 0
    assert executor.started == 2


async def test_the_most_recently_idle_slot_is_reused(executor: SlotExecutor) -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()
    first = [loop.run_in_executor(executor, release.wait, 10) for _ in range(2)]
    await eventually(lambda: value(executor.busy == 2))
    release.set()
    await asyncio.gather(*first)
    await eventually(lambda: value(executor.idle == 2))
    names = [
        await loop.run_in_executor(executor, lambda: threading.current_thread().name)
        for _ in range(5)
    ]
    # Light load reuses one slot, so that the other can reach its idle timeout.
    assert len(set(names)) == 1


async def test_idle_slots_retire_and_come_back(config: QueueConfig, executor: SlotExecutor) -> None:
    config.worker_idle_timeout = 0.2
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(executor, time.sleep, 0.05) for _ in range(2)))
    assert executor.slots == 2
    await eventually(lambda: value(executor.slots == 0), timeout=5)
    await eventually(lambda: value(slot_threads(executor) == []), timeout=5)
    assert await loop.run_in_executor(executor, lambda: 42) == 42
    assert executor.slots == 1 and executor.started == 3


async def test_idle_timeout_is_read_live(config: QueueConfig, executor: SlotExecutor) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, time.sleep, 0.01)
    assert executor.slots == 1
    config.worker_idle_timeout = 0.1  # the slot already waits with the old 60 s
    await eventually(lambda: value(executor.slots == 0), timeout=5)


async def test_raising_max_workers_adds_slots(config: QueueConfig, executor: SlotExecutor) -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()
    calls = [loop.run_in_executor(executor, release.wait, 10) for _ in range(2)]
    await eventually(lambda: value(executor.busy == 2))
    config.max_workers = 3
    calls.append(loop.run_in_executor(executor, release.wait, 10))
    await eventually(lambda: value(executor.busy == 3))
    release.set()
    await asyncio.gather(*calls)


async def test_lowering_max_workers_retires_the_surplus(
    config: QueueConfig, executor: SlotExecutor
) -> None:
    config.max_workers = 3
    loop = asyncio.get_running_loop()
    release = threading.Event()
    calls = [loop.run_in_executor(executor, release.wait, 10) for _ in range(3)]
    await eventually(lambda: value(executor.busy == 3))
    config.max_workers = 1
    release.set()
    await asyncio.gather(*calls)
    assert executor.slots == 1


async def test_an_abandoned_call_frees_its_slot(
    config: QueueConfig, executor: SlotExecutor
) -> None:
    config.max_workers = 1
    loop = asyncio.get_running_loop()
    stuck = threading.Event()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(executor, stuck.wait, 30), 0.1)
    await eventually(lambda: value(executor.abandoned == 1))
    # The only slot is stuck in a call nobody waits for: a fresh one serves the next call.
    started = time.monotonic()
    assert await loop.run_in_executor(executor, lambda: "served") == "served"
    assert time.monotonic() - started < 2
    assert executor.slots == 1 and len(slot_threads(executor)) == 2
    stuck.set()
    # Back from its call, the stray thread finds the slot count full and exits.
    await eventually(lambda: value(executor.abandoned == 0 and len(slot_threads(executor)) == 1))
    assert executor.slots == 1


async def test_a_backlog_call_waiting_for_an_abandoned_slot_starts(
    config: QueueConfig, executor: SlotExecutor
) -> None:
    config.max_workers = 1
    loop = asyncio.get_running_loop()
    stuck = threading.Event()
    blocked = loop.run_in_executor(executor, stuck.wait, 30)
    waiting = loop.run_in_executor(executor, lambda: "next")
    await eventually(lambda: value(executor.busy == 1))
    blocked.cancel()  # what a task timeout does to the call it awaited
    assert await asyncio.wait_for(waiting, 5) == "next"
    stuck.set()


async def test_context_and_exceptions_cross_the_thread(executor: SlotExecutor) -> None:
    loop = asyncio.get_running_loop()

    def fail() -> None:
        raise ValueError("from a slot")

    with pytest.raises(ValueError, match="from a slot"):
        await loop.run_in_executor(executor, fail)


async def test_shutdown_refuses_new_work_and_ends_idle_slots(executor: SlotExecutor) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, time.sleep, 0.01)
    executor.shutdown(wait=True)
    assert executor.slots == 0 and slot_threads(executor) == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(time.sleep, 0)


async def test_slot_threads_are_daemons(executor: SlotExecutor) -> None:
    loop = asyncio.get_running_loop()
    daemon = await loop.run_in_executor(executor, lambda: threading.current_thread().daemon)
    assert daemon is True
