"""Server: registration, heartbeats, re-registration, the elected reaper, pruning, names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_core.models import (
    FunctionRef,
    NewTask,
    Outcome,
    ServerInfo,
    TaskState,
)
from taskqueue_core.repository import TaskRepository
from taskqueue_core.servers import Server
from tests.pool.support import eventually

HEARTBEAT = 0.1
STALE_AFTER = 0.6


def make_config(**overrides: object) -> QueueConfig:
    values: dict[str, object] = {
        "database_url": "memory://",
        "heartbeat_interval": HEARTBEAT,
        "stale_after": STALE_AFTER,
        "max_workers": 4,
    }
    values.update(overrides)
    return QueueConfig(**values)  # type: ignore[arg-type]


async def new_tasks(repository: TaskRepository, count: int) -> list[int]:
    fn = FunctionRef(module_name="tests.pool.test_servers", function_name="make_config")
    return await repository.create_tasks([NewTask(name=f"t{i}", function=fn) for i in range(count)])


async def row(repository: TaskRepository, name: str) -> ServerInfo | None:
    return next((s for s in await repository.list_servers() if s.server_name == name), None)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_start_registers_and_stop_unregisters(repository: TaskRepository) -> None:
    server = Server(repository, make_config(), name="srv-a", load=lambda: (1, 2))
    await server.start()
    try:
        info = await row(repository, "srv-a")
        assert info is not None
        assert (info.hostname, info.pid, info.max_workers) == (socket.gethostname(), os.getpid(), 4)
        assert (info.active_workers, info.idle_workers, info.is_running) == (1, 2, True)
        assert info.started_at is not None and info.last_heartbeat is not None
    finally:
        await server.stop()
    assert await row(repository, "srv-a") is None
    await server.stop()  # idempotent


async def test_default_name_is_the_configs(repository: TaskRepository) -> None:
    config = make_config()
    async with Server(repository, config) as server:
        assert server.name == config.resolved_server_name
        assert await row(repository, server.name) is not None


async def test_heartbeat_sends_live_counts(repository: TaskRepository) -> None:
    load = [0, 4]
    async with Server(repository, make_config(), name="srv", load=lambda: (load[0], load[1])):
        first = await row(repository, "srv")
        assert first is not None and first.last_heartbeat is not None
        load[:] = [3, 1]

        async def updated() -> ServerInfo | None:
            info = await row(repository, "srv")
            return info if info and (info.active_workers, info.idle_workers) == (3, 1) else None

        later = await eventually(updated, timeout=5)
        assert later.last_heartbeat is not None and later.last_heartbeat > first.last_heartbeat
        assert later.started_at == first.started_at


async def test_registers_again_when_its_row_is_gone(repository: TaskRepository) -> None:
    async with Server(repository, make_config(), name="srv") as server:
        await repository.unregister_server("srv")
        assert await row(repository, "srv") is None
        info = await eventually(lambda: row(repository, "srv"), timeout=5)
        assert info.started_at == server.started_at


async def test_max_workers_change_reaches_the_row(repository: TaskRepository) -> None:
    config = make_config()
    async with Server(repository, config, name="srv"):
        config.max_workers = 9

        async def nine() -> bool:
            info = await row(repository, "srv")
            return info is not None and info.max_workers == 9

        await eventually(nine, timeout=5)


async def test_reaper_rescues_the_tasks_of_a_silent_server(repository: TaskRepository) -> None:
    ids = await new_tasks(repository, 3)
    await repository.register_server(
        ServerInfo(server_name="ghost", hostname="elsewhere", pid=1, max_workers=3)
    )
    claimed = await repository.claim_tasks("ghost", 3)
    assert sorted(t.id for t in claimed) == sorted(ids)
    silent_since = time.monotonic()
    async with Server(repository, make_config(), name="reaper") as server:

        async def rescued() -> bool:
            states = await repository.get_states(ids)
            return all(s is TaskState.ENQUEUED for s in states.values())

        await eventually(rescued, timeout=10)
        took = time.monotonic() - silent_since
        assert sorted(server.rescued) == sorted(ids)
        assert server.is_reaper
    # Silent for stale_after, then found by the next round (one heartbeat interval).
    assert took < STALE_AFTER + HEARTBEAT + 1.0
    for task in await repository.get_tasks(ids):
        assert task.retry_count == 1
        assert task.exception_name == "WorkerLost"
    assert await row(repository, "ghost") is None


async def test_one_of_two_servers_reaps(repository: TaskRepository) -> None:
    ids = await new_tasks(repository, 4)
    claimed = await repository.claim_tasks("ghost", 4)  # a server with no row at all
    assert sorted(t.id for t in claimed) == sorted(ids)
    first = Server(repository, make_config(), name="first")
    second = Server(repository, make_config(), name="second")
    await first.start()
    await second.start()
    try:

        async def settled() -> bool:
            states = await repository.get_states(ids)
            done = all(s is TaskState.ENQUEUED for s in states.values())
            return done and first.is_reaper and second.reaper_rounds >= 3

        await eventually(settled, timeout=10)
        assert not second.is_reaper
        assert sorted(first.rescued) == sorted(ids)
        assert second.rescued == []
        for task in await repository.get_tasks(ids):
            assert task.retry_count == 1  # rescued once, not once per server

        # The reaper leaves: the other takes over.
        await first.stop()
        await eventually(lambda: _true(second.is_reaper), timeout=5)
    finally:
        await first.stop()
        await second.stop()


async def _true(value: bool) -> bool:
    return value


async def test_tasks_of_live_servers_are_left_alone(repository: TaskRepository) -> None:
    ids = await new_tasks(repository, 2)
    async with (
        Server(repository, make_config(), name="busy") as busy,
        Server(repository, make_config(), name="other") as other,
    ):
        await repository.claim_tasks("busy", 2)
        start = busy.reaper_rounds + other.reaper_rounds
        # Rounds spanning several stale_after periods: the heartbeats keep "busy" alive.
        rounds = int(3 * STALE_AFTER / HEARTBEAT)
        await eventually(
            lambda: _true(busy.reaper_rounds + other.reaper_rounds - start >= rounds), timeout=10
        )
        states = await repository.get_states(ids)
        assert set(states.values()) == {TaskState.DOING}
        assert busy.rescued == other.rescued == []


async def test_reaper_prunes_old_finished_tasks(repository: TaskRepository) -> None:
    ids = await new_tasks(repository, 2)
    await repository.claim_tasks("me", 2)
    await repository.complete_tasks("me", [Outcome(task_id=i, state=TaskState.DONE) for i in ids])
    # retention of about 0.1 s: the tasks are soon old enough.
    config = make_config(retention_days=0.1 / 86400)
    async with Server(repository, config, name="me", prune_interval=0.1) as server:

        async def gone() -> bool:
            return not await repository.get_tasks(ids)

        await eventually(gone, timeout=10)
        assert server.pruned == 2


async def test_retention_zero_keeps_everything(repository: TaskRepository) -> None:
    ids = await new_tasks(repository, 1)
    await repository.claim_tasks("me", 1)
    await repository.complete_tasks("me", [Outcome(task_id=ids[0], state=TaskState.DONE)])
    async with Server(
        repository, make_config(retention_days=0), name="me", prune_interval=0.1
    ) as s:
        await eventually(lambda: _true(s.reaper_rounds >= 5), timeout=5)
        assert len(await repository.get_tasks(ids)) == 1
        assert s.pruned == 0


async def test_restart_under_the_same_name_hands_back_its_tasks(
    repository: TaskRepository,
) -> None:
    ids = await new_tasks(repository, 2)
    # The previous run of "fixed" on this host: its process is gone, its row is fresh.
    await repository.register_server(
        ServerInfo(
            server_name="fixed", hostname=socket.gethostname(), pid=dead_pid(), max_workers=2
        )
    )
    await repository.claim_tasks("fixed", 2)
    async with Server(repository, make_config(stale_after=60.0), name="fixed"):
        states = await repository.get_states(ids)
        assert set(states.values()) == {TaskState.ENQUEUED}
        for task in await repository.get_tasks(ids):
            assert task.retry_count == 1
        info = await row(repository, "fixed")
        assert info is not None and info.pid == os.getpid()


async def test_a_name_held_by_a_live_server_is_refused(repository: TaskRepository) -> None:
    ids = await new_tasks(repository, 1)
    await repository.register_server(
        ServerInfo(server_name="taken", hostname="another-host", pid=4242, max_workers=1)
    )
    await repository.claim_tasks("taken", 1)
    server = Server(repository, make_config(stale_after=60.0), name="taken")
    with pytest.raises(ConfigError, match="'taken' is in use by the running server another-host"):
        await server.start()
    assert not server.running
    assert (await repository.get_states(ids))[ids[0]] is TaskState.DOING
    info = await row(repository, "taken")
    assert info is not None and info.hostname == "another-host"


async def test_two_servers_of_one_name_in_a_process_are_refused(
    repository: TaskRepository,
) -> None:
    async with Server(repository, make_config(), name="dup"):
        with pytest.raises(ConfigError, match="already running in this process"):
            await Server(repository, make_config(), name="dup").start()
    # Once stopped, the name is free again.
    async with Server(repository, make_config(), name="dup"):
        pass


def test_bad_prune_interval_is_refused() -> None:
    from taskqueue_core.memory import InMemoryRepository

    with pytest.raises(ConfigError, match="prune_interval"):
        Server(InMemoryRepository(), make_config(), prune_interval=0)


async def test_stop_without_start_does_nothing(repository: TaskRepository) -> None:
    server = Server(repository, make_config(), name="never")
    await server.stop()
    assert await row(repository, "never") is None
    assert not server.running


async def test_a_live_server_hands_back_tasks_it_holds_but_does_not_run(
    repository: TaskRepository,
) -> None:
    ids = await new_tasks(repository, 3)
    running: set[int] = set()
    async with Server(repository, make_config(), name="me", running=lambda: running) as server:
        await repository.claim_tasks("me", 3)
        running.add(ids[0])  # the process runs this one; the other two it lost track of

        async def handed_back() -> bool:
            states = await repository.get_states(ids[1:])
            return set(states.values()) == {TaskState.ENQUEUED}

        await eventually(handed_back, timeout=10)
        assert sorted(server.handed_back) == sorted(ids[1:])
        assert (await repository.get_states([ids[0]]))[ids[0]] is TaskState.DOING
    for task in await repository.get_tasks(ids[1:]):
        assert (task.retry_count, task.exception_name) == (1, "WorkerLost")


async def test_without_a_running_view_a_server_leaves_its_tasks_alone(
    repository: TaskRepository,
) -> None:
    ids = await new_tasks(repository, 1)
    async with Server(repository, make_config(), name="me") as server:
        await repository.claim_tasks("me", 1)
        rounds = int(3 * STALE_AFTER / HEARTBEAT)
        await eventually(lambda: _true(server.reaper_rounds >= rounds), timeout=10)
        assert (await repository.get_states(ids))[ids[0]] is TaskState.DOING
        assert server.handed_back == []
