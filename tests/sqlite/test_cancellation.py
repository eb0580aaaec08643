"""Cancelled calls: whatever await point a call is cancelled at, the connection ends up
outside any transaction (the call rolled back, or committed if its COMMIT had been sent),
and the next write commits on its own instead of joining a stale transaction.

aiosqlite cannot withdraw a statement once it is queued: a cancelled ``await`` leaves the
statement to run later in the connection's thread. These tests cancel a call before it
starts and then while each of its statements is in flight (``BEGIN IMMEDIATE``, every
statement of the body, the ``COMMIT``), one point per run, until a run ends before its
cancellation point: every await point on the connection is covered, whatever the speed of
the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from taskqueue_core import QueueConfig, TaskQueue
from taskqueue_core.models import Outcome, ServerInfo, TaskState
from taskqueue_core.pool import WorkerPool
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import create_many, new

BOUND = 60.0
"""Upper bound of every wait in these tests, in seconds."""

MAX_POINTS = 60
"""No call of these tests sends this many statements: a sweep that reaches it is a bug."""

TRIALS = 4
ITERATIONS = 40


@contextlib.contextmanager
def observer(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the file: it sees only what was committed."""
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        yield other
    finally:
        other.close()


class Canceller:
    """Cancels one task while the n-th statement it sends through aiosqlite is in flight.

    Installed in place of ``aiosqlite.Connection._execute``, which queues a statement for
    the connection's thread and then awaits its future: cancelling the task just before that
    await lands the ``CancelledError`` there, with the statement already queued.
    """

    def __init__(self, original: Callable[..., Awaitable[Any]]) -> None:
        self.original = original
        self.task: asyncio.Task[Any] | None = None
        self.point = 0
        self.sent = 0
        self.twice = False

    def arm(self, task: asyncio.Task[Any], point: int, *, twice: bool) -> None:
        self.task, self.point, self.sent, self.twice = task, point, 0, twice

    def disarm(self) -> None:
        self.task = None

    async def execute(self, conn: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        task = self.task
        if task is not None and asyncio.current_task() is task:
            self.sent += 1
            if self.sent == self.point:
                task.cancel()
                if self.twice:
                    # Once more one iteration later, while the call cleans up.
                    asyncio.get_running_loop().call_soon(task.cancel)
        return await self.original(conn, fn, *args, **kwargs)


@pytest.fixture
def canceller(monkeypatch: pytest.MonkeyPatch) -> Canceller:
    found = Canceller(aiosqlite.Connection._execute)

    async def execute(conn: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await found.execute(conn, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", execute)
    return found


async def cancel_at(
    canceller: Canceller, call: Awaitable[object], point: int, *, twice: bool = False
) -> bool:
    """Run ``call`` in a task cancelled at ``point`` (0: before it starts; n: while its
    n-th statement is in flight) and wait for it to end. True when it was cancelled,
    False when it finished before reaching that point."""
    task = asyncio.ensure_future(call)
    if point == 0:
        task.cancel()
    else:
        canceller.arm(task, point, twice=twice)
    try:
        await asyncio.wait_for(task, BOUND)
    except asyncio.CancelledError:
        return True
    finally:
        canceller.disarm()
    return False


def points() -> Iterator[int]:
    """0, 1, 2, ...: cancellation points until the caller stops (at most MAX_POINTS)."""
    yield from range(MAX_POINTS)
    raise AssertionError(f"a call sent more than {MAX_POINTS} statements")


async def cancel_after(call: Awaitable[object], iterations: int) -> bool:
    """Run ``call`` in a task, cancel it after ``iterations`` event-loop iterations and wait
    for it to end. True when it was cancelled, False when it finished first."""
    task = asyncio.ensure_future(call)
    for _ in range(iterations):
        if task.done():
            break
        await asyncio.sleep(0)  # one iteration of the event loop, not a wait for anything
    task.cancel()
    try:
        await asyncio.wait_for(task, BOUND)
    except asyncio.CancelledError:
        return True
    return False


async def assert_next_write_commits(
    repo: SqliteRepository, other: sqlite3.Connection, name: str
) -> None:
    """A write after the cancellation commits: a second connection sees its row."""
    await asyncio.wait_for(repo.register_server(server(name)), BOUND)
    found = other.execute(
        "SELECT COUNT(*) FROM queued_task_workers WHERE server_name = ?", (name,)
    ).fetchone()
    assert found == (1,), f"the write after cancelling ({name}) is not visible elsewhere"
    assert not other.in_transaction


def server(name: str) -> ServerInfo:
    return ServerInfo(server_name=name, hostname="test-host", pid=1, max_workers=2)


def count(other: sqlite3.Connection, sql: str) -> int:
    return int(other.execute(sql).fetchone()[0])


async def test_a_cancelled_create_is_all_or_nothing_and_the_next_write_commits(
    db_path: Path, repo: SqliteRepository, canceller: Canceller
) -> None:
    applied: set[bool] = set()
    with observer(db_path) as other:
        for point in points():
            before = count(other, "SELECT COUNT(*) FROM queued_tasks")
            batch = [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
            cancelled = await cancel_at(canceller, repo.create_tasks(batch), point)
            tasks = count(other, "SELECT COUNT(*) FROM queued_tasks")
            edges = count(other, "SELECT COUNT(*) FROM queued_task_dependencies")
            # Each batch is 3 tasks and 2 edges, written whole or not at all.
            assert tasks - before in (0, 3), point
            assert edges == 2 * tasks // 3, point
            await assert_next_write_commits(repo, other, f"create-{point}")
            if not cancelled:
                break
            applied.add(tasks > before)
    # Cancelled while its COMMIT was in flight, a creation took effect; earlier, it did not.
    assert applied == {True, False}, applied


async def test_writes_cancelled_at_every_point_leave_no_transaction_open(
    db_path: Path, repo: SqliteRepository, canceller: Canceller
) -> None:
    """Every kind of write (transactions of several statements, single statements) and a
    snapshot read, cancelled at every point (and, in a second sweep, cancelled again one
    iteration later, while it cleans up): afterwards a write commits and is visible from a
    second connection. Claims cancelled with their COMMIT in flight took effect and earlier
    ones did not."""
    await create_many(repo, 20)
    later = datetime.now(UTC) + timedelta(hours=1)
    claims_applied: set[bool] = set()

    async def claim(point: int, twice: bool) -> bool:
        before = count(other, "SELECT COUNT(*) FROM queued_tasks WHERE state = 'doing'")
        cancelled = await cancel_at(canceller, repo.claim_tasks("claimer", 2), point, twice=twice)
        after = count(other, "SELECT COUNT(*) FROM queued_tasks WHERE state = 'doing'")
        if cancelled:
            claims_applied.add(after > before)
        # Hand the claimed tasks back so that there is always something to claim.
        claimed = await repo.claim_tasks("claimer", 100)
        await repo.complete_tasks(
            "claimer", [Outcome(task_id=task.id, state=TaskState.ENQUEUED) for task in claimed]
        )
        return cancelled

    calls: dict[str, Callable[[int, bool], Awaitable[bool]]] = {"claim": claim}
    others: dict[str, Callable[[], Awaitable[object]]] = {
        "complete": lambda: repo.complete_tasks(
            "nobody", [Outcome(task_id=1, state=TaskState.DONE)]
        ),
        "rescue": lambda: repo.rescue_stale(datetime.now(UTC) - timedelta(hours=1)),
        "prune": lambda: repo.prune(datetime.now(UTC) - timedelta(days=1)),
        "retry": lambda: repo.retry_tasks([1, 2, 3]),
        "contexts": lambda: repo.update_contexts({1: {"k": "v"}}),
        "register": lambda: repo.register_server(server("single")),
        "heartbeat": lambda: repo.heartbeat("single", 1, 1),
        "unregister": lambda: repo.unregister_server("single"),
        "list": lambda: repo.list_tasks(limit=5),
        "stats": repo.stats,
        "schedule": lambda: repo.create_tasks([new("later", date_scheduled=later)]),
    }
    for verb, make in others.items():
        calls[verb] = lambda point, twice, make=make: cancel_at(  # type: ignore[misc]
            canceller, make(), point, twice=twice
        )
    with observer(db_path) as other:
        for twice in (False, True):
            for verb, call in calls.items():
                for point in points():
                    cancelled = await call(point, twice)
                    await assert_next_write_commits(repo, other, f"{verb}-{twice}-{point}")
                    if not cancelled:
                        break
    assert claims_applied == {True, False}, claims_applied


async def test_a_cancelled_write_then_a_single_statement_commits(
    db_path: Path, repo: SqliteRepository
) -> None:
    """The shape of a worker pool's stop: the reaper's rescue is cancelled, then the server
    deletes its row with a single statement, which must not land in the rescue's
    transaction."""
    with observer(db_path) as other:
        for trial in range(TRIALS * ITERATIONS):
            name = f"server-{trial}"
            await repo.register_server(server(name))
            await cancel_after(repo.rescue_stale(datetime.now(UTC)), trial % ITERATIONS)
            await asyncio.wait_for(repo.unregister_server(name), BOUND)
            left = other.execute(
                "SELECT COUNT(*) FROM queued_task_workers WHERE server_name = ?", (name,)
            ).fetchone()
            assert left == (0,), f"trial {trial}: the server row is still there"


async def test_a_pool_stopped_at_once_leaves_no_server_row(tmp_path: Path) -> None:
    """A WorkerPool stopped right after starting (its reaper's first rescue cancelled)
    deletes its server row."""
    for trial in range(30):
        url = f"sqlite://{tmp_path}/pool-{trial}.sqlite3"
        async with TaskQueue(QueueConfig(database_url=url)) as queue:
            async with WorkerPool(queue):
                assert len(await queue.servers()) == 1
            assert await queue.servers() == [], f"trial {trial}: the server row is left"
