"""get_tasks, list_tasks, get_tree and stats."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskqueue_core.exceptions import UnknownTask
from taskqueue_core.models import Outcome, ServerInfo, TaskFilter, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import SERVER, create, finish, get, new, run, start, tick


async def test_get_tasks_keeps_the_given_order(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks([new("a"), new("b"), new("c")])
    tasks = await repository.get_tasks([c, 999999, a, b])
    assert [t.id for t in tasks] == [c, a, b]
    assert [t.name for t in tasks] == ["c", "a", "b"]
    assert await repository.get_tasks([]) == []


async def test_list_tasks_newest_first_with_total(repository: TaskRepository) -> None:
    ids = await repository.create_tasks([new(f"t{i}") for i in range(7)])
    page = await repository.list_tasks()
    assert [t.id for t in page.tasks] == ids[::-1]
    assert page.total == 7


async def test_list_tasks_pages(repository: TaskRepository) -> None:
    ids = await repository.create_tasks([new(f"t{i}") for i in range(7)])
    newest_first = ids[::-1]
    first = await repository.list_tasks(limit=3)
    second = await repository.list_tasks(limit=3, offset=3)
    third = await repository.list_tasks(limit=3, offset=6)
    beyond = await repository.list_tasks(limit=3, offset=10)
    assert [t.id for t in first.tasks] == newest_first[:3]
    assert [t.id for t in second.tasks] == newest_first[3:6]
    assert [t.id for t in third.tasks] == newest_first[6:]
    assert beyond.tasks == []
    assert {first.total, second.total, third.total, beyond.total} == {7}


async def test_list_tasks_filters(repository: TaskRepository) -> None:
    parent = await create(repository, name="Reports.Build", channel="reports")
    child_a, child_b, other = await repository.create_tasks(
        [
            new("reports.send", parent_ids=(parent,), channel="mail"),
            new("cleanup", parent_ids=(parent,)),
            new("mail.digest", channel="mail"),
        ]
    )
    assert [t.id for t in await repository.claim_tasks(SERVER, 5, channels=["reports"])] == [parent]
    await finish(repository, parent, TaskState.FAILED, error_name="E")  # children fail too
    await start(repository, other)

    async def ids(**fields: object) -> tuple[list[int], int]:
        page = await repository.list_tasks(TaskFilter(**fields))  # type: ignore[arg-type]
        return [t.id for t in page.tasks], page.total

    assert await ids(states=(TaskState.FAILED,)) == ([child_b, child_a, parent], 3)
    assert await ids(states=(TaskState.DOING, TaskState.ENQUEUED)) == ([other], 1)
    assert await ids(name="REPORTS") == ([child_a, parent], 2)
    assert await ids(channel="mail") == ([other, child_a], 2)
    assert await ids(parent_task=parent) == ([child_b, child_a], 2)
    assert await ids(channel="mail", states=(TaskState.FAILED,)) == ([child_a], 1)
    assert await ids(name="no such") == ([], 0)
    page = await repository.list_tasks(TaskFilter(states=(TaskState.FAILED,)), limit=1, offset=1)
    assert ([t.id for t in page.tasks], page.total) == ([child_a], 3)


async def test_list_tasks_by_enqueue_date(repository: TaskRepository) -> None:
    old = await create(repository, name="old")
    tick()
    middle = await create(repository, name="middle")
    tick()
    new_id = await create(repository, name="new")
    old_t, middle_t, new_t = await repository.get_tasks([old, middle, new_id])
    assert old_t.date_enqueued < middle_t.date_enqueued < new_t.date_enqueued

    async def ids(**fields: object) -> list[int]:
        page = await repository.list_tasks(TaskFilter(**fields))  # type: ignore[arg-type]
        return [t.id for t in page.tasks]

    assert await ids(enqueued_after=middle_t.date_enqueued - timedelta(microseconds=1)) == [
        new_id,
        middle,
    ]
    assert await ids(enqueued_before=middle_t.date_enqueued + timedelta(microseconds=1)) == [
        middle,
        old,
    ]
    # Decision: a half-open range, ``enqueued_after`` inclusive and ``enqueued_before`` exclusive.
    assert await ids(
        enqueued_after=middle_t.date_enqueued, enqueued_before=new_t.date_enqueued
    ) == [middle]


async def test_get_tree_has_descendants_and_their_edges(repository: TaskRepository) -> None:
    outside = await create(repository, name="outside")
    root, left, right, join, leaf = await repository.create_tasks(
        [
            new("root"),
            new("left", batch_parents=(0,)),
            new("right", batch_parents=(0,)),
            new("join", batch_parents=(1, 2), parent_ids=(outside,)),
            new("leaf", batch_parents=(3,)),
        ]
    )
    tree = await repository.get_tree(root)
    assert sorted(t.id for t in tree.tasks) == [root, left, right, join, leaf]
    assert sorted(tree.edges) == sorted(
        [(left, root), (right, root), (join, left), (join, right), (leaf, join)]
    )
    sub = await repository.get_tree(right)
    assert sorted(t.id for t in sub.tasks) == [right, join, leaf]
    assert sorted(sub.edges) == sorted([(join, right), (leaf, join)])
    lone = await repository.get_tree(leaf)
    assert ([t.id for t in lone.tasks], lone.edges) == ([leaf], [])
    from_outside = await repository.get_tree(outside)
    assert sorted(t.id for t in from_outside.tasks) == [outside, join, leaf]
    assert sorted(from_outside.edges) == sorted([(join, outside), (leaf, join)])


async def test_get_tree_of_a_missing_task(repository: TaskRepository) -> None:
    with pytest.raises(UnknownTask):
        await repository.get_tree(999999)


async def test_stats_counts(repository: TaskRepository) -> None:
    empty = await repository.stats()
    assert {k: v for k, v in empty.by_state.items() if v} == {}
    assert (empty.done_last_minute, empty.failed_last_minute, empty.servers_running) == (0, 0, 0)

    done, failed, doing, _, _ = await repository.create_tasks(
        [new("d"), new("f"), new("g"), new("qa", channel="a"), new("qb", channel="a")]
    )
    await create(repository, parent_ids=(doing,), channel="b")
    await repository.claim_tasks(SERVER, 10, channels=["default"])
    await repository.complete_tasks(
        SERVER, [Outcome(done, TaskState.DONE), Outcome(failed, TaskState.FAILED, error_name="E")]
    )
    await repository.register_server(
        ServerInfo(server_name="one", hostname="h", pid=1, max_workers=4)
    )
    await repository.register_server(
        ServerInfo(server_name="two", hostname="h", pid=2, max_workers=2)
    )
    await repository.heartbeat("one", 3, 1)
    await repository.heartbeat("two", 1, 1)

    stats = await repository.stats()
    assert {k: v for k, v in stats.by_state.items() if v} == {
        "done": 1,
        "failed": 1,
        "doing": 1,
        "enqueued": 2,
        "waiting": 1,
    }
    by_channel = {
        c: {s: n for s, n in counts.items() if n} for c, counts in stats.by_channel.items()
    }
    assert {c: counts for c, counts in by_channel.items() if counts} == {
        "default": {"done": 1, "failed": 1, "doing": 1},
        "a": {"enqueued": 2},
        "b": {"waiting": 1},
    }
    assert stats.done_last_minute == 1
    assert stats.failed_last_minute == 1
    assert stats.servers_running == 2
    assert (stats.workers_total, stats.workers_active, stats.workers_idle) == (6, 4, 2)


async def test_stats_lists_every_state(repository: TaskRepository) -> None:
    # Decision: by_state always has a key for every state, zero included.
    await create(repository)
    stats = await repository.stats()
    assert set(stats.by_state) == {s.value for s in TaskState}
    assert stats.by_state["enqueued"] == 1 and stats.by_state["doing"] == 0


async def test_get_task_after_changes_reads_the_latest(repository: TaskRepository) -> None:
    task_id = await create(repository)
    assert (await get(repository, task_id)).state is TaskState.ENQUEUED
    await run(repository, task_id, result=[1])
    assert (await get(repository, task_id)).result == [1]
