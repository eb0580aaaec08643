"""Releases in chunks: a done task with more than ``RELEASE_CHUNK`` children.

The completion leaves them to ``releases`` (``release_next`` set); each chunk commits on its
own. These tests stop a release where a dead worker would leave it, run releasers side by
side, and add a child while a release is under way.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from taskqueue_core.models import FunctionRef, NewTask, Outcome, TaskState
from taskqueue_core.tortoise.postgres import PostgresRepository, releases
from taskqueue_core.tortoise.postgres.statements import COMPLETE_SQL, RELEASE_CHUNK, RELEASE_SQL
from tests.contract.helpers import utcnow

pytestmark = pytest.mark.postgres

FUNCTION = FunctionRef(module_name="tests.postgres.test_releases", function_name="noop")
CHILDREN = 2 * RELEASE_CHUNK + 500


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


async def fan_out(repo: PostgresRepository, *, others: int = 0) -> tuple[int, list[int], list[int]]:
    """A parent claimed by ``s``, its ``CHILDREN`` children (the first ``others`` of them
    waiting for a second parent, never done, too), and those children; ids ascending."""
    parent, other = await repo.create_tasks([NewTask("parent", FUNCTION), NewTask("o", FUNCTION)])
    both = await repo.create_tasks([NewTask("both", FUNCTION, parent_ids=(parent, other))] * others)
    alone = await repo.create_tasks(
        [NewTask("alone", FUNCTION, parent_ids=(parent,))] * (CHILDREN - others)
    )
    claimed = await repo.claim_tasks("s", 2)
    assert {t.id for t in claimed} == {parent, other}
    return parent, both, alone


async def complete_only(db: asyncpg.Connection, parent: int) -> None:
    """What a worker killed right after writing the parent's outcome leaves: the completion
    statement alone, without the chunks that follow it."""
    row = await db.fetchrow(COMPLETE_SQL, "s", [parent], ["done"], *[None] * 8, None)
    assert row is not None and row["releasing"] == [parent]


async def census(db: asyncpg.Connection, ids: list[int]) -> dict[tuple[str, int], int]:
    """(state, pending_parents) -> how many of ``ids``."""
    rows = await db.fetch(
        "SELECT state, pending_parents, count(*) AS n FROM queued_tasks "
        "WHERE id = ANY($1::bigint[]) GROUP BY 1, 2",
        ids,
    )
    return {(r["state"], r["pending_parents"]): r["n"] for r in rows}


async def release_next(db: asyncpg.Connection, task_id: int) -> int | None:
    value: int | None = await db.fetchval(
        "SELECT release_next FROM queued_tasks WHERE id = $1", task_id
    )
    return value


async def test_the_completion_leaves_a_big_release_to_chunks_of_their_own(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    parent, _, children = await fan_out(repo)
    await complete_only(db, parent)
    assert await release_next(db, parent) == children[0]
    assert await census(db, children) == {("waiting", 1): CHILDREN}

    row = await db.fetchrow(RELEASE_SQL, parent, RELEASE_CHUNK, None)
    assert row is not None and row["moved"] and row["next"] == children[RELEASE_CHUNK]
    assert await census(db, children[:RELEASE_CHUNK]) == {("enqueued", 0): RELEASE_CHUNK}
    assert await census(db, children[RELEASE_CHUNK:]) == {("waiting", 1): CHILDREN - RELEASE_CHUNK}

    # The reaper leaves a release alone while it may still be in a worker's hands...
    assert await repo.rescue_stale(utcnow() - timedelta(minutes=1)) == []
    assert await release_next(db, parent) == children[RELEASE_CHUNK]
    # ...and finishes it once its task has been done for longer than a worker may take.
    await repo.rescue_stale(utcnow() + timedelta(seconds=1))
    assert await release_next(db, parent) is None
    assert await census(db, children) == {("enqueued", 0): CHILDREN}
    claimed = await repo.claim_tasks("s", 2 * CHILDREN)
    # (With the other parent, whose server "s" never heartbeats: the reaper put it back.)
    assert sorted(t.id for t in claimed if t.name == "alone") == children
    assert len(claimed) == CHILDREN + 1


async def test_releasers_side_by_side_count_each_edge_once(
    repo: PostgresRepository, db: asyncpg.Connection, pg_url: str
) -> None:
    # Every child also waits for a parent that never ends: a second count of the same edge
    # would release it.
    parent, children, _ = await fan_out(repo, others=CHILDREN)
    await complete_only(db, parent)
    other = PostgresRepository(pg_url)
    await other.open()
    try:
        async with repo._connection() as one, other._connection() as two, asyncio.timeout(30):
            await asyncio.gather(
                releases.release_chunks(repo, one, parent, releases.after_first()),
                releases.release_chunks(other, two, parent, releases.after_first()),
                other.rescue_stale(utcnow() + timedelta(seconds=1)),
            )
    finally:
        await other.close()
    assert await release_next(db, parent) is None
    assert await census(db, children) == {("waiting", 1): CHILDREN}


async def test_a_child_added_during_a_release_waits_for_it_and_is_released(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    parent, _, children = await fan_out(repo)
    await complete_only(db, parent)
    await db.fetchrow(RELEASE_SQL, parent, RELEASE_CHUNK, None)
    (late,) = await repo.create_tasks([NewTask("late", FUNCTION, parent_ids=(parent,))])
    assert await census(db, [late]) == {("waiting", 1): 1}

    async with repo._connection() as conn:
        assert await releases.release_chunks(repo, conn, parent, releases.after_first())
    assert await census(db, [*children, late]) == {("enqueued", 0): CHILDREN + 1}
    # Once the release is over, a new child of the parent starts ready.
    (after,) = await repo.create_tasks([NewTask("after", FUNCTION, parent_ids=(parent,))])
    assert await census(db, [after]) == {("enqueued", 0): 1}


async def test_complete_tasks_hands_a_big_release_to_the_background(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    parent, _, children = await fan_out(repo)
    assert await repo.complete_tasks("s", [Outcome(parent, TaskState.DONE)]) == [parent]
    # The first chunk is released before complete_tasks returns, the rest after.
    first = releases.FIRST_CHUNK
    assert await census(db, children[:first]) == {("enqueued", 0): first}
    await repo._releaser.settled()
    assert await release_next(db, parent) is None
    assert await census(db, children) == {("enqueued", 0): CHILDREN}


async def test_close_waits_for_the_releases_under_way(pg_url: str, db: asyncpg.Connection) -> None:
    repo = PostgresRepository(pg_url)
    await repo.open()
    try:
        parent, _, children = await fan_out(repo)
        assert await repo.complete_tasks("s", [Outcome(parent, TaskState.DONE)]) == [parent]
    finally:
        await repo.close()
    assert await census(db, children) == {("enqueued", 0): CHILDREN}
