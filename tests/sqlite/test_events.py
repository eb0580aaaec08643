"""Events: in-process only, delivered after the commit, never lost by a failing handler."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from taskqueue_core.models import Event, Outcome, TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import new


async def test_events_stay_in_process(repo: SqliteRepository) -> None:
    assert repo.supports_notify is False
    subscription = await repo.subscribe(lambda event: None)
    assert subscription.healthy is True
    await subscription.close()
    await subscription.close()


async def test_events_are_sent_after_the_commit(db_path: Path, repo: SqliteRepository) -> None:
    """Each handler call reads the file through another connection: the rows it is told
    about are already committed."""
    seen: list[tuple[Event, list[tuple[object, ...]]]] = []

    def handler(event: Event) -> None:
        with sqlite3.connect(db_path) as conn:
            rows = conn.execute("SELECT id, state FROM queued_tasks ORDER BY id").fetchall()
        seen.append((event, rows))

    await repo.subscribe(handler)
    parent, child = await repo.create_tasks([new(channel="mail"), new(batch_parents=(0,))])
    assert seen[-1] == (
        Event("created", channels=("mail",)),
        [(parent, "enqueued"), (child, "waiting")],
    )
    await repo.claim_tasks("s", 1)
    await repo.complete_tasks("s", [Outcome(task_id=parent, state=TaskState.DONE)])
    kinds = [event.kind for event, _ in seen[-2:]]
    assert kinds == ["created", "ended"]
    for _, rows in seen[-2:]:
        assert rows == [(parent, "done"), (child, "enqueued")]


async def test_a_failing_handler_neither_undoes_the_write_nor_starves_others(
    repo: SqliteRepository, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    await repo.subscribe(broken)
    await repo.subscribe(received.append)
    (task_id,) = await repo.create_tasks([new()])
    assert [e.kind for e in received] == ["created"]
    assert (await repo.get_states([task_id]))[task_id] is TaskState.ENQUEUED
    assert "handler bug" in caplog.text


async def test_events_of_one_repository_do_not_reach_another(db_url: str) -> None:
    first, second = SqliteRepository(db_url), SqliteRepository(db_url)
    await first.open()
    await second.open()
    try:
        received: list[Event] = []
        await second.subscribe(received.append)
        await first.create_tasks([new()])
        await first.publish(Event("control", task_ids=(1,)))
        assert received == []
        await second.publish(Event("control", task_ids=(1,)))
        assert received == [Event("control", task_ids=(1,))]
    finally:
        await first.close()
        await second.close()
