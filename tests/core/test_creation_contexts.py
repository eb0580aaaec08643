"""The contextvars creation hooks see: each add_task's own, even when a burst shares one.

Consecutive add_task calls made in one context share one snapshot of it (one object for a
burst instead of one per task); a hook that sets a variable must still change only the
context of its own task, and its task's post_create hook must see what its pre_create set.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from taskqueue_core import HookRegistry, NewTask, TaskQueue
from tests.core.tasks import add

step: ContextVar[str] = ContextVar("step", default="caller")


async def test_hooks_of_a_burst_each_get_their_own_context(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    seen: dict[str, list[str]] = {}

    @hooks.on_pre_create
    def before(task: NewTask) -> None:
        seen.setdefault(task.name, []).append(f"pre saw {step.get()}")
        step.set(f"set by {task.name}")

    @hooks.on_post_create
    def after(task: NewTask, task_id: int) -> None:
        seen[task.name].append(f"post saw {step.get()}")

    step.set("request")
    refs = [queue.add_task(add, i, i, name=f"t{i}") for i in range(3)]
    assert queue._writer.pending_count == 3
    shared = {id(item.context) for item in queue._writer._pending}
    assert len(shared) == 1  # one snapshot for the burst
    await asyncio.wait_for(asyncio.gather(*(r.get_task_id() for r in refs)), 30)
    assert seen == {f"t{i}": ["pre saw request", f"post saw set by t{i}"] for i in range(3)}
    assert step.get() == "request"  # the caller's own context is untouched


async def test_a_variable_set_between_calls_starts_a_new_snapshot(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    seen: list[str] = []

    @hooks.on_pre_create
    def before(task: NewTask) -> None:
        seen.append(f"{task.name}: {step.get()}")

    step.set("one")
    first = queue.add_task(add, 1, 1, name="a")
    second = queue.add_task(add, 1, 1, name="b")
    step.set("two")
    third = queue.add_task(add, 1, 1, name="c")
    await asyncio.wait_for(asyncio.gather(*(r.get_task_id() for r in (first, second, third))), 30)
    assert seen == ["a: one", "b: one", "c: two"]
