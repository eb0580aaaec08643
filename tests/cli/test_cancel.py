"""``taskq cancel ID...``."""

from __future__ import annotations

from taskqueue_core import TaskQueue, TaskState
from taskqueue_core.testing import run_until_idle
from tests.cli import tasks
from tests.cli.conftest import Console


def _states(console: Console, ids: list[int]) -> dict[int, TaskState]:
    async def read(queue: TaskQueue) -> dict[int, TaskState]:
        return await queue.repository.get_states(ids)

    return console.seed(read)


def test_cancels_a_task_and_its_waiting_children(console: Console) -> None:
    async def seed(queue: TaskQueue) -> list[int]:
        parent = await queue.enqueue(tasks.add, 1, 2)
        child = await queue.enqueue(tasks.add, 3, 4, parent=parent)
        other = await queue.enqueue(tasks.add, 5, 6)
        return [await ref.get_task_id() for ref in (parent, child, other)]

    parent, child, other = console.seed(seed)
    result = console(f"cancel {parent}")
    assert result.code == 0, result
    assert f"Cancelled 1 task: {parent}." in result.out
    assert f"Also cancelled 1 waiting descendant: {child}." in result.out
    assert _states(console, [parent, child, other]) == {
        parent: TaskState.CANCELLED,
        child: TaskState.CANCELLED,
        other: TaskState.ENQUEUED,
    }


def test_json_and_ended_tasks_are_refused(console: Console) -> None:
    async def seed(queue: TaskQueue) -> list[int]:
        done = await queue.enqueue(tasks.add, 1, 2)
        await run_until_idle(queue)
        pending = await queue.enqueue(tasks.add, 3, 4)
        return [await done.get_task_id(), await pending.get_task_id()]

    done, pending = console.seed(seed)
    result = console(f"cancel {done} {pending} --json")
    assert result.code == 1, result
    assert result.json() == {
        "cancelled": [pending],
        "descendants": [],
        "not_cancelled": {str(done): "done"},
    }
    text = console(f"cancel {done}")
    assert text.code == 1
    assert text.err.strip() == (
        f"error: task {done} is done: only unfinished tasks can be cancelled"
    )


def test_unknown_id_cancels_nothing(console: Console) -> None:
    async def seed(queue: TaskQueue) -> int:
        return await (await queue.enqueue(tasks.add, 1, 2)).get_task_id()

    task_id = console.seed(seed)
    result = console(f"cancel {task_id} 999999")
    assert result.code == 1
    assert result.err.strip() == "error: no task has id 999999; nothing was cancelled"
    assert _states(console, [task_id]) == {task_id: TaskState.ENQUEUED}


def test_needs_an_id(memory_console: Console) -> None:
    result = memory_console("cancel")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "ids" in result.err
