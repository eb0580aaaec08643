"""Retries with backoff, final failures with tracebacks, timeouts, refused function references."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from taskqueue_core.exceptions import TaskFailed
from taskqueue_core.models import FunctionRef, NewTask, TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.execution import tasks
from tests.execution.conftest import counting, running_worker


async def test_a_retry_whose_write_lands_after_it_is_due_still_runs_at_once(
    queue: TaskQueue,
) -> None:
    """The worker wakes up for its own retry when the retry should be due; if the retry's
    write lands only later (a slow database), the write's own event (or, on a backend without
    events, the poll) makes it look again, instead of leaving the retry to the fallback poll
    (30 s here)."""
    assert queue.config.fallback_polling_interval >= 30
    repo = counting(queue)
    real = repo.complete_tasks

    async def slow_for_retries(server_name: str, outcomes: Any) -> Any:
        if any(outcome.retry_at is not None for outcome in outcomes):
            await asyncio.sleep(0.5)  # ten times the retry's delay
        return await real(server_name, outcomes)

    repo.complete_tasks = slow_for_retries  # type: ignore[method-assign]
    async with running_worker(queue):
        ref = queue.add_task(tasks.fail_until, "slow-write", 1)
        assert await ref.wait(10) == "succeeded on attempt 2"
    attempts = tasks.signals.attempts["slow-write"]
    # Delay (about 0.05 s) plus the slow write: well under a second, not the poll's 30 s.
    assert attempts[1] - attempts[0] < 5


async def test_an_exception_whose_message_cannot_be_read_still_fails_its_task(
    queue: TaskQueue,
) -> None:
    """The task's outcome is recorded with a description instead of its message (before, the
    worker's job crashed reading it and the task stayed ``doing`` for good)."""
    ref = queue.add_task(tasks.raise_bad_str, max_retries=0)
    after = queue.add_task(tasks.add, 1, 2)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed) as caught:
        await ref.wait(5)
    assert caught.value.exception_name == "BadStr"
    assert caught.value.exception_message == "<BadStr whose str() raised RuntimeError>"
    assert "raise BadStr()" in (caught.value.exception_info or "")
    assert await after.wait(5) == 3


async def test_a_failure_to_record_a_tasks_end_fails_that_task_and_the_worker_goes_on(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever raises while the worker turns a task's end into its outcome (here a stand-in
    for a bug in the result check), the task is not left ``doing`` for good: it fails with
    what went wrong, and the next task runs."""
    import taskqueue_core.worker

    real = taskqueue_core.worker.result_problem

    def broken(result: Any, task_id: int) -> str | None:
        if result == 5:
            raise RuntimeError("a bug in the result check")
        return real(result, task_id)

    monkeypatch.setattr(taskqueue_core.worker, "result_problem", broken)
    ref = queue.add_task(tasks.add, 2, 3, max_retries=0)
    after = queue.add_task(tasks.add, 1, 2)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed) as caught:
        await ref.wait(5)
    task_id = await ref.get_task_id()
    assert caught.value.exception_name == "WorkerError"
    assert caught.value.exception_message == (
        f"the worker could not record the end of task {task_id}: "
        "RuntimeError: a bug in the result check"
    )
    assert "a bug in the result check" in (caught.value.exception_info or "")
    assert await after.wait(5) == 3


async def test_a_bug_past_the_outcome_is_logged_with_its_task_and_the_worker_goes_on(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something raising once the outcome is queued (here a stand-in for a bug at the end of
    recording it) is logged at once, naming the task; the outcome stands, and the worker
    runs the next task."""
    from loguru import logger as loguru_logger

    import taskqueue_core.worker

    real = taskqueue_core.worker.Worker._finish
    broken_once: list[bool] = []

    def broken(self: Any, *args: Any) -> None:
        real(self, *args)
        if not broken_once:
            broken_once.append(True)
            raise RuntimeError("a bug at the end of recording")

    monkeypatch.setattr(taskqueue_core.worker.Worker, "_finish", broken)
    errors: list[str] = []
    sink = loguru_logger.add(
        lambda m: errors.append(f"{m.record['message']} | {m.record['exception']!r}"),
        level="ERROR",
    )
    try:
        async with running_worker(queue):
            ref = queue.add_task(tasks.add, 2, 3)
            assert await ref.wait(10) == 5
            after = queue.add_task(tasks.add, 1, 2)
            assert await after.wait(10) == 3
    finally:
        loguru_logger.remove(sink)
    task_id = await ref.get_task_id()
    assert broken_once
    assert any(
        f"task {task_id} crashed while recording its end" in line
        and "a bug at the end of recording" in line
        for line in errors
    ), errors


async def test_a_post_run_hook_whose_exception_cannot_be_read_does_not_stop_the_task(
    queue: TaskQueue,
) -> None:
    def hook(task: object, result: object, error: object) -> None:
        raise tasks.BadStr()

    queue.hooks.on_post_run(hook)
    ref = queue.add_task(tasks.add, 2, 3)
    await run_until_idle(queue)
    assert await ref.wait(5) == 5


async def test_exceptions_retry_with_backoff_then_fail_with_traceback(queue: TaskQueue) -> None:
    queue.config.retry_backoff = 0.2
    queue.config.retry_backoff_max = 10.0
    async with running_worker(queue):
        ref = queue.add_task(tasks.fail_always, "r", max_retries=2)
        with pytest.raises(TaskFailed) as caught:
            await ref.wait(20)
    attempts = tasks.signals.attempts["r"]
    assert len(attempts) == 3  # the first run and two retries
    # Exponential backoff with at most 20 % jitter: 0.2 s then 0.4 s.
    assert attempts[1] - attempts[0] >= 0.2 * 0.8
    assert attempts[2] - attempts[1] >= 0.4 * 0.8
    task = await queue.get_task(await ref.get_task_id())
    assert task.state is TaskState.FAILED
    assert task.retry_count == 2
    assert task.exception_name == "ValueError"
    assert task.exception_message == "always failing: r"
    assert task.exception_info is not None
    assert "Traceback (most recent call last)" in task.exception_info
    assert "fail_always" in task.exception_info
    assert caught.value.exception_name == "ValueError"


async def test_backoff_is_capped_by_retry_backoff_max(queue: TaskQueue) -> None:
    queue.config.retry_backoff = 5.0
    queue.config.retry_backoff_max = 0.1
    async with running_worker(queue):
        ref = queue.add_task(tasks.fail_until, "cap", 2, max_retries=3)
        assert await ref.wait(10) == "succeeded on attempt 3"
    attempts = tasks.signals.attempts["cap"]
    # Uncapped, the second retry would wait 10 s.
    assert attempts[2] - attempts[0] < 3.0
    task = await queue.get_task(await ref.get_task_id())
    assert task.retry_count == 2


async def test_a_retried_task_that_succeeds_ends_done(queue: TaskQueue) -> None:
    async with running_worker(queue):
        ref = queue.add_task(tasks.fail_until, "ok", 1, max_retries=3)
        assert await ref.wait(10) == "succeeded on attempt 2"
    task = await queue.get_task(await ref.get_task_id())
    assert (task.state, task.retry_count) == (TaskState.DONE, 1)


async def test_sync_function_errors_keep_their_traceback(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.sync_fail, "missing", max_retries=0)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed) as caught:
        await ref.wait(5)
    assert caught.value.exception_name == "KeyError"
    assert "sync_fail" in (caught.value.exception_info or "")


async def test_a_coroutine_past_its_timeout_is_interrupted_and_fails(queue: TaskQueue) -> None:
    async with running_worker(queue):
        started = time.monotonic()
        ref = queue.add_task(tasks.hold, "slow", timeout=0.3, max_retries=0)
        with pytest.raises(TaskFailed) as caught:
            await ref.wait(10)
        elapsed = time.monotonic() - started
    assert tasks.signals.event("interrupted", "slow").is_set()
    assert caught.value.exception_name == "TimeoutError"
    assert "0.3 s" in (caught.value.exception_message or "")
    # The traceback shows where the task was waiting when it was interrupted.
    assert "hold" in (caught.value.exception_info or "")
    assert elapsed < 3.0


async def test_timeouts_count_as_failures_and_are_retried(queue: TaskQueue) -> None:
    async with running_worker(queue):
        ref = queue.add_task(tasks.hold, "again", timeout=0.2, max_retries=1)
        with pytest.raises(TaskFailed):
            await ref.wait(10)
    task = await queue.get_task(await ref.get_task_id())
    assert (task.retry_count, task.exception_name) == (1, "TimeoutError")


async def test_the_default_timeout_is_read_live(queue: TaskQueue) -> None:
    async with running_worker(queue):
        ref = queue.add_task(tasks.hold, "live", max_retries=0)
        async with asyncio.timeout(10):
            await tasks.signals.event("started", "live").wait()
        # Lowered while the task runs: it applies to it at once.
        queue.config.task_timeout = 0.2
        with pytest.raises(TaskFailed) as caught:
            await ref.wait(10)
    assert caught.value.exception_name == "TimeoutError"


async def test_a_stuck_plain_function_times_out_and_the_pool_keeps_serving(
    queue: TaskQueue,
) -> None:
    async with running_worker(queue, concurrency=1):
        stuck = queue.add_task(tasks.sync_hold, "stuck", timeout=0.3, max_retries=0)
        with pytest.raises(TaskFailed) as caught:
            await stuck.wait(10)
        assert caught.value.exception_name == "TimeoutError"
        assert "cannot be interrupted" in (caught.value.exception_message or "")
        # Its thread still runs; the only slot is free again and new plain functions run.
        assert not tasks.signals.thread_event("thread_gates", "stuck").is_set()
        after = queue.add_task(tasks.sync_add, 1, 2)
        assert (await after.wait(10))["sum"] == 3
        tasks.signals.thread_event("thread_gates", "stuck").set()
    # The late result was discarded: the task stays failed.
    task = await queue.get_task(await stuck.get_task_id())
    assert task.state is TaskState.FAILED
    assert task.result is None


async def _create_raw(queue: TaskQueue, ref: FunctionRef, *args: object) -> int:
    [task_id] = await queue.repository.create_tasks(
        [NewTask(name="raw", function=ref, args=list(args), max_retries=3)]
    )
    return task_id


async def test_a_path_that_no_longer_resolves_fails_without_retries(queue: TaskQueue) -> None:
    good = queue.codec.dump(tasks.record)
    assert good.module_name is not None
    # A signed reference to a function that was renamed since the task was created.
    renamed = FunctionRef(
        module_name=good.module_name,
        function_name="record_renamed",
        signature=queue.codec._sign(f"path:{good.module_name}:record_renamed".encode()),
    )
    task_id = await _create_raw(queue, renamed, "x")
    await run_until_idle(queue)
    task = await queue.get_task(task_id)
    assert task.state is TaskState.FAILED
    assert task.exception_name == "FunctionRefused"
    assert "record_renamed" in (task.exception_message or "")
    assert "no longer resolves" in (task.exception_message or "")
    assert task.retry_count == 0


async def test_a_bad_signature_is_refused_and_nothing_runs(queue: TaskQueue) -> None:
    good = queue.codec.dump(tasks.record)
    forged = FunctionRef(
        module_name=good.module_name, function_name=good.function_name, signature="0" * 64
    )

    async def local() -> str:
        return "local ran"

    blob = queue.codec.dump(local)
    forged_blob = FunctionRef(serialized_function=blob.serialized_function, signature="f" * 64)
    first = await _create_raw(queue, forged, "forged")
    second = await _create_raw(queue, forged_blob)
    await run_until_idle(queue)
    assert tasks.signals.calls == []
    for task_id in (first, second):
        task = await queue.get_task(task_id)
        assert task.state is TaskState.FAILED
        assert task.exception_name == "FunctionRefused"
        assert "signature" in (task.exception_message or "")
        assert task.result is None


async def test_arguments_that_do_not_fit_fail_without_running(queue: TaskQueue) -> None:
    # Written behind the queue's back (as an old deployment might have): record takes one.
    task_id = await _create_raw(queue, queue.codec.dump(tasks.record), "a", "b")
    await run_until_idle(queue)
    task = await queue.get_task(task_id)
    assert task.state is TaskState.FAILED
    assert task.exception_name == "TypeError"
    assert "tests.execution.tasks.record(label" in (task.exception_message or "")
    assert "too many positional arguments" in (task.exception_message or "")
    assert task.retry_count == 0
    assert tasks.signals.calls == []


async def test_post_run_hooks_see_a_timeout_as_timeout_error(queue: TaskQueue) -> None:
    seen: list[BaseException | None] = []
    queue.hooks.on_post_run(lambda task, result, error: seen.append(error))
    async with running_worker(queue):
        ref = queue.add_task(tasks.hold, "hooked", timeout=0.2, max_retries=0)
        with pytest.raises(TaskFailed):
            await ref.wait(10)
    assert len(seen) == 1 and isinstance(seen[0], TimeoutError)
    assert "0.2 s" in str(seen[0])
