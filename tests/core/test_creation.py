"""add_task: batched background creation, parents, flush/close, and failure isolation."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskqueue_core import (
    HookRegistry,
    InvalidTaskError,
    NewTask,
    QueueClosed,
    QueueConfig,
    RepositoryError,
    TaskQueue,
    TaskRef,
    TaskState,
    UnknownParent,
)
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.repository import TaskRepository
from tests.core.conftest import CountingRepository
from tests.core.tasks import add, send_email


async def test_one_tick_of_1000_add_task_is_one_round_of_writes(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    refs = [queue.add_task(add, i, i) for i in range(1000)]
    assert counting.create_calls == []  # nothing written yet: add_task returned at once
    ids = await asyncio.wait_for(asyncio.gather(*(r.get_task_id() for r in refs)), 30)
    # One call, or (PostgreSQL) two halves written at once.
    ways = counting.concurrent_creations
    assert [len(c) for c in counting.create_calls] == [1000 // ways] * ways
    assert len(set(ids)) == 1000
    stored = await queue.repository.get_tasks(ids)
    assert [t.args for t in stored] == [[i, i] for i in range(1000)]
    assert {t.state for t in stored} == {TaskState.ENQUEUED}
    assert all(t.name == "tests.core.tasks.add" for t in stored)


async def test_adds_during_a_write_go_in_the_next_single_call(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    first = [queue.add_task(add, i, 0) for i in range(10)]
    await asyncio.sleep(0)  # the flusher starts its write
    second = [queue.add_task(add, i, 1) for i in range(10)]
    await asyncio.wait_for(queue.flush(), 30)
    assert [len(c) for c in counting.create_calls] == [10, 10]
    assert all(r.created for r in first + second)


async def test_parent_before_children_in_one_batch(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    process = queue.add_task(send_email, "ada@example.com")
    confirm = queue.add_task(send_email, "confirm", parent=process)
    inventory = queue.add_task(send_email, "inventory", parent=process)
    await asyncio.wait_for(queue.flush(), 30)
    assert len(counting.create_calls) == 1
    batch = counting.create_calls[0]
    assert batch[1].batch_parents == (0,) and batch[2].batch_parents == (0,)
    pid, cid, iid = [await r.get_task_id() for r in (process, confirm, inventory)]
    children = await queue.repository.get_tasks([cid, iid])
    assert [c.parent_task for c in children] == [pid, pid]
    assert [c.state for c in children] == [TaskState.WAITING, TaskState.WAITING]
    tree = await queue.get_tree(pid)
    assert sorted(tree.edges) == sorted([(cid, pid), (iid, pid)])


async def test_chain_and_fan_in_through_refs(queue: TaskQueue) -> None:
    a = queue.add_task(add, 1, 1)
    b = queue.add_task(add, 2, 2, parent=a)
    c = queue.add_task(add, 3, 3, parent=b)
    d = queue.add_task(add, 4, 4)
    join = queue.add_task(add, 0, 0, parent=[c, d, c])  # a repeated parent counts once
    ids = [await asyncio.wait_for(r.get_task_id(), 30) for r in (a, b, c, d, join)]
    tree = await queue.get_tree(ids[0])
    assert {t.id for t in tree.tasks} == set(ids) - {ids[3]}
    assert (ids[1], ids[0]) in tree.edges and (ids[2], ids[1]) in tree.edges
    joined = (await queue.get_tree(ids[3])).edges
    assert sorted(joined) == [(ids[4], ids[3])]
    stored = await queue.get_task(ids[4])
    assert stored.pending_parents == 2
    assert stored.state is TaskState.WAITING


async def test_parents_by_id_and_across_batches(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    root = await queue.enqueue(add, 0, 0)
    root_id = await root.get_task_id()
    earlier = queue.add_task(add, 1, 0)
    await asyncio.wait_for(queue.flush(), 30)
    # parent named by id, by a ref written in an earlier batch, and by one in this batch
    fresh = queue.add_task(add, 2, 0)
    child = queue.add_task(add, 3, 0, parent=[root_id, earlier, fresh])
    await asyncio.wait_for(queue.flush(), 30)
    last = counting.create_calls[-1]
    assert last[1].parent_ids == (root_id, await earlier.get_task_id())
    assert last[1].batch_parents == (0,)
    stored = await queue.get_task(await child.get_task_id())
    assert stored.parent_task == root_id
    assert stored.pending_parents == 3


async def test_options_are_stored(queue: TaskQueue) -> None:
    eta = datetime.now(UTC) + timedelta(hours=2)
    ref = queue.add_task(
        send_email,
        "ada@example.com",
        subject="hi",
        name="welcome mail",
        channel="mail",
        priority=7,
        eta=eta,
        max_retries=5,
        timeout=12.5,
    )
    delayed = queue.add_task(send_email, "bob@example.com", delay=timedelta(minutes=10))
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.name == "welcome mail"
    assert task.kwargs == {"subject": "hi"}
    assert (task.channel, task.priority, task.max_retries, task.timeout) == ("mail", 7, 5, 12.5)
    assert task.date_scheduled is not None
    assert abs((task.date_scheduled - eta).total_seconds()) < 0.01
    later = await queue.get_task(await delayed.get_task_id())
    assert later.date_scheduled is not None
    wait = (later.date_scheduled - later.date_enqueued).total_seconds()
    assert 590 < wait < 610
    default = queue.add_task(add, 1, 2)
    stored = await queue.get_task(await default.get_task_id())
    assert stored.max_retries == queue.config.max_retries
    assert stored.timeout is None  # the worker reads config.task_timeout when it runs it


async def test_arguments_are_a_snapshot_of_add_task_time(queue: TaskQueue) -> None:
    payload = {"items": [1, 2]}
    ref = queue.add_task(send_email, "x", subject=payload)  # type: ignore[arg-type]
    payload["items"].append(3)  # after add_task returned, before the write
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.kwargs == {"subject": {"items": [1, 2]}}


async def test_flush_waits_for_everything_added_so_far(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    refs = [queue.add_task(add, i, 0) for i in range(50)]
    assert queue.pending_count == 50
    await asyncio.wait_for(queue.flush(), 30)
    assert queue.pending_count == 0
    assert all(r.created for r in refs)
    await asyncio.wait_for(queue.flush(), 30)  # nothing pending: returns at once


async def test_close_writes_pending_creations(
    counting: CountingRepository,
    config: QueueConfig,
    make_repository: Callable[[], TaskRepository],
) -> None:
    queue = TaskQueue(config, repository=counting)  # type: ignore[arg-type]
    await queue.open()
    refs = [queue.add_task(add, i, 0) for i in range(20)]
    await asyncio.wait_for(queue.close(), 30)
    assert all(r.created for r in refs)
    ids = [r.task_id for r in refs]
    reader = TaskQueue(config, repository=make_repository())
    async with reader:
        stored = await reader.repository.get_tasks([i for i in ids if i is not None])
    assert len(stored) == 20


async def test_closed_and_unopened_queues_refuse(
    counting: CountingRepository, config: QueueConfig
) -> None:
    queue = TaskQueue(config, repository=counting)  # type: ignore[arg-type]
    with pytest.raises(QueueClosed, match="not open yet"):
        queue.add_task(add, 1, 2)
    await queue.open()
    await queue.open()  # idempotent
    ref = queue.add_task(add, 1, 2)
    await queue.close()
    await queue.close()  # idempotent
    assert ref.created
    with pytest.raises(QueueClosed, match="closed"):
        queue.add_task(add, 1, 2)
    with pytest.raises(QueueClosed):
        await queue.enqueue(add, 1, 2)
    with pytest.raises(QueueClosed):
        await queue.get_task(1)
    with pytest.raises(QueueClosed):
        await queue.stats()
    with pytest.raises(QueueClosed):
        await ref.wait()
    with pytest.raises(QueueClosed):
        ref.cancel()


async def test_unknown_parent_id_fails_only_its_task_and_descendants(
    queue: TaskQueue, counting: CountingRepository, errors: list[str]
) -> None:
    ok = queue.add_task(add, 1, 1)
    orphan = queue.add_task(add, 2, 2, parent=987654)
    grandchild = queue.add_task(add, 3, 3, parent=orphan)
    sibling = queue.add_task(add, 4, 4, parent=ok)
    await asyncio.wait_for(queue.flush(), 30)
    with pytest.raises(UnknownParent, match="parent task 987654 does not exist"):
        await orphan.get_task_id()
    with pytest.raises(UnknownParent, match=r"parent <TaskRef creation failed 'tests.core"):
        await grandchild.get_task_id()
    assert ok.created and sibling.created
    stored = await queue.get_task(await sibling.get_task_id())
    assert stored.parent_task == await ok.get_task_id()
    # one failing call, one read to find the missing parent, one call for the rest
    assert [len(c) for c in counting.create_calls] == [4, 2]
    assert any("987654" in m for m in errors)


async def test_a_task_refused_by_the_database_does_not_lose_its_batch(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    counting.refuse("poison")
    refs = [queue.add_task(add, i, 0) for i in range(100)]
    poison = queue.add_task(add, -1, 0, name="poison")
    child = queue.add_task(add, -2, 0, parent=poison)
    more = [queue.add_task(add, i, 1) for i in range(100)]
    await asyncio.wait_for(queue.flush(), 30)
    with pytest.raises(InvalidTaskError, match="refused by the database: poison"):
        await poison.get_task_id()
    with pytest.raises(UnknownParent, match=r"'poison'.* was not created"):
        await child.get_task_id()
    ids = [await r.get_task_id() for r in refs + more]
    assert len(await queue.repository.get_tasks(ids)) == 200
    # bisection: about 2*log2(202) calls, nowhere near one per task
    assert len(counting.create_calls) <= 20


async def test_a_down_database_fails_the_batch_without_bisecting(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    counting.down = True
    refs = [queue.add_task(add, i, 0) for i in range(64)]
    await asyncio.wait_for(queue.flush(), 30)
    for ref in refs:
        with pytest.raises(RepositoryError, match="connection refused"):
            await ref.get_task_id()
    assert len(counting.create_calls) == 1
    counting.down = False
    again = queue.add_task(add, 1, 0)
    assert isinstance(await asyncio.wait_for(again.get_task_id(), 30), int)


async def test_parent_ref_whose_creation_failed_refuses_enqueue(
    queue: TaskQueue,
) -> None:
    orphan = queue.add_task(add, 2, 2, parent=987654)
    await asyncio.wait_for(queue.flush(), 30)
    with pytest.raises(UnknownParent, match="was not created"):
        await queue.enqueue(add, 1, 1, parent=orphan)


async def test_refs_of_another_queue_are_parents_too(
    queue: TaskQueue, make_repository: object, config: QueueConfig
) -> None:
    other = TaskQueue(config, repository=queue.repository)
    await other.open()
    try:
        parent = other.add_task(add, 1, 1)
        child = queue.add_task(add, 2, 2, parent=parent)
        cid = await asyncio.wait_for(child.get_task_id(), 30)
        stored = await queue.get_task(cid)
        assert stored.parent_task == await parent.get_task_id()
    finally:
        await other.flush()


async def test_creation_outlives_a_cancelled_get_task_id(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    @hooks.on_pre_create
    async def hold(task: object) -> None:  # keeps the write pending while we cancel
        entered.set()
        await release.wait()

    ref = queue.add_task(add, 1, 1)
    waiter = asyncio.create_task(ref.get_task_id())
    await asyncio.wait_for(entered.wait(), 10)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert isinstance(await asyncio.wait_for(ref.get_task_id(), 30), int)


async def test_waiters_of_one_pending_ref_all_get_its_id_or_its_error(queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1)
    ids = await asyncio.wait_for(asyncio.gather(*(ref.get_task_id() for _ in range(3))), 30)
    assert len(set(ids)) == 1 and ref.task_id == ids[0]
    orphan = queue.add_task(add, 1, 1, parent=987654321)
    for _ in range(2):  # before and after the failure is known
        with pytest.raises(UnknownParent):
            await asyncio.wait_for(orphan.get_task_id(), 30)
    assert isinstance(orphan.creation_error(), UnknownParent) and not orphan.created


async def test_a_written_ref_lets_go_of_the_task_s_arguments(queue: TaskQueue) -> None:
    def held_tasks(ref: TaskRef) -> list[NewTask]:
        """The NewTask objects the ref holds, directly or through one object."""
        near = gc.get_referents(ref)
        return [o for o in (*near, *gc.get_referents(*near)) if isinstance(o, NewTask)]

    ref = queue.add_task(add, [1, 2], [3])
    assert len(held_tasks(ref)) == 1  # pending: the validated task waits for the writer
    await asyncio.wait_for(ref.get_task_id(), 30)
    assert held_tasks(ref) == []
    assert ref.created and ref.creation_error() is None
    unread = queue.add_task(add, 1, 1)
    await asyncio.wait_for(queue.flush(), 30)
    assert unread.task_id is not None and held_tasks(unread) == []


async def test_ref_repr_and_known_id(queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1, name="adder")
    assert repr(ref) == "<TaskRef pending 'adder'>"
    assert ref.task_id is None and not ref.created
    task_id = await asyncio.wait_for(ref.get_task_id(), 30)
    assert repr(ref) == f"<TaskRef id={task_id} 'adder'>"
    same = queue.ref(task_id)
    assert isinstance(same, TaskRef) and same.task_id == task_id
    assert await same.get_state() is TaskState.ENQUEUED


async def test_a_cancelled_flusher_fails_its_refs_and_a_new_one_takes_over(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    entered = asyncio.Event()
    never = asyncio.Event()

    @hooks.on_pre_create
    async def hold(task: NewTask) -> None:
        if task.name == "held":
            entered.set()
            await never.wait()

    held = queue.add_task(add, 1, 1, name="held")
    await asyncio.wait_for(entered.wait(), 10)
    flusher = queue._writer.flusher
    assert flusher is not None and flusher.get_name() == "taskqueue-creation-flusher"
    flusher.cancel()  # e.g. the loop is being torn down
    with pytest.raises(QueueClosed, match="flusher was cancelled"):
        await asyncio.wait_for(held.get_task_id(), 10)
    after = queue.add_task(add, 2, 2)
    assert isinstance(await asyncio.wait_for(after.get_task_id(), 30), int)


async def test_more_than_a_batch_is_split_and_parents_cross_the_split(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.queue import MAX_BATCH_SIZE

    monkeypatch.setattr(counting, "concurrent_creations", 1, raising=False)  # one write a round
    refs = [queue.add_task(add, i, 0) for i in range(MAX_BATCH_SIZE)]
    child = queue.add_task(add, -1, 0, parent=refs[0])  # lands in the second call
    await asyncio.wait_for(queue.flush(), 60)
    assert [len(c) for c in counting.create_calls] == [MAX_BATCH_SIZE, 1]
    assert counting.create_calls[1][0].parent_ids == (await refs[0].get_task_id(),)
    stored = await queue.get_task(await child.get_task_id())
    assert stored.parent_task == await refs[0].get_task_id()


class Parallel:
    """Makes ``counting`` write big rounds in two parts, and lets a test see them run at
    once: the first two ``create_tasks`` calls each wait (10 s at most) until both started."""

    def __init__(self, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(counting, "concurrent_creations", 2, raising=False)
        self.both_started = asyncio.Barrier(2)
        self.calls = 0
        write = counting.create_tasks

        async def create_tasks(tasks: Any, **options: Any) -> list[int]:
            self.calls += 1
            if self.calls <= 2:
                await asyncio.wait_for(self.both_started.wait(), 10)
            return await write(tasks, **options)

        monkeypatch.setattr(counting, "create_tasks", create_tasks)


async def test_a_big_round_is_written_in_two_parts_at_once(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.creation import PART_MIN

    Parallel(counting, monkeypatch)
    refs = [queue.add_task(add, i, 0) for i in range(2 * PART_MIN + 1)]
    ids = await asyncio.wait_for(asyncio.gather(*(r.get_task_id() for r in refs)), 30)
    # (The barrier would have timed out had the second part waited for the first.)
    # Consecutive parts (the barrier lets them through in either order).
    parts = sorted([t.args[0] for t in call] for call in counting.create_calls)
    assert parts == [list(range(PART_MIN + 1)), list(range(PART_MIN + 1, 2 * PART_MIN + 1))]
    first, second = ids[: PART_MIN + 1], ids[PART_MIN + 1 :]
    assert first == sorted(first) and second == sorted(second)
    assert len(set(ids)) == len(ids)
    stored = await queue.repository.get_tasks(ids)
    assert [t.args[0] for t in stored] == list(range(2 * PART_MIN + 1))


async def test_a_small_round_is_one_write_even_where_writes_run_in_parallel(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.creation import PART_MIN

    monkeypatch.setattr(counting, "concurrent_creations", 2, raising=False)
    refs = [queue.add_task(add, i, 0) for i in range(2 * PART_MIN - 1)]
    await asyncio.wait_for(queue.flush(), 30)
    assert [len(c) for c in counting.create_calls] == [2 * PART_MIN - 1]
    assert all(r.created for r in refs)


async def test_a_repository_that_does_not_say_gets_one_write_a_round(
    config: QueueConfig, hooks: HookRegistry
) -> None:
    from taskqueue_core.creation import PART_MIN

    class Silent(CountingRepository):
        def __getattr__(self, name: str) -> Any:
            if name == "concurrent_creations":
                raise AttributeError(name)
            return super().__getattr__(name)

    silent = Silent(InMemoryRepository())
    async with TaskQueue(config, repository=silent, hooks=hooks) as queue:  # type: ignore[arg-type]
        refs = [queue.add_task(add, i, 0) for i in range(2 * PART_MIN)]
        await asyncio.wait_for(queue.flush(), 30)
    assert [len(c) for c in silent.create_calls] == [2 * PART_MIN]
    assert all(r.created for r in refs)


async def test_a_child_in_the_second_part_waits_for_its_parent_in_the_first(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.creation import PART_MIN

    monkeypatch.setattr(counting, "concurrent_creations", 2, raising=False)
    refs = [queue.add_task(add, i, 0) for i in range(2 * PART_MIN - 2)]
    child = queue.add_task(add, -1, 0, parent=refs[0])  # second part, parent in the first
    sibling = queue.add_task(add, -2, 0, parent=[refs[-1], child])  # parents in its part
    await asyncio.wait_for(queue.flush(), 30)
    assert [len(c) for c in counting.create_calls] == [PART_MIN, PART_MIN]
    parent_id = await refs[0].get_task_id()
    assert counting.create_calls[1][-2].parent_ids == (parent_id,)
    stored = await queue.get_task(await child.get_task_id())
    assert stored.parent_task == parent_id and stored.state is TaskState.WAITING
    last = await queue.get_task(await sibling.get_task_id())
    assert last.parent_task == await refs[-1].get_task_id()
    assert last.state is TaskState.WAITING


async def test_a_refused_task_fails_alone_while_the_other_part_is_written(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.creation import PART_MIN

    parallel = Parallel(counting, monkeypatch)
    counting.refuse("bad")
    refs = [queue.add_task(add, i, 0) for i in range(2 * PART_MIN)]
    bad = queue.add_task(add, 0, 0, name="bad")  # in the second part
    await asyncio.wait_for(queue.flush(), 30)
    assert parallel.calls > 2  # the second part was bisected
    with pytest.raises(InvalidTaskError, match="refused by the database: bad"):
        await bad.get_task_id()
    assert all(r.created for r in refs)
    assert (await queue.list_tasks(limit=1)).total == 2 * PART_MIN


async def test_add_task_from_another_thread(queue: TaskQueue, counting: CountingRepository) -> None:
    def sync_endpoint() -> list[TaskRef]:  # FastAPI runs `def` endpoints in a thread pool
        return [queue.add_task(add, i, i) for i in range(10)]

    refs = await asyncio.to_thread(sync_endpoint)
    # handed to the loop before the thread's result came back: flush() covers them
    await asyncio.wait_for(queue.flush(), 30)
    # (the loop may start writing while the thread still adds: batches vary, tasks do not)
    assert sum(len(c) for c in counting.create_calls) == 10
    assert all(r.created for r in refs)


async def test_a_task_handed_over_after_close_is_refused_not_stranded(
    counting: CountingRepository, config: QueueConfig
) -> None:
    queue = TaskQueue(config, repository=counting)  # type: ignore[arg-type]
    await queue.open()
    loop = asyncio.get_running_loop()
    held: list[tuple[Any, tuple[Any, ...]]] = []
    original = loop.call_soon_threadsafe

    def hold_hand_overs(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(callback, "__self__", None) is queue:
            held.append((callback, args))  # delivered late, below
            return None
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = hold_hand_overs  # type: ignore[method-assign]
    try:
        # validated while the queue is open, delivered once close() has drained
        ref = await asyncio.to_thread(queue.add_task, add, 1, 1)
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    await queue.close()
    assert len(held) == 1
    callback, args = held[0]
    callback(*args)
    with pytest.raises(QueueClosed, match="queue closed first"):
        await asyncio.wait_for(ref.get_task_id(), 10)
    assert counting.create_calls == []


async def test_a_full_batch_is_written_while_the_burst_that_fills_it_goes_on(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    from taskqueue_core.creation import MAX_BATCH_SIZE

    refs = [queue.add_task(add, i, 0) for i in range(MAX_BATCH_SIZE)]
    # No await yet: the add_task that filled the batch started its write.
    assert [len(c) for c in counting.create_calls] == [MAX_BATCH_SIZE]
    rest = [queue.add_task(add, i, 1) for i in range(10)]
    child = queue.add_task(add, -1, 0, parent=refs[-1])  # its parent is in the early write
    assert len(counting.create_calls) == 1  # the rest waits for the flusher, as before
    await asyncio.wait_for(queue.flush(), 60)
    assert queue.pending_count == 0
    assert [len(c) for c in counting.create_calls] == [MAX_BATCH_SIZE, 11]
    parent_id = await refs[-1].get_task_id()
    assert counting.create_calls[1][-1].parent_ids == (parent_id,)
    ids = [await r.get_task_id() for r in refs + rest]
    assert len(set(ids)) == len(ids)
    stored = await queue.repository.get_tasks(ids)
    assert [t.args for t in stored] == [[i, 0] for i in range(MAX_BATCH_SIZE)] + [
        [i, 1] for i in range(10)
    ]
    below = await queue.get_task(await child.get_task_id())
    assert below.parent_task == parent_id and below.state is TaskState.WAITING


def hold_writes(
    counting: CountingRepository, monkeypatch: pytest.MonkeyPatch, *, of_size: int | None = None
) -> asyncio.Event:
    """Make ``counting``'s ``create_tasks`` calls (those of ``of_size`` tasks only, if given)
    wait until the event returned is set."""
    gate = asyncio.Event()
    write = counting.create_tasks

    async def held(tasks: Any, **options: Any) -> list[int]:
        if of_size is None or len(tasks) == of_size:
            await gate.wait()
        return await write(tasks, **options)

    monkeypatch.setattr(counting, "create_tasks", held)
    return gate


async def test_flush_and_close_wait_for_a_full_batch_written_early(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.creation import MAX_BATCH_SIZE

    gate = hold_writes(counting, monkeypatch)
    refs = [queue.add_task(add, i, 0) for i in range(MAX_BATCH_SIZE)]
    early = queue._writer.early_write
    assert early is not None and not early.done()
    assert queue.pending_count == MAX_BATCH_SIZE
    flushing = asyncio.create_task(queue.flush())
    closing = asyncio.create_task(queue.close())
    await asyncio.sleep(0.05)  # what is tested: both still wait for the write
    assert not flushing.done() and not closing.done()
    gate.set()
    await asyncio.wait_for(asyncio.gather(flushing, closing), 60)
    assert all(r.created for r in refs)
    assert queue._writer.early_write is None


async def test_a_cancelled_early_write_fails_its_refs_and_later_tasks_are_written(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskqueue_core.creation import MAX_BATCH_SIZE

    hold_writes(counting, monkeypatch, of_size=MAX_BATCH_SIZE)  # never let go
    refs = [queue.add_task(add, i, 0) for i in range(MAX_BATCH_SIZE)]
    early = queue._writer.early_write
    assert early is not None
    early.cancel()  # e.g. the loop is being torn down
    with pytest.raises(QueueClosed, match="an early creation write was cancelled"):
        await asyncio.wait_for(refs[0].get_task_id(), 10)
    assert all(r.creation_error() is not None for r in refs)
    after = queue.add_task(add, 2, 2)
    assert isinstance(await asyncio.wait_for(after.get_task_id(), 30), int)
