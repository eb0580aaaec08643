"""Servers (register, heartbeat, unregister, list) and rescue_stale."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from taskqueue_core.models import PARENT_FAILED, ServerInfo, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import assert_recent, create, get, new, states, tick, utcnow


def server(name: str, **fields: object) -> ServerInfo:
    return ServerInfo(server_name=name, hostname="host-1", pid=1234, max_workers=4, **fields)  # type: ignore[arg-type]


async def test_register_and_list_servers(repository: TaskRepository) -> None:
    await repository.register_server(server("b", version="1.2.3"))
    await repository.register_server(
        server("a", is_running=False, last_heartbeat=utcnow() - timedelta(days=1))
    )
    listed = await repository.list_servers()
    assert [s.server_name for s in listed] == ["a", "b"]
    b = listed[1]
    assert (b.hostname, b.pid, b.max_workers, b.version) == ("host-1", 1234, 4, "1.2.3")
    for info in listed:
        assert info.is_running is True
        assert_recent(info.last_heartbeat)
        assert_recent(info.started_at)


async def test_register_keeps_a_given_start_time(repository: TaskRepository) -> None:
    started = (utcnow() - timedelta(minutes=5)).replace(microsecond=0)
    await repository.register_server(server("a", started_at=started))
    (info,) = await repository.list_servers()
    assert info.started_at == started


async def test_register_replaces_the_row_of_the_same_name(repository: TaskRepository) -> None:
    await repository.register_server(server("a"))
    await repository.register_server(
        ServerInfo(server_name="a", hostname="host-2", pid=99, max_workers=16)
    )
    (info,) = await repository.list_servers()
    assert (info.hostname, info.pid, info.max_workers) == ("host-2", 99, 16)


async def test_heartbeat_records_counts_and_time(repository: TaskRepository) -> None:
    await repository.register_server(server("a"))
    (before,) = await repository.list_servers()
    tick()
    assert await repository.heartbeat("a", 3, 1) is True
    (after,) = await repository.list_servers()
    assert (after.active_workers, after.idle_workers) == (3, 1)
    assert after.last_heartbeat is not None and before.last_heartbeat is not None
    assert after.last_heartbeat > before.last_heartbeat


async def test_heartbeat_of_an_unknown_server_is_false(repository: TaskRepository) -> None:
    assert await repository.heartbeat("nobody", 0, 0) is False
    assert await repository.list_servers() == []


async def test_unregister_deletes_the_row(repository: TaskRepository) -> None:
    await repository.register_server(server("a"))
    await repository.register_server(server("b"))
    await repository.unregister_server("a")
    await repository.unregister_server("never-registered")
    assert [s.server_name for s in await repository.list_servers()] == ["b"]
    assert await repository.heartbeat("a", 0, 0) is False


async def test_rescue_stale_reenqueues_tasks_of_dead_servers(repository: TaskRepository) -> None:
    await repository.register_server(server("dead"))
    await repository.register_server(server("alive"))
    await repository.register_server(server("dead-idle"))
    lost, kept, orphan = await repository.create_tasks(
        [new("lost"), new("kept", channel="b"), new("orphan", channel="c")]
    )
    await repository.claim_tasks("dead", 1, channels=["default"])
    await repository.claim_tasks("alive", 1, channels=["b"])
    await repository.claim_tasks("ghost", 1, channels=["c"])  # never registered
    stale_before = tick()
    tick()
    assert await repository.heartbeat("alive", 1, 0) is True

    rescued = await repository.rescue_stale(stale_before)
    assert sorted(rescued) == sorted([lost, orphan])
    for task in await repository.get_tasks([lost, orphan]):
        assert task.state is TaskState.ENQUEUED
        assert task.retry_count == 1
    assert (await get(repository, kept)).state is TaskState.DOING
    assert [s.server_name for s in await repository.list_servers()] == ["alive"]
    # Rescued tasks run again.
    again = await repository.claim_tasks("alive", 10)
    assert sorted(t.id for t in again) == sorted([lost, orphan])
    assert await repository.rescue_stale(stale_before) == []


async def test_rescue_ignores_tasks_started_after_the_limit(repository: TaskRepository) -> None:
    await repository.register_server(server("slow"))
    task_id = await create(repository)
    stale_before = tick()
    tick()
    await repository.claim_tasks("slow", 1)  # its heartbeat is old, but this claim is new
    assert await repository.rescue_stale(stale_before) == []
    assert (await get(repository, task_id)).state is TaskState.DOING


async def test_rescue_fails_tasks_whose_attempts_are_used_up(repository: TaskRepository) -> None:
    await repository.register_server(server("dead"))
    task_id = await create(repository, max_retries=1)
    child, grandchild = await repository.create_tasks(
        [new("child", parent_ids=(task_id,)), new("grandchild", batch_parents=(0,))]
    )
    await repository.claim_tasks("dead", 1)
    first = tick()
    tick()
    assert await repository.rescue_stale(first) == [task_id]
    assert (await get(repository, task_id)).retry_count == 1

    await repository.register_server(server("dead"))
    await repository.claim_tasks("dead", 1)
    second = tick()
    tick()
    assert task_id in await repository.rescue_stale(second)
    task = await get(repository, task_id)
    assert task.state is TaskState.FAILED
    assert task.exception_name == "WorkerLost"
    assert_recent(task.date_failed)
    assert await states(repository, child, grandchild) == [TaskState.FAILED] * 2
    assert (await get(repository, grandchild)).exception_name == PARENT_FAILED


async def test_rescue_with_max_retries_zero_fails_at_once(repository: TaskRepository) -> None:
    task_id = await create(repository, max_retries=0)
    await repository.claim_tasks("ghost", 1)
    limit = tick()
    assert await repository.rescue_stale(limit) == [task_id]
    assert (await get(repository, task_id)).state is TaskState.FAILED


async def test_concurrent_rescues_do_the_work_once(repository: TaskRepository) -> None:
    ids = await repository.create_tasks([new(str(i)) for i in range(4)])
    await repository.claim_tasks("ghost", 10)
    limit = tick()
    results = await asyncio.gather(*(repository.rescue_stale(limit) for _ in range(3)))
    rescued = [task_id for result in results for task_id in result]
    assert sorted(rescued) == ids
    for task in await repository.get_tasks(ids):
        assert (task.state, task.retry_count) == (TaskState.ENQUEUED, 1)
