"""create_tasks: ids, stored fields, dependency edges and the state a new task starts in."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from taskqueue_core.exceptions import InvalidTaskError, UnknownParent
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, FunctionRef, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import (
    FUNCTION,
    assert_recent,
    create,
    finish,
    get,
    new,
    run,
    start,
    utcnow,
)


async def test_supports_notify_only_on_postgres(repository: TaskRepository, backend: str) -> None:
    assert repository.supports_notify is (backend == "postgres")


async def test_creation_writes_in_parallel_only_on_postgres(
    repository: TaskRepository, backend: str
) -> None:
    assert repository.concurrent_creations == (2 if backend == "postgres" else 1)


async def test_creations_at_once_each_get_their_ids_in_order(repository: TaskRepository) -> None:
    # What the background writer does with a big round (``concurrent_creations`` > 1).
    parts = [[new(f"{part}-{i}") for i in range(300)] for part in "abc"]
    written = await asyncio.gather(*(repository.create_tasks(tasks) for tasks in parts))
    for ids in written:
        assert ids == sorted(ids) and len(ids) == 300
    everything = [task_id for ids in written for task_id in ids]
    assert len(set(everything)) == 900
    stored = await repository.get_tasks(everything)
    assert [t.name for t in stored] == [t.name for tasks in parts for t in tasks]
    assert {t.state for t in stored} == {TaskState.ENQUEUED}


async def test_open_and_close_are_idempotent(repository: TaskRepository) -> None:
    await repository.open()  # already open
    assert await create(repository) >= 1
    await repository.close()
    await repository.close()  # and the fixture closes it once more


async def test_empty_batch_creates_nothing(repository: TaskRepository) -> None:
    assert await repository.create_tasks([]) == []
    assert (await repository.list_tasks()).total == 0


async def test_ids_increase_in_batch_order(repository: TaskRepository) -> None:
    first = await repository.create_tasks([new("a"), new("b"), new("c")])
    second = await repository.create_tasks([new("d")])
    assert first[0] >= 1
    assert first == sorted(first) and len(set(first)) == 3
    assert second[0] > first[-1]
    tasks = await repository.get_tasks(first + second)
    assert [t.name for t in tasks] == ["a", "b", "c", "d"]


async def test_new_task_is_stored_as_given(repository: TaskRepository) -> None:
    task_id = await create(
        repository,
        name="reports.build",
        args=[1, "two", [3]],
        kwargs={"flag": True},
        context={"workspace": 7},
        channel="reports",
        priority=4,
        max_retries=5,
        timeout=12.5,
    )
    task = await get(repository, task_id)
    assert task.id == task_id
    assert task.name == "reports.build"
    assert task.function == FUNCTION
    assert task.state is TaskState.ENQUEUED
    assert task.args == [1, "two", [3]]
    assert task.kwargs == {"flag": True}
    assert task.context == {"workspace": 7}
    assert task.result is None
    assert task.parent_task is None
    assert task.pending_parents == 0
    assert task.channel == "reports"
    assert task.priority == 4
    assert task.retry_count == 0
    assert task.max_retries == 5
    assert task.timeout == 12.5
    assert_recent(task.date_enqueued)
    for later in (
        task.date_started,
        task.date_done,
        task.date_failed,
        task.date_cancelled,
        task.date_stopped,
        task.date_ended,
        task.execution_time,
        task.claimed_by,
        task.exception_name,
        task.exception_message,
        task.exception_info,
    ):
        assert later is None


async def test_defaults_of_new_task(repository: TaskRepository) -> None:
    task = await get(repository, await create(repository))
    assert task.channel == "default"
    assert task.priority == 0
    assert task.max_retries == 3
    assert task.timeout is None
    assert task.args == [] and task.kwargs == {} and task.context == {}


async def test_date_scheduled_defaults_to_creation_time(repository: TaskRepository) -> None:
    task = await get(repository, await create(repository))
    assert task.date_scheduled is not None
    assert_recent(task.date_scheduled)
    assert abs((task.date_scheduled - task.date_enqueued).total_seconds()) < 1.0


async def test_explicit_date_scheduled_is_kept(repository: TaskRepository) -> None:
    when = (utcnow() + timedelta(hours=3)).replace(microsecond=123456)
    task = await get(repository, await create(repository, date_scheduled=when))
    assert task.state is TaskState.ENQUEUED
    assert task.date_scheduled == when


async def test_serialized_function_round_trips(repository: TaskRepository) -> None:
    blob = bytes(range(256)) * 3
    ref = FunctionRef(serialized_function=blob, signature="ab" * 32)
    (task_id,) = await repository.create_tasks([new("blob", function=ref)])
    task = await get(repository, task_id)
    assert task.function.serialized_function == blob
    assert task.function.signature == "ab" * 32
    assert task.function.module_name is None and task.function.function_name is None


async def test_child_of_unfinished_parent_waits(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    task = await get(repository, child)
    assert task.state is TaskState.WAITING
    assert task.pending_parents == 1
    assert task.parent_task == parent


async def test_child_of_done_parent_is_enqueued(repository: TaskRepository) -> None:
    parent = await create(repository)
    await run(repository, parent)
    child = await create(repository, parent_ids=(parent,))
    task = await get(repository, child)
    assert task.state is TaskState.ENQUEUED
    assert task.pending_parents == 0
    assert task.parent_task == parent


async def test_fan_in_counts_parents_not_done(repository: TaskRepository) -> None:
    p1, p2, p3 = await repository.create_tasks([new("p1"), new("p2"), new("p3")])
    await start(repository, p1, p2, p3)
    assert await finish(repository, p1) == [p1]
    child = await create(repository, parent_ids=(p1, p2, p3))
    task = await get(repository, child)
    assert task.state is TaskState.WAITING
    assert task.pending_parents == 2
    assert task.parent_task == p1  # the first parent
    tree = await repository.get_tree(p2)
    assert (child, p2) in tree.edges


async def test_every_parent_gets_an_edge(repository: TaskRepository) -> None:
    p1, p2 = await repository.create_tasks([new("p1"), new("p2")])
    child = await create(repository, parent_ids=(p2, p1))
    assert (await get(repository, child)).parent_task == p2
    for parent in (p1, p2):
        tree = await repository.get_tree(parent)
        assert tree.edges == [(child, parent)]


async def test_batch_parents_point_at_earlier_positions(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks(
        [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
    )
    tasks = {t.id: t for t in await repository.get_tasks([a, b, c])}
    assert tasks[a].state is TaskState.ENQUEUED
    assert (tasks[b].state, tasks[b].parent_task, tasks[b].pending_parents) == (
        TaskState.WAITING,
        a,
        1,
    )
    assert (tasks[c].state, tasks[c].parent_task, tasks[c].pending_parents) == (
        TaskState.WAITING,
        b,
        1,
    )
    tree = await repository.get_tree(a)
    assert sorted(tree.edges) == sorted([(b, a), (c, b)])


async def test_batch_fan_in_mixes_existing_and_batch_parents(repository: TaskRepository) -> None:
    existing = await create(repository, name="existing")
    first, child = await repository.create_tasks(
        [new("first"), new("child", parent_ids=(existing,), batch_parents=(0,))]
    )
    task = await get(repository, child)
    assert task.pending_parents == 2
    # Decision: ``parent_ids`` come before ``batch_parents`` when choosing the first parent.
    assert task.parent_task == existing
    assert (child, first) in (await repository.get_tree(first)).edges
    assert (child, existing) in (await repository.get_tree(existing)).edges


async def test_a_parent_named_twice_counts_once(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent, parent))
    assert (await get(repository, child)).pending_parents == 1
    assert (await repository.get_tree(parent)).edges == [(child, parent)]


async def test_unknown_parent_is_named_and_nothing_is_written(
    repository: TaskRepository,
) -> None:
    existing = await create(repository)
    with pytest.raises(UnknownParent, match="987654"):
        await repository.create_tasks(
            [new("ok"), new("orphan", parent_ids=(existing, 987654)), new("after")]
        )
    page = await repository.list_tasks()
    assert [t.id for t in page.tasks] == [existing]
    assert (await repository.get_tree(existing)).edges == []


@pytest.mark.parametrize("bad", [(1,), (2,), (-1,), (0, 5)])
async def test_batch_parent_must_be_an_earlier_position(
    repository: TaskRepository, bad: tuple[int, ...]
) -> None:
    with pytest.raises(InvalidTaskError):
        await repository.create_tasks([new("a"), new("b", batch_parents=bad), new("c")])
    assert (await repository.list_tasks()).total == 0


async def test_child_of_failed_parent_is_created_failed(repository: TaskRepository) -> None:
    parent = await create(repository)
    await run(repository, parent, TaskState.FAILED, error_name="ValueError", error_message="x")
    child = await create(repository, parent_ids=(parent,))
    task = await get(repository, child)
    assert task.state is TaskState.FAILED
    assert task.exception_name == PARENT_FAILED
    assert str(parent) in (task.exception_message or "")
    assert_recent(task.date_failed)
    assert task.date_ended == task.date_failed


async def test_child_of_cancelled_parent_is_created_cancelled(
    repository: TaskRepository,
) -> None:
    parent = await create(repository)
    await repository.cancel_tasks([parent])
    other = await create(repository)
    child = await create(repository, parent_ids=(other, parent))
    task = await get(repository, child)
    assert task.state is TaskState.CANCELLED
    assert task.exception_name == PARENT_CANCELLED
    assert_recent(task.date_cancelled)
    assert task.date_ended == task.date_cancelled


async def test_batch_descendants_of_failed_parent_are_created_failed(
    repository: TaskRepository,
) -> None:
    parent = await create(repository)
    await run(repository, parent, TaskState.FAILED, error_name="E")
    a, b = await repository.create_tasks(
        [new("a", parent_ids=(parent,)), new("b", batch_parents=(0,))]
    )
    assert [t.state for t in await repository.get_tasks([a, b])] == [TaskState.FAILED] * 2
    assert (await get(repository, b)).exception_name == PARENT_FAILED


async def test_child_of_stopped_parent_waits(repository: TaskRepository) -> None:
    parent = await create(repository)
    await repository.stop_tasks([parent])
    child = await create(repository, parent_ids=(parent,))
    task = await get(repository, child)
    assert task.state is TaskState.WAITING
    assert task.pending_parents == 1


@pytest.mark.parametrize(
    "options",
    [
        {"name": "n" * 256},
        {"channel": "c" * 65},
        {"priority": 2**31},
        # The claim index orders by -priority, and -(-2**31) is out of integer's range.
        {"priority": -(2**31)},
        {"max_retries": -1},
        {"function": FunctionRef(module_name="m" * 256, function_name="f")},
        {"function": FunctionRef(module_name="m")},
        {"timeout": "5"},
        {"parent_ids": ("1",)},
    ],
    ids=[
        "name",
        "channel",
        "priority",
        "lowest_priority",
        "max_retries",
        "module_name",
        "no_function",
        "timeout",
        "parent_id",
    ],
)
@pytest.mark.parametrize("alone", [False, True], ids=["in_a_batch", "alone"])
async def test_values_the_columns_cannot_hold_are_refused(
    repository: TaskRepository, options: dict[str, object], alone: bool
) -> None:
    # Alone and in a batch: a backend may check a single task by another path.
    tasks = [new(**options)] if alone else [new("fine"), new(**options)]  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match=r"^task \d+ \("):
        await repository.create_tasks(tasks)
    assert (await repository.list_tasks()).total == 0


async def test_longest_values_the_columns_hold_are_kept(repository: TaskRepository) -> None:
    task_id = await create(repository, name="n" * 255, channel="c" * 64, priority=2**31 - 1)
    task = await get(repository, task_id)
    assert (task.name, task.channel, task.priority) == ("n" * 255, "c" * 64, 2**31 - 1)
