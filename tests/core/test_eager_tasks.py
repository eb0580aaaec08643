"""start_eagerly: the first step at once, the rest in a task, as if the task had run it all."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from taskqueue_core.eager_tasks import start_eagerly

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="caller")


async def test_the_first_step_runs_in_the_call_and_the_rest_in_the_task() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def work() -> int:
        steps.append("first")
        await gate.wait()
        steps.append("rest")
        return 7

    future = start_eagerly(work(), name="eager-test")
    assert steps == ["first"]  # before the caller awaited anything
    assert isinstance(future, asyncio.Task) and future.get_name() == "eager-test"
    gate.set()
    assert await asyncio.wait_for(future, 10) == 7
    assert steps == ["first", "rest"]


async def test_a_coroutine_that_never_suspends_is_settled_at_once() -> None:
    async def done() -> str:
        return "now"

    async def broken() -> None:
        raise ValueError("bad")

    finished = start_eagerly(done(), name="eager-test")
    assert finished.done() and finished.result() == "now"
    failed = start_eagerly(broken(), name="eager-test")
    assert failed.done()
    with pytest.raises(ValueError, match="bad"):
        failed.result()


async def test_errors_after_the_first_step_are_the_tasks() -> None:
    async def work() -> None:
        await asyncio.sleep(0)
        raise LookupError("later")

    future = start_eagerly(work(), name="eager-test")
    with pytest.raises(LookupError, match="later"):
        await asyncio.wait_for(future, 10)


async def test_a_bare_yield_in_the_rest_is_handled_like_a_tasks() -> None:
    async def work() -> int:
        total = 0
        for _ in range(5):
            await asyncio.sleep(0)  # a bare yield: the task is simply run again
            total += 1
        return total

    assert await asyncio.wait_for(start_eagerly(work(), name="eager-test"), 10) == 5


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    seen: list[str] = []
    entered = asyncio.Event()

    async def work() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("cleaned up")

    future = start_eagerly(work(), name="eager-test")
    assert entered.is_set()
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(future, 10)
    assert seen == ["cancelled", "cleaned up"]


async def test_a_coroutine_may_catch_its_cancellation_and_go_on() -> None:
    async def work() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "caught"
        return "not reached"

    future = start_eagerly(work(), name="eager-test")
    await asyncio.sleep(0)
    future.cancel()
    assert await asyncio.wait_for(future, 10) == "caught"


async def test_context_variables_set_by_the_coroutine_stay_its_own() -> None:
    seen: list[str] = []

    async def work() -> None:
        seen.append(where.get())  # the caller's values are visible
        where.set("task")
        await asyncio.sleep(0)
        seen.append(where.get())  # and its own outlive the first step

    where.set("caller's")
    future = start_eagerly(work(), name="eager-test")
    assert where.get() == "caller's"  # nothing leaked into the caller
    await asyncio.wait_for(future, 10)
    assert seen == ["caller's", "task"]
    assert where.get() == "caller's"
