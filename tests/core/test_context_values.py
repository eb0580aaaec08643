"""set_context refuses what the context column cannot hold, inside the task that tried."""

from __future__ import annotations

import pytest

from taskqueue_core import QueueConfig, TaskQueue, TaskState, set_context
from taskqueue_core.exceptions import ArgumentNotSerializable
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.testing import run_until_idle

caught: list[str] = []


def _deep() -> list[object]:
    deep: list[object] = []
    for _ in range(100_000):  # deeper than Python's recursion limit
        deep = [deep]
    return deep


async def store_nul(where: str) -> str:
    value: object = (
        _deep()
        if where == "deep"
        else {"value": "a\x00b", "nested": {"nested": ["a\x00b"]}, "huge": 10**5000}[where]
    )
    try:
        set_context("step", value)
    except ArgumentNotSerializable as exc:
        caught.append(str(exc))
        raise
    return "stored"


async def store_fine() -> str:
    set_context("step", "fine")
    return "ok"


@pytest.mark.parametrize("where", ["value", "nested", "huge", "deep"])
async def test_a_value_no_column_holds_fails_the_task_that_set_it_and_no_other(where: str) -> None:
    caught.clear()
    config = QueueConfig(database_url="memory://", secret_key="k", max_retries=0)
    async with TaskQueue(config, repository=InMemoryRepository()) as queue:
        bad = queue.add_task(store_nul, where)
        good = queue.add_task(store_fine)
        await queue.flush()
        await run_until_idle(queue, timeout=30)
        assert await bad.get_state() == TaskState.FAILED
        assert await good.get_state() == TaskState.DONE
        task = await queue.get_task(await good.get_task_id())
        # (Hooks other modules registered globally may have added keys of their own.)
        assert task.context["step"] == "fine"
    expected = {"huge": "Exceeds the limit", "deep": "nested too deeply"}.get(where, "NUL")
    assert caught and expected in caught[0]
