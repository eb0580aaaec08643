"""Small builders and assertions shared by the contract tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from taskqueue_core.models import Event, FunctionRef, NewTask, Outcome, Task, TaskState
from taskqueue_core.repository import TaskRepository

SERVER = "server-a"
FUNCTION = FunctionRef(module_name="tests.contract.helpers", function_name="noop")
WAIT = 5.0
"""Bound of every wait for an event, in seconds."""


def noop() -> None:
    """The function every contract task names (it is never run here)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new(name: str = "task", function: FunctionRef = FUNCTION, **options: Any) -> NewTask:
    """A ``NewTask`` (running ``noop`` unless told otherwise) with ``options``."""
    return NewTask(name=name, function=function, **options)


async def create(repo: TaskRepository, **options: Any) -> int:
    """Create one task and return its id."""
    (task_id,) = await repo.create_tasks([new(**options)])
    return task_id


async def get(repo: TaskRepository, task_id: int) -> Task:
    (task,) = await repo.get_tasks([task_id])
    return task


async def states(repo: TaskRepository, *task_ids: int) -> list[TaskState]:
    found = await repo.get_states(task_ids)
    return [found[i] for i in task_ids]


async def start(repo: TaskRepository, *task_ids: int, server: str = SERVER) -> list[Task]:
    """Claim every ready task and check that they are exactly ``task_ids``."""
    claimed = await repo.claim_tasks(server, len(task_ids) + 10)
    assert sorted(t.id for t in claimed) == sorted(task_ids)
    return claimed


async def finish(
    repo: TaskRepository,
    task_id: int,
    state: TaskState = TaskState.DONE,
    *,
    server: str = SERVER,
    **fields: Any,
) -> list[int]:
    """Report one outcome for a task claimed by ``server``."""
    return await repo.complete_tasks(server, [Outcome(task_id=task_id, state=state, **fields)])


async def run(
    repo: TaskRepository, task_id: int, state: TaskState = TaskState.DONE, **fields: Any
) -> None:
    """Claim ``task_id`` (the only ready task) and end it with ``state``."""
    await start(repo, task_id)
    assert await finish(repo, task_id, state, **fields) == [task_id]


def assert_recent(value: datetime | None, *, slack: float = 5.0) -> None:
    """``value`` is an aware datetime within ``slack`` seconds of now."""
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert abs((utcnow() - value).total_seconds()) < slack


def tick() -> datetime:
    """Now, after the clock has moved past the previous reading (microsecond resolution).

    Not a synchronisation: it only makes two instants distinct so that "before" and
    "after" comparisons of stored timestamps are meaningful.
    """
    first = utcnow()
    while (now := utcnow()) <= first:
        pass
    return now


class EventRecorder:
    """An event handler that queues what it receives, and waits for a matching event."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.seen: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.queue.put_nowait(event)

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = WAIT) -> Event:
        """The first event (seen or to come) matching ``predicate``; fails after ``timeout``."""
        for event in self.seen:
            if predicate(event):
                self.seen.remove(event)
                return event

        async def scan() -> Event:
            while True:
                event = await self.queue.get()
                if predicate(event):
                    return event
                self.seen.append(event)

        return await asyncio.wait_for(scan(), timeout)

    def drain(self) -> list[Event]:
        """Every event received so far and not yet matched."""
        while not self.queue.empty():
            self.seen.append(self.queue.get_nowait())
        events, self.seen = self.seen, []
        return events


async def wait_ids(recorder: EventRecorder, kind: str, *task_ids: int) -> None:
    """Wait until ``kind`` events (one or several) have named every id of ``task_ids``."""
    missing = set(task_ids)

    def covers(event: Event) -> bool:
        if event.kind == kind:
            missing.difference_update(event.task_ids)
        return not missing

    await recorder.wait_for(covers)


def ended(*task_ids: int) -> Callable[[Event], bool]:
    """Matches an ``ended`` event naming all of ``task_ids``."""
    return lambda e: e.kind == "ended" and set(task_ids) <= set(e.task_ids)


def control(*task_ids: int) -> Callable[[Event], bool]:
    return lambda e: e.kind == "control" and set(task_ids) <= set(e.task_ids)


def created(*channels: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "created" and set(channels) <= set(e.channels)
