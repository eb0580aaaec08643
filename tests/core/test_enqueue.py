"""enqueue / enqueue_many (created at once), control verbs and pass-through reads."""

from __future__ import annotations

import asyncio

import pytest

from taskqueue_core import (
    TaskCall,
    TaskFilter,
    TaskQueue,
    TaskState,
    UnknownParent,
    UnknownTask,
)
from tests.core.conftest import CountingRepository
from tests.core.tasks import add, send_email


async def test_enqueue_creates_at_once(queue: TaskQueue, counting: CountingRepository) -> None:
    ref = await queue.enqueue(send_email, "ada@example.com", subject="hi", priority=3)
    assert ref.task_id is not None and ref.created
    assert len(counting.create_calls) == 1
    task = await queue.get_task(ref.task_id)
    assert (task.args, task.kwargs, task.priority) == (["ada@example.com"], {"subject": "hi"}, 3)


async def test_enqueue_with_a_pending_parent_ref_waits_for_its_creation(queue: TaskQueue) -> None:
    parent = queue.add_task(add, 1, 1)
    child = await queue.enqueue(add, 2, 2, parent=parent)
    task = await queue.get_task(await child.get_task_id())
    assert task.parent_task == await parent.get_task_id()


async def test_enqueue_raises_repository_errors_directly(queue: TaskQueue) -> None:
    with pytest.raises(UnknownParent, match="987654"):
        await queue.enqueue(add, 1, 1, parent=987654)
    assert (await queue.list_tasks()).total == 0


async def test_enqueue_many_is_one_write(queue: TaskQueue, counting: CountingRepository) -> None:
    root = await queue.enqueue(add, 0, 0)
    refs = await queue.enqueue_many(
        [TaskCall(add, (i, i), parent=root, channel="bulk") for i in range(300)]
    )
    assert len(refs) == 300 and len(counting.create_calls) == 2
    assert [len(c) for c in counting.create_calls] == [1, 300]
    tree = await queue.get_tree(await root.get_task_id())
    assert len(tree.tasks) == 301
    assert await queue.enqueue_many([]) == []
    with pytest.raises(UnknownParent):
        await queue.enqueue_many([TaskCall(add, (1, 1)), TaskCall(add, (1, 1), parent=987654)])
    assert (await queue.list_tasks()).total == 301  # all or nothing


async def test_control_verbs_return_what_changed(queue: TaskQueue) -> None:
    a, b, c = [await queue.enqueue(add, i, i, channel=ch) for i, ch in enumerate("xyx")]
    ids = [r.task_id for r in (a, b, c)]
    assert all(isinstance(i, int) for i in ids)
    assert await queue.cancel([ids[0]]) == [ids[0]]
    assert await queue.cancel([ids[0]]) == []
    assert await queue.stop([ids[1]]) == [ids[1]]
    assert sorted(await queue.retry(ids)) == sorted(ids[:2])  # c was never finished
    assert await queue.clear(channel="x") == 2
    assert await queue.clear() == 1
    assert (await queue.list_tasks()).total == 0
    with pytest.raises(TypeError, match="task_ids must be a list of task ids, got int 5"):
        await queue.cancel(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="every task id must be a task id"):
        await queue.stop(["5"])  # type: ignore[list-item]


async def test_reads_pass_through(queue: TaskQueue) -> None:
    ref = await queue.enqueue(add, 1, 2, name="reader", channel="reads")
    task_id = await ref.get_task_id()
    page = await queue.list_tasks(TaskFilter(channel="reads"), limit=10)
    assert [t.id for t in page.tasks] == [task_id] and page.total == 1
    assert (await queue.list_tasks(TaskFilter(states=(TaskState.DONE,)))).total == 0
    assert await queue.get_logs(task_id) == []
    stats = await queue.stats()
    assert stats.by_state.get("enqueued") == 1
    assert await queue.servers() == []
    assert (await ref.get_task()).name == "reader"
    with pytest.raises(UnknownTask, match="no task has id 987654"):
        await queue.get_task(987654)
    with pytest.raises(TypeError, match="task_id must be a task id"):
        queue.ref("12")  # type: ignore[arg-type]


async def test_cancel_before_creation_finished(queue: TaskQueue) -> None:
    ref = queue.add_task(add, 1, 1)
    cancelling = ref.cancel()  # creation still pending: the write waits for the id
    assert ref.task_id is None
    assert await asyncio.wait_for(cancelling, 20) == [await ref.get_task_id()]
    assert await ref.get_state() is TaskState.CANCELLED
