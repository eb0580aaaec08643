"""Results, wait() outcomes, plain functions in threads, JSON results, batched completions."""

from __future__ import annotations

import asyncio
import threading

import pytest

from taskqueue_core.exceptions import TaskFailed
from taskqueue_core.models import TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from taskqueue_core.worker import PREFETCH_LIMIT, Worker
from tests.execution import tasks
from tests.execution.conftest import counting, running_worker


async def test_results_are_stored_and_returned_by_wait(queue_all: TaskQueue) -> None:
    queue = queue_all
    a = queue.add_task(tasks.add, 2, 3)
    b = queue.add_task(tasks.echo, {"nested": [1, "two", None, True, 2.5]})
    c = queue.add_task(tasks.noop)
    await run_until_idle(queue)

    assert await a.wait(5) == 5
    assert await b.wait(5) == {"nested": [1, "two", None, True, 2.5]}
    assert await c.wait(5) is None
    stored = await queue.get_task(await a.get_task_id())
    assert stored.state is TaskState.DONE
    assert stored.result == 5
    assert stored.date_started is not None and stored.date_done is not None
    assert stored.execution_time is not None and stored.execution_time >= 0
    assert stored.claimed_by == queue.config.resolved_server_name


async def test_plain_functions_run_in_worker_threads(queue_all: TaskQueue) -> None:
    queue = queue_all
    ref = queue.add_task(tasks.sync_add, 20, 22)
    await run_until_idle(queue)
    result = await ref.wait(5)
    assert result["sum"] == 42
    assert result["thread"] != threading.main_thread().name
    assert result["thread"].startswith("taskqueue-worker")


async def test_local_function_and_lambda_run(queue: TaskQueue) -> None:
    factor = 3

    async def scaled(x: int) -> int:
        return x * factor

    a = queue.add_task(scaled, 14)
    b = queue.add_task(lambda x: x + 1, 41)
    await run_until_idle(queue)
    assert await a.wait(5) == 42
    assert await b.wait(5) == 42


async def test_wait_raises_task_failed_with_the_remote_error(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.fail_always, "w", max_retries=0)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed) as caught:
        await ref.wait(5)
    assert caught.value.exception_name == "ValueError"
    assert caught.value.exception_message == "always failing: w"
    assert caught.value.exception_info is not None
    assert 'raise ValueError(f"always failing: {key}")' in caught.value.exception_info


async def test_wait_raises_cancelled_error_for_a_cancelled_task(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.record, "never")
    await ref.cancel()
    await run_until_idle(queue)
    with pytest.raises(asyncio.CancelledError):
        await ref.wait(5)
    assert tasks.signals.calls == []


async def test_a_result_that_is_not_json_fails_naming_its_type(queue: TaskQueue) -> None:
    a = queue.add_task(tasks.returns_set)
    b = queue.add_task(tasks.returns_nan)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed) as caught:
        await a.wait(5)
    assert caught.value.exception_name == "ArgumentNotSerializable"
    assert "set" in (caught.value.exception_message or "")
    with pytest.raises(TaskFailed) as caught_nan:
        await b.wait(5)
    assert "nan" in (caught_nan.value.exception_message or "")
    # Not retried: running again would give the same result.
    stored = await queue.get_task(await a.get_task_id())
    assert stored.retry_count == 0


async def test_a_result_no_column_holds_fails_alone_and_says_why(queue_all: TaskQueue) -> None:
    queue = queue_all
    kinds = ["text", "nested", "key", "huge", "deep"]
    bad = [queue.add_task(tasks.returns_unstorable, kind) for kind in kinds]
    good = [queue.add_task(tasks.add, i, 1) for i in range(20)]  # in the same batches
    await run_until_idle(queue)
    for kind, ref in zip(kinds, bad, strict=True):
        with pytest.raises(TaskFailed) as caught:
            await ref.wait(5)
        assert caught.value.exception_name == "ArgumentNotSerializable"
        expected = {
            "huge": "is not JSON-serializable",
            "deep": "is nested too deeply to be written as JSON",
        }.get(kind, "contains a NUL character")
        assert expected in (caught.value.exception_message or ""), kind
    assert [await ref.wait(5) for ref in good] == [i + 1 for i in range(20)]


async def test_completions_are_batched_under_load(queue: TaskQueue) -> None:
    refs = [queue.add_task(tasks.noop) for _ in range(400)]
    await queue.flush()
    await run_until_idle(queue)
    repo = counting(queue)
    assert sum(repo.sizes["complete_tasks"]) == 400
    # Many outcomes per write: far fewer calls than tasks.
    assert repo.calls["complete_tasks"] < 400 / 3
    # The first claim fills the free slots; once tasks are known to run short, claims also
    # take tasks ahead of free slots (at most PREFETCH_LIMIT per slot), in one call each.
    slots = queue.config.max_workers
    assert repo.sizes["claim_tasks"][0] == slots
    assert slots < max(repo.sizes["claim_tasks"]) <= slots * (1 + PREFETCH_LIMIT)
    states = await queue.repository.get_states([await r.get_task_id() for r in refs])
    assert set(states.values()) == {TaskState.DONE}


async def test_a_completion_is_written_within_milliseconds(queue: TaskQueue) -> None:
    async with running_worker(queue):
        ref = queue.add_task(tasks.add, 1, 1)
        assert await ref.wait(5) == 2
        task = await queue.get_task(await ref.get_task_id())
    assert task.date_done is not None and task.date_started is not None
    # From start to stored end: the writer does not sit on a lone outcome.
    assert (task.date_done - task.date_started).total_seconds() < 0.5


async def test_pre_run_hook_context_reaches_the_function_and_its_thread(queue: TaskQueue) -> None:
    seen: list[tuple[int, object]] = []

    def set_request_id(task: object) -> None:
        tasks.request_id.set(f"req-{task.id}")  # type: ignore[attr-defined]

    def after(task: object, result: object, error: object) -> None:
        seen.append((task.id, result))  # type: ignore[attr-defined]

    queue.hooks.on_pre_run(set_request_id)
    queue.hooks.on_post_run(after)
    a = queue.add_task(tasks.read_request_id)
    b = queue.add_task(tasks.read_request_id_async)
    await run_until_idle(queue)
    a_id, b_id = await a.get_task_id(), await b.get_task_id()
    assert await a.wait(5) == f"req-{a_id}"
    assert await b.wait(5) == f"req-{b_id}"
    assert sorted(seen) == sorted([(a_id, f"req-{a_id}"), (b_id, f"req-{b_id}")])


async def test_active_and_idle_follow_running_tasks(queue: TaskQueue) -> None:
    worker = Worker(queue, concurrency=3)
    assert (worker.active, worker.idle) == (0, 3)
    job = asyncio.create_task(worker.run())
    try:
        ref = queue.add_task(tasks.hold, "busy")
        async with asyncio.timeout(10):
            await tasks.signals.event("started", "busy").wait()
        assert (worker.active, worker.idle) == (1, 2)
        tasks.signals.event("gates", "busy").set()
        assert await ref.wait(5) == "released busy"
    finally:
        await asyncio.wait_for(worker.stop(grace=5), 20)
        await job
    assert (worker.active, worker.idle) == (0, 3)


async def test_a_worker_runs_once_and_validates_its_options(queue: TaskQueue) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Worker(queue, concurrency=0)
    with pytest.raises(TypeError, match="channels"):
        Worker(queue, channels="default")
    worker = Worker(queue)
    await worker.run(burst=True)
    with pytest.raises(RuntimeError, match="runs once"):
        await worker.run(burst=True)
    await worker.stop()  # after the end: returns at once


def test_a_done_outcome_is_the_dataclass_its_constructor_builds() -> None:
    """The worker builds a done task's outcome through ``Outcome``'s twin: the same value,
    equal, hashed and printed alike, and frozen."""
    from taskqueue_core import attempt
    from taskqueue_core.models import Outcome

    assert attempt._build_outcome.__qualname__ == "build_Outcome"  # the twin applies
    expected = Outcome(7, TaskState.DONE, result=[1, 2], execution_time=0.5, context={"a": 1})
    built = attempt.done_outcome(7, [1, 2], 0.5, {"a": 1})
    assert type(built) is Outcome
    assert built == expected
    assert repr(built) == repr(expected)
    plain = attempt.done_outcome(8, None, 0.25, None)
    assert hash(plain) == hash(Outcome(8, TaskState.DONE, execution_time=0.25))
    with pytest.raises(AttributeError):
        built.result = 3  # type: ignore[misc]
