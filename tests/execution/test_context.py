"""Live task context: coalesced commits, threads, reads from outside, manual saves."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from taskqueue_core.context import (
    NoTaskContext,
    TaskContext,
    activate,
    current_task_id,
    get_context,
    get_full_context,
    save_context,
    set_context,
)
from taskqueue_core.exceptions import TaskFailed
from taskqueue_core.models import NewLogRecord
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from taskqueue_core.worker import CONTEXT_PERIOD
from tests.execution import tasks
from tests.execution.conftest import counting, running_worker, wait_for_event


async def test_a_thousand_changes_make_a_handful_of_writes(queue: TaskQueue) -> None:
    # 1,000 changes spread over about half a second, pausing every 100.
    ref = queue.add_task(tasks.count_context, 1000, 100, 0.05)
    await run_until_idle(queue)
    assert await ref.wait(5) == 999
    repo = counting(queue)
    writes = repo.calls["update_contexts"]
    task = await ref.get_task()
    # About one write per CONTEXT_PERIOD while it ran (however slow the machine), not 1,000.
    assert task.execution_time is not None
    assert 1 <= writes <= task.execution_time / CONTEXT_PERIOD + 3, writes
    assert writes <= 20
    assert task.context == {"progress": {"current": 999, "total": 1000}}


async def test_a_tight_loop_of_changes_is_written_once_with_the_outcome(
    queue: TaskQueue,
) -> None:
    ref = queue.add_task(tasks.count_context, 1000, 0, 0.0)
    await run_until_idle(queue)
    assert await ref.wait(5) == 999
    # The loop never yields: nothing is written until the outcome, which carries the context.
    assert counting(queue).calls["update_contexts"] == 0
    assert (await ref.get_task()).context["progress"] == {"current": 999, "total": 1000}


async def test_the_context_is_readable_from_outside_while_the_task_runs(
    queue: TaskQueue,
) -> None:
    repo = counting(queue)
    async with running_worker(queue):
        ref = queue.add_task(tasks.hold_with_context, "live")
        await wait_for_event(tasks.signals.event("started", "live"))
        task_id = await ref.get_task_id()
        await wait_for_event(repo.called("update_contexts"), 5)
        running = await queue.get_task(task_id)
        assert running.state.value == "doing"
        assert running.context == {"step": "waiting", "task": {"id": task_id}}
        tasks.signals.event("gates", "live").set()
        assert await ref.wait(5) == "ok"
    assert (await queue.get_task(task_id)).context["step"] == "released"


async def test_context_set_in_a_thread_is_stored(queue_all: TaskQueue) -> None:
    queue = queue_all
    ref = queue.add_task(tasks.sync_context, 1000)
    await run_until_idle(queue)
    result = await ref.wait(5)
    task = await ref.get_task()
    assert result == {"task_id": task.id, "read": 999}
    assert task.context["thread"]["counter"] == 999
    assert task.context["thread"]["name"].startswith("taskqueue-worker")
    assert task.context["manual"] == "saved"


async def test_manual_commits_are_saved_by_save_context_and_at_the_end(
    queue: TaskQueue,
) -> None:
    async with running_worker(queue):
        ref = queue.add_task(tasks.manual_context, "manual")
        await wait_for_event(tasks.signals.event("started", "manual"))
        # ``await save_context()`` returned before the task said it started: it is stored.
        running = await ref.get_task()
        assert running.context == {"manual": {"step": 2}}
        tasks.signals.event("gates", "manual").set()
        assert await ref.wait(5) == "done"
    assert (await ref.get_task()).context == {"manual": {"step": 3}}


async def test_the_context_of_a_failed_task_is_kept(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.context_then_fail, "bad input", max_retries=0)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed):
        await ref.wait(5)
    task = await ref.get_task()
    assert task.context == {"error": {"type": "validation", "details": "bad input"}}


async def test_non_json_values_are_refused_clearly(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.set_bad_context)
    await run_until_idle(queue)
    message = await ref.wait(5)
    assert message.startswith("ArgumentNotSerializable: set_context('bad')")
    assert "set" in message


def test_outside_a_task_reads_give_defaults_and_writes_raise() -> None:
    assert current_task_id() is None
    assert get_context("a.b", "default") == "default"
    assert get_full_context() == {}
    with pytest.raises(NoTaskContext, match="outside a running task"):
        set_context("a", 1)
    with pytest.raises(NoTaskContext):
        save_context()


class _Writer:
    def __init__(self) -> None:
        self.commits = 0

    def commit_soon(self) -> None:
        self.commits += 1

    async def flush(self) -> None:
        return None

    def add_log(self, record: NewLogRecord) -> None:
        return None


def _in_context(ctx: TaskContext, fn: Any) -> Any:
    def run() -> Any:
        activate(ctx)
        return fn()

    return contextvars.copy_context().run(run)


def test_dot_paths_nest_copy_and_overwrite() -> None:
    ctx = TaskContext(7, {"kept": True}, _Writer())

    def body() -> dict[str, Any]:
        value = {"list": [1, 2]}
        set_context("a.b.c", value)
        value["list"].append(3)  # the context holds a copy
        set_context("a.x", 1, auto_commit=False)
        got = get_context("a.b")
        got["c"]["list"].append(4)  # so does what get_context returns
        set_context("kept.deeper", "replaced a non-dict")
        assert get_context("a.b.c.list") == [1, 2]
        assert get_context("a.missing", 5) == 5
        assert get_context("a.x.y", "no") == "no"
        assert current_task_id() == 7
        with pytest.raises(ValueError, match="empty segment"):
            set_context("a..b", 1)
        with pytest.raises(ValueError):
            set_context("", 1)
        return get_full_context()

    full = _in_context(ctx, body)
    assert full == {
        "kept": {"deeper": "replaced a non-dict"},
        "a": {"b": {"c": {"list": [1, 2]}}, "x": 1},
    }
    assert ctx.dirty
    assert ctx.snapshot() == full and not ctx.dirty
    final = ctx.close()
    assert final == full and final is not ctx.data
    with pytest.raises(NoTaskContext, match="has ended"):
        _in_context(ctx, lambda: set_context("late", 1))


def test_close_without_copy_hands_over_the_data_and_none_when_unchanged() -> None:
    ctx = TaskContext(3, {"kept": 1}, _Writer())
    _in_context(ctx, lambda: set_context("step", "end"))
    assert ctx.close(copy=False) is ctx.data
    assert ctx.data == {"kept": 1, "step": "end"}
    unchanged = TaskContext(4, {"kept": 1}, _Writer())
    assert unchanged.close(copy=False) is None


def test_auto_commit_false_does_not_mark_dirty_and_save_does() -> None:
    writer = _Writer()
    ctx = TaskContext(1, {}, writer)
    _in_context(ctx, lambda: set_context("quiet", 1, auto_commit=False))
    assert not ctx.dirty and ctx.version == 1
    _in_context(ctx, save_context)
    assert ctx.dirty and writer.commits == 1


async def test_contexts_of_tasks_running_side_by_side_are_separate(queue: TaskQueue) -> None:
    refs = [queue.add_task(tasks.count_context, n, 7, 0.0) for n in (10, 20, 30, 40)]
    await run_until_idle(queue)
    results = await asyncio.gather(*(r.wait(5) for r in refs))
    assert results == [9, 19, 29, 39]
    for ref, n in zip(refs, (10, 20, 30, 40), strict=True):
        assert (await ref.get_task()).context == {"progress": {"current": n - 1, "total": n}}
