"""Hooks: the registry, the decorators, and the hooks around task creation."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import pytest

from taskqueue_core import (
    HookRegistry,
    NewTask,
    QueueConfig,
    Task,
    TaskQueue,
    TaskRef,
    default_hooks,
)
from taskqueue_core.hooks import Moment
from tests.core.conftest import CountingRepository
from tests.core.tasks import add, send_email

workspace: ContextVar[str | None] = ContextVar("workspace", default=None)


# -- the registry ---------------------------------------------------------------------------


async def test_hooks_run_in_registration_order_sync_and_async() -> None:
    registry = HookRegistry()
    calls: list[str] = []

    @registry.on_pre_run
    def first(task: Any) -> None:
        calls.append(f"first {task}")

    @registry.on_pre_run
    async def second(task: Any) -> None:
        await asyncio.sleep(0)
        calls.append(f"second {task}")

    registry.register("pre_run", first)  # registering again keeps one registration
    assert registry.hooks(Moment.PRE_RUN) == (first, second)
    assert await registry.run("pre_run", "t") == 0
    assert calls == ["first t", "second t"]
    assert registry.unregister("pre_run", first)
    assert not registry.unregister("pre_run", first)
    assert registry.hooks("pre_run") == (second,)
    assert repr(registry) == "<HookRegistry pre_create=0, post_create=0, pre_run=1, post_run=0>"
    registry.clear()
    assert not registry.has("pre_run")


def test_registry_refuses_unknown_moments_and_non_callables() -> None:
    registry = HookRegistry()
    with pytest.raises(ValueError, match="unknown hook moment 'pre_save'; expected one of"):
        registry.register("pre_save", print)
    with pytest.raises(TypeError, match="a pre_run hook must be callable"):
        registry.register("pre_run", "not a function")  # type: ignore[type-var]


async def test_a_raising_hook_is_logged_and_the_others_still_run(errors: list[str]) -> None:
    registry = HookRegistry()
    ran: list[str] = []

    @registry.on_post_run
    async def broken(task: Any, result: Any, error: Any) -> None:
        raise RuntimeError("hook bug")

    @registry.on_post_run
    def after(task: Any, result: Any = None, error: Any = None) -> None:
        ran.append(f"{task} {result} {error}")

    await registry.run_post_run("t", result=1, error=None)  # type: ignore[arg-type]
    assert ran == ["t 1 None"]
    assert any("post_run hook" in m and "broken" in m and "hook bug" in m for m in errors)


async def test_run_pre_and_post_run_never_raise() -> None:
    registry = HookRegistry()

    @registry.on_pre_run
    def boom(task: Any) -> None:
        raise KeyError("x")

    @registry.on_post_run
    async def boom_async(task: Any, result: Any, error: Any) -> None:
        raise ValueError("y")

    await registry.run_pre_run("t")  # type: ignore[arg-type]
    await registry.run_post_run("t", None, RuntimeError("task error"))  # type: ignore[arg-type]
    assert await registry.run("pre_run", "t") == 1


# -- hooks around creation ------------------------------------------------------------------


async def test_pre_create_captures_the_callers_contextvars(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    # seed section 6, adapted: copy the request's workspace into the task's context
    @hooks.on_pre_create
    async def capture_workspace_context(task: NewTask) -> None:
        task.context.update({"workspace_id": workspace.get()})

    async def request(name: str) -> TaskRef:
        workspace.set(name)  # each request runs in its own context
        ref = queue.add_task(send_email, f"{name}@example.com")
        workspace.set("changed after add_task")
        return ref

    refs = await asyncio.gather(request("acme"), request("globex"))
    assert workspace.get() is None
    ids = [await asyncio.wait_for(r.get_task_id(), 30) for r in refs]
    stored = await queue.repository.get_tasks(ids)
    assert [t.context for t in stored] == [{"workspace_id": "acme"}, {"workspace_id": "globex"}]

    workspace.set("initech")
    try:
        ref = await queue.enqueue(send_email, "x@example.com")
    finally:
        workspace.set(None)
    assert (await queue.get_task(await ref.get_task_id())).context == {"workspace_id": "initech"}


async def test_post_create_gets_the_new_task_and_its_id_before_the_ref_resolves(
    queue: TaskQueue, hooks: HookRegistry
) -> None:
    created: list[tuple[str, int, bool]] = []
    refs: list[TaskRef] = []

    @hooks.on_post_create
    def remember(task: NewTask, task_id: int) -> None:
        created.append((task.name, task_id, refs[0].created))

    refs.append(queue.add_task(add, 1, 2, name="first"))
    task_id = await asyncio.wait_for(refs[0].get_task_id(), 30)
    assert created == [("first", task_id, False)]
    enqueued = await queue.enqueue(add, 3, 4, name="second")
    assert created[1] == ("second", await enqueued.get_task_id(), True)


async def test_a_raising_creation_hook_never_loses_the_task(
    queue: TaskQueue, hooks: HookRegistry, errors: list[str]
) -> None:
    @hooks.on_pre_create
    def half_then_crash(task: NewTask) -> None:
        task.context["step"] = "before the crash"
        raise RuntimeError("pre_create bug")

    @hooks.on_post_create
    async def crash_after(task: NewTask, task_id: int) -> None:
        raise RuntimeError("post_create bug")

    ref = queue.add_task(add, 1, 2)
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.context == {"step": "before the crash"}
    assert any("pre_create bug" in m for m in errors)
    assert any("post_create bug" in m for m in errors)


async def test_non_json_context_set_by_a_hook_is_dropped_and_logged(
    queue: TaskQueue, hooks: HookRegistry, errors: list[str]
) -> None:
    @hooks.on_pre_create
    def sloppy(task: NewTask) -> None:
        task.context.update({"ok": [1, "two"], "when": object(), "user": {"id": 7}})

    ref = queue.add_task(add, 1, 2)
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.context == {"ok": [1, "two"], "user": {"id": 7}}
    assert any("dropped context['when']" in m and "not JSON" in m for m in errors)


async def test_split_batches_run_pre_create_once_per_task(
    queue: TaskQueue, hooks: HookRegistry, counting: CountingRepository
) -> None:
    runs: list[str] = []

    @hooks.on_pre_create
    def count(task: NewTask) -> None:
        runs.append(task.name)

    counting.refuse("bad")
    refs = [queue.add_task(add, i, 0, name=f"t{i}") for i in range(7)]
    queue.add_task(add, 0, 0, name="bad")
    await asyncio.wait_for(queue.flush(), 30)
    assert all(r.created for r in refs)
    assert sorted(runs) == sorted([f"t{i}" for i in range(7)] + ["bad"])


# -- decorators and default_hooks -------------------------------------------------------------


@pytest.fixture
def sample_hooks() -> Iterator[ModuleType]:
    """Import (or re-import) a module whose decorators register hooks; unregister after."""
    name = "tests.core.sample_hooks"
    module = importlib.reload(sys.modules[name]) if name in sys.modules else None
    module = module or importlib.import_module(name)
    module.seen.clear()
    try:
        yield module
    finally:
        for moment, hook in module.ALL:
            default_hooks.unregister(moment, hook)


async def test_decorated_hooks_register_on_import_and_apply_by_default(
    sample_hooks: ModuleType, counting: CountingRepository, config: QueueConfig
) -> None:
    for moment, hook in sample_hooks.ALL:
        assert hook in default_hooks.hooks(moment)
    queue = TaskQueue(config, repository=counting)  # type: ignore[arg-type]
    assert queue.hooks is default_hooks
    async with queue:
        token = sample_hooks.current_workspace.set("acme")
        try:
            ref = queue.add_task(add, 1, 2)
        finally:
            sample_hooks.current_workspace.reset(token)
        task_id = await asyncio.wait_for(ref.get_task_id(), 30)
        task: Task = await queue.get_task(task_id)
    # Other modules imported in the same process (an application's own hooks) may have
    # registered global hooks too; this module's hook must have done its part.
    assert task.context["workspace_id"] == "acme"
    assert sample_hooks.seen == [("post_create", task_id)]

    # what a worker does around the run (it calls these two, which never raise)
    async def run_like_a_worker() -> str | None:
        await default_hooks.run_pre_run(task)
        inside = sample_hooks.current_workspace.get()
        await default_hooks.run_post_run(task, 3, None)
        return inside

    assert await asyncio.create_task(run_like_a_worker()) == "acme"
    assert sample_hooks.seen[1:] == [("pre_run", task_id), ("post_run", (task_id, 3, None))]
