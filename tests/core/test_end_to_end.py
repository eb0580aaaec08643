"""TaskQueue with a real Worker: results reach wait(), run hooks see what creation stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskqueue_core import HookRegistry, NewTask, Task, TaskFailed, TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.core.tasks import add, fail_with, log_and_return


async def test_a_chain_runs_in_order_and_wait_gets_each_result(queue: TaskQueue) -> None:
    first = queue.add_task(log_and_return, "first")
    second = queue.add_task(add, 20, 22, parent=first)
    waiting = asyncio.create_task(second.wait(timeout=30))
    await run_until_idle(queue, timeout=30)
    assert await asyncio.wait_for(waiting, 30) == 42
    assert await first.wait(timeout=5) == "first"
    done_first = await queue.get_task(await first.get_task_id())
    done_second = await queue.get_task(await second.get_task_id())
    assert done_first.date_done is not None and done_second.date_started is not None
    assert done_first.date_done <= done_second.date_started
    logs = await queue.get_logs(await first.get_task_id())
    assert [(r.type, r.message) for r in logs] == [("info", "processing first")]


async def test_failure_reaches_wait_as_task_failed(queue: TaskQueue) -> None:
    ref = queue.add_task(fail_with, "no luck", max_retries=0)
    child = queue.add_task(add, 1, 1, parent=ref)
    await run_until_idle(queue, timeout=30)
    with pytest.raises(TaskFailed, match="ValueError: no luck") as info:
        await ref.wait(timeout=10)
    assert info.value.exception_info is not None and "fail_with" in info.value.exception_info
    with pytest.raises(TaskFailed, match="ParentFailed"):
        await child.wait(timeout=10)


async def test_run_hooks_see_the_context_captured_at_creation(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    seen: list[Any] = []

    @hooks.on_pre_create
    def stamp(task: NewTask) -> None:
        task.context["tenant"] = "acme"

    @hooks.on_pre_run
    async def before(task: Task) -> None:
        seen.append(("pre_run", task.context.get("tenant")))

    @hooks.on_post_run
    def after(task: Task, result: Any = None, error: BaseException | None = None) -> None:
        seen.append(("post_run", result, type(error).__name__ if error else None))

    ok = queue.add_task(add, 2, 3)
    bad = queue.add_task(fail_with, "x", max_retries=0)
    await run_until_idle(queue, timeout=30)
    assert await ok.wait(timeout=10) == 5
    with pytest.raises(TaskFailed):
        await bad.wait(timeout=10)
    assert ("pre_run", "acme") in seen
    assert ("post_run", 5, None) in seen
    assert ("post_run", None, "ValueError") in seen
