"""Builders shared by the SQLite backend tests."""

from __future__ import annotations

from typing import Any

from taskqueue_core.models import FunctionRef, NewTask, Outcome, Task, TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository

FUNCTION = FunctionRef(module_name="tests.sqlite.helpers", function_name="noop")


def noop() -> None:
    """The function the tasks of these tests name (never run here)."""


def new(name: str = "task", **options: Any) -> NewTask:
    return NewTask(name=name, function=FUNCTION, **options)


async def create_many(repo: SqliteRepository, count: int, **options: Any) -> list[int]:
    return await repo.create_tasks([new(f"task-{i}", **options) for i in range(count)])


async def drain(repo: SqliteRepository, server: str, batch: int) -> list[int]:
    """Claim and complete (done, result = id) until nothing is ready; return what was claimed."""
    claimed: list[int] = []
    while True:
        tasks: list[Task] = await repo.claim_tasks(server, batch)
        if not tasks:
            return claimed
        claimed.extend(task.id for task in tasks)
        outcomes = [Outcome(task_id=t.id, state=TaskState.DONE, result=t.id) for t in tasks]
        assert await repo.complete_tasks(server, outcomes) == [t.id for t in tasks]
