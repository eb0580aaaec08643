"""Events: in-process only, delivered after the commit, never lost by a failing handler."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TypeVar

import pytest

from taskqueue_core.models import Event, Outcome, TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import new

T = TypeVar("T")


async def next_of(queue: asyncio.Queue[T]) -> T:
    """The next item a handler put in ``queue`` (handlers run soon after the write)."""
    return await asyncio.wait_for(queue.get(), timeout=5)


async def test_events_stay_in_process(repo: SqliteRepository) -> None:
    assert repo.supports_notify is False
    subscription = await repo.subscribe(lambda event: None)
    assert subscription.healthy is True
    await subscription.close()
    await subscription.close()


async def test_events_are_sent_after_the_commit(db_path: Path, repo: SqliteRepository) -> None:
    """Each handler call reads the file through another connection: the rows it is told
    about are already committed."""
    seen: asyncio.Queue[tuple[Event, list[tuple[object, ...]]]] = asyncio.Queue()

    def handler(event: Event) -> None:
        with sqlite3.connect(db_path) as conn:
            rows = conn.execute("SELECT id, state FROM queued_tasks ORDER BY id").fetchall()
        seen.put_nowait((event, rows))

    await repo.subscribe(handler)
    parent, child = await repo.create_tasks([new(channel="mail"), new(batch_parents=(0,))])
    assert await next_of(seen) == (
        Event("created", channels=("mail",)),
        [(parent, "enqueued"), (child, "waiting")],
    )
    await repo.claim_tasks("s", 1)
    await repo.complete_tasks("s", [Outcome(task_id=parent, state=TaskState.DONE)])
    after = [await next_of(seen), await next_of(seen)]
    assert [event.kind for event, _ in after] == ["created", "ended"]
    for _, rows in after:
        assert rows == [(parent, "done"), (child, "enqueued")]
    assert seen.empty()


async def test_a_failing_handler_neither_undoes_the_write_nor_starves_others(
    repo: SqliteRepository, caplog: pytest.LogCaptureFixture
) -> None:
    received: asyncio.Queue[Event] = asyncio.Queue()

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    await repo.subscribe(broken)
    await repo.subscribe(received.put_nowait)
    (task_id,) = await repo.create_tasks([new()])
    assert (await next_of(received)).kind == "created"
    assert (await repo.get_states([task_id]))[task_id] is TaskState.ENQUEUED
    assert "handler bug" in caplog.text


async def test_events_of_one_repository_do_not_reach_another(db_url: str) -> None:
    first, second = SqliteRepository(db_url), SqliteRepository(db_url)
    await first.open()
    await second.open()
    try:
        received: asyncio.Queue[Event] = asyncio.Queue()
        await second.subscribe(received.put_nowait)
        await first.create_tasks([new()])
        await first.publish(Event("control", task_ids=(1,)))
        await second.publish(Event("control", task_ids=(2,)))
        # Events are delivered in order: the first one second sees is its own.
        assert await next_of(received) == Event("control", task_ids=(2,))
        assert received.empty()
    finally:
        await first.close()
        await second.close()
