"""Dependencies run for real: chains, fan-out, diamonds and every cascade through a worker."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from taskqueue_core.exceptions import TaskFailed, TaskTimeout
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, Task, TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.ref import TaskRef
from taskqueue_core.testing import run_until_idle
from tests.execution import tasks
from tests.execution.conftest import running_worker, wait_for_event


async def _tasks(queue: TaskQueue, refs: list[TaskRef]) -> list[Task]:
    ids = [await ref.get_task_id() for ref in refs]
    found = await queue.repository.get_tasks(ids)
    assert [t.id for t in found] == ids
    return found


def _started(task: Task) -> float:
    assert task.date_started is not None
    return task.date_started.timestamp()


def _done(task: Task) -> float:
    assert task.date_done is not None
    return task.date_done.timestamp()


async def test_a_chain_of_depth_50_runs_in_order(queue_all: TaskQueue) -> None:
    queue = queue_all
    refs = [queue.add_task(tasks.record, "step-0")]
    for i in range(1, 50):
        refs.append(queue.add_task(tasks.record, f"step-{i}", parent=refs[-1]))
    await run_until_idle(queue, timeout=60)
    assert tasks.signals.calls == [f"step-{i}" for i in range(50)]
    chain = await _tasks(queue, refs)
    assert {t.state for t in chain} == {TaskState.DONE}
    for parent, child in itertools.pairwise(chain):
        assert child.parent_task == parent.id
        assert _started(child) >= _done(parent)


async def test_a_fan_out_of_1000_children_all_run_after_their_parent(queue: TaskQueue) -> None:
    parent = queue.add_task(tasks.record, "parent")
    children = [queue.add_task(tasks.noop, parent=parent) for _ in range(1000)]
    await run_until_idle(queue, timeout=120)
    [root] = await _tasks(queue, [parent])
    done = await _tasks(queue, children)
    assert {t.state for t in done} == {TaskState.DONE}
    assert min(_started(t) for t in done) >= _done(root)


async def test_a_diamond_joins_after_both_branches(queue_all: TaskQueue) -> None:
    queue = queue_all
    top = queue.add_task(tasks.record, "top")
    left = queue.add_task(tasks.record, "left", parent=top)
    right = queue.add_task(tasks.record, "right", parent=top)
    bottom = queue.add_task(tasks.record, "bottom", parent=[left, right])
    await run_until_idle(queue)
    assert tasks.signals.calls[0] == "top"
    assert tasks.signals.calls[-1] == "bottom"
    assert sorted(tasks.signals.calls[1:3]) == ["left", "right"]
    _t, lft, rgt, b = await _tasks(queue, [top, left, right, bottom])
    assert _started(b) >= max(_done(lft), _done(rgt))
    assert b.state is TaskState.DONE


async def test_a_failed_parent_fails_its_descendants_naming_it(queue_all: TaskQueue) -> None:
    queue = queue_all
    parent = queue.add_task(tasks.fail_always, "parent", max_retries=0)
    child = queue.add_task(tasks.record, "child", parent=parent)
    grandchild = queue.add_task(tasks.record, "grandchild", parent=child)
    await run_until_idle(queue)
    assert tasks.signals.calls == []
    parent_id = await parent.get_task_id()
    for ref in (child, grandchild):
        with pytest.raises(TaskFailed) as caught:
            await ref.wait(5)
        assert caught.value.exception_name == PARENT_FAILED
        assert str(parent_id) in (caught.value.exception_message or "")


async def test_a_parent_that_fails_only_after_its_retries_fails_its_children(
    queue: TaskQueue,
) -> None:
    async with running_worker(queue):
        parent = queue.add_task(tasks.fail_always, "retried", max_retries=2)
        child = queue.add_task(tasks.record, "child", parent=parent)
        try:
            with pytest.raises(TaskFailed):
                await child.wait(15)
        except TaskTimeout:
            # Seen once in CI, never reproduced: say where it stood, to tell a retry that did
            # not run from an end that was not heard.
            attempts = tasks.signals.attempts.get("retried", [])
            pytest.fail(
                f"the child did not fail within 15 s; parent {await parent.get_task()!r}, "
                f"child {await child.get_task()!r}, parent attempts at "
                f"{[round(t - attempts[0], 3) for t in attempts]} s from the first"
            )
    assert len(tasks.signals.attempts["retried"]) == 3
    # While the parent was retrying, the child kept waiting (it never ran).
    assert tasks.signals.calls == []


async def test_a_cancelled_parent_cancels_its_descendants(queue_all: TaskQueue) -> None:
    queue = queue_all
    parent = queue.add_task(tasks.record, "parent")
    child = queue.add_task(tasks.record, "child", parent=parent)
    grandchild = queue.add_task(tasks.record, "grandchild", parent=child)
    await parent.cancel()
    await run_until_idle(queue)
    assert tasks.signals.calls == []
    for ref in (child, grandchild):
        task = await ref.get_task()
        assert task.state is TaskState.CANCELLED
        assert task.exception_name == PARENT_CANCELLED


async def test_a_stopped_parent_leaves_children_waiting_until_retried(
    queue_all: TaskQueue,
) -> None:
    queue = queue_all
    async with running_worker(queue):
        parent = queue.add_task(tasks.hold, "stopped-parent")
        child = queue.add_task(tasks.record, "child", parent=parent)
        await wait_for_event(tasks.signals.event("started", "stopped-parent"))
        await parent.stop()
        with pytest.raises(asyncio.CancelledError):
            await parent.wait(5)
        assert await child.get_state() is TaskState.WAITING
        # Retried (and allowed to finish this time), the parent releases the child.
        tasks.signals.event("gates", "stopped-parent").set()
        await queue.retry([await parent.get_task_id()])
        assert await child.wait(10) == "child"
    assert tasks.signals.calls == ["stopped-parent", "child"]


async def test_retrying_a_failed_parent_restores_its_descendants(queue_all: TaskQueue) -> None:
    queue = queue_all
    # Fails on its first attempt only; max_retries=0 makes that attempt final.
    parent = queue.add_task(tasks.fail_until, "flaky", 1, max_retries=0)
    child = queue.add_task(tasks.record, "child", parent=parent)
    grandchild = queue.add_task(tasks.record, "grandchild", parent=child)
    await run_until_idle(queue)
    assert await grandchild.get_state() is TaskState.FAILED
    restored = await queue.retry([await parent.get_task_id()])
    assert await parent.get_task_id() in restored
    await run_until_idle(queue)
    assert await parent.wait(5) == "succeeded on attempt 2"
    assert await child.wait(5) == "child"
    assert await grandchild.wait(5) == "grandchild"
    assert tasks.signals.calls == ["child", "grandchild"]
