"""Cancelled calls: whatever await point a call is cancelled at, the connection ends up
outside any transaction (the call rolled back, or committed if its COMMIT had been sent),
and the next write commits on its own instead of joining a stale transaction.

aiosqlite cannot withdraw a statement once it is queued: a cancelled ``await`` leaves the
statement to run later in the connection's thread. These tests cancel calls after 0, 1,
2, ... event-loop iterations, which lands the cancellation before ``BEGIN IMMEDIATE`` is
sent, while it or a statement runs, and while the ``COMMIT`` is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from taskqueue_core import QueueConfig, TaskQueue
from taskqueue_core.models import Outcome, ServerInfo, TaskState
from taskqueue_core.pool import WorkerPool
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import create_many, new

BOUND = 60.0
"""Upper bound of every wait in these tests, in seconds."""

TRIALS = 4
MAX_TRIALS = 60
ITERATIONS = 40
"""Cancel after 0 to ITERATIONS - 1 event-loop iterations, TRIALS times over, and more
(at most MAX_TRIALS) until a cancelled call has been seen to take effect: the COMMIT is in
flight for about one iteration, which a sweep does not always hit."""


@contextlib.contextmanager
def observer(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the file: it sees only what was committed."""
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        yield other
    finally:
        other.close()


def sweep(covered: Callable[[], bool]) -> Iterator[tuple[int, int]]:
    """(trial, iterations) pairs: TRIALS sweeps, then more until ``covered()``."""
    for trial in range(MAX_TRIALS):
        if trial >= TRIALS and covered():
            return
        for iterations in range(ITERATIONS):
            yield trial, iterations


async def cancel_after(call: Awaitable[object], iterations: int, *, twice: bool = False) -> bool:
    """Run ``call`` in a task, cancel it after ``iterations`` event-loop iterations (and,
    ``twice``, once more one iteration later, while it cleans up) and wait for it to end.
    True when it was cancelled, False when it finished first."""
    task = asyncio.ensure_future(call)
    for _ in range(iterations):
        if task.done():
            break
        await asyncio.sleep(0)  # one iteration of the event loop, not a wait for anything
    task.cancel()
    if twice:
        await asyncio.sleep(0)
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
    db_path: Path, repo: SqliteRepository
) -> None:
    applied: set[bool] = set()
    with observer(db_path) as other:
        for trial, iterations in sweep(lambda: True in applied):
            before = count(other, "SELECT COUNT(*) FROM queued_tasks")
            batch = [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
            cancelled = await cancel_after(repo.create_tasks(batch), iterations)
            tasks = count(other, "SELECT COUNT(*) FROM queued_tasks")
            edges = count(other, "SELECT COUNT(*) FROM queued_task_dependencies")
            # Each batch is 3 tasks and 2 edges, written whole or not at all.
            assert tasks - before in (0, 3), (trial, iterations)
            assert edges == 2 * tasks // 3, (trial, iterations)
            if cancelled:
                applied.add(tasks > before)
            await assert_next_write_commits(repo, other, f"create-{trial}-{iterations}")
    assert applied == {True, False}, (
        "the sweep should cancel some creations before and some after their COMMIT"
    )


async def test_writes_cancelled_at_every_point_leave_no_transaction_open(
    db_path: Path, repo: SqliteRepository
) -> None:
    """Every kind of write (transactions of several statements, single statements) and a
    snapshot read, cancelled at every point (every other sweep cancelled a second time
    while it cleans up): afterwards a write commits and is visible from
    a second connection. Some cancelled calls took effect (the COMMIT was in flight) and
    some did not, so the sweep covered both sides of the commit."""
    await create_many(repo, 20)
    later = datetime.now(UTC) + timedelta(hours=1)
    claims_applied: set[bool] = set()

    async def claim(iterations: int) -> None:
        before = count(other, "SELECT COUNT(*) FROM queued_tasks WHERE state = 'doing'")
        cancelled = await cancel_after(repo.claim_tasks("claimer", 2), iterations)
        after = count(other, "SELECT COUNT(*) FROM queued_tasks WHERE state = 'doing'")
        if cancelled:
            claims_applied.add(after > before)
        # Hand the claimed tasks back so that there is always something to claim.
        claimed = await repo.claim_tasks("claimer", 100)
        await repo.complete_tasks(
            "claimer", [Outcome(task_id=task.id, state=TaskState.ENQUEUED) for task in claimed]
        )

    calls: dict[str, Callable[[], Awaitable[object]]] = {
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
    with observer(db_path) as other:
        for trial, iterations in sweep(lambda: True in claims_applied):
            await claim(iterations)
            await assert_next_write_commits(repo, other, f"claim-{trial}-{iterations}")
            for verb, call in calls.items():
                await cancel_after(call(), iterations, twice=trial % 2 == 1)
                await assert_next_write_commits(repo, other, f"{verb}-{trial}-{iterations}")
    assert claims_applied == {True, False}, (
        "the sweep should cancel some claims before and some after their COMMIT"
    )


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
