"""Plans of the hot statements stay index-driven whatever the statistics say.

A queue table is mostly finished rows, its share of each state changes faster than ANALYZE
runs, and one parent may have thousands of children: the claim must read the claim index in
order, and a completion must look tasks and edges up by key, never scan a table.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from taskqueue_core.models import FunctionRef, NewTask, TaskFilter
from taskqueue_core.tortoise.postgres import PostgresRepository, filters, statements

pytestmark = pytest.mark.postgres

FUNCTION = FunctionRef(module_name="tests.postgres.test_plans", function_name="noop")


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


FINISHED_ROWS = """
INSERT INTO queued_tasks (
    name, module_name, function_name, state, args, kwargs, context, pending_parents, channel,
    priority, retry_count, max_retries, date_enqueued, date_scheduled, date_started,
    date_done, date_ended
)
SELECT 'old' || g, 'm', 'f', 'done', '[]', '{}', '{}', 0, 'default', g % 5, 0, 3,
       now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
       now() - interval '1 day', now() - interval '1 day'
FROM generate_series(1, $1) AS g
"""


async def plan_of(db: asyncpg.Connection, statement: str, arguments: str) -> str:
    """The plan of ``statement`` executed with ``arguments`` (SQL literals), as text."""
    await db.execute(f"PREPARE plan_under_test AS {statement}")
    try:
        rows = await db.fetch(f"EXPLAIN EXECUTE plan_under_test({arguments})")
    finally:
        await db.execute("DEALLOCATE plan_under_test")
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_claim_reads_the_partial_claim_index(
    repo: PostgresRepository, db: asyncpg.Connection, mode: str
) -> None:
    await db.execute(FINISHED_ROWS, 60_000)
    await repo.create_tasks(
        [
            NewTask(f"ready{i}", FUNCTION, priority=i % 3, channel="a" if i % 2 else "b")
            for i in range(200)
        ]
    )
    await db.execute("ANALYZE queued_tasks")
    await db.execute(f"SET plan_cache_mode = {mode}")

    any_channel = await plan_of(db, statements.CLAIM_ANY_SQL, "'server', 10")
    some_channels = await plan_of(db, statements.CLAIM_CHANNELS_SQL, "'server', 10, '{a}'")
    # Without a channel filter (a worker's default), the index gives the order: no sort.
    assert "Index Scan using queued_tasks_claim_idx" in any_channel, any_channel
    assert "Sort" not in any_channel, any_channel
    # With one, rows of other channels are filtered out while reading the same index.
    assert "queued_tasks_claim_idx" in some_channels, some_channels
    assert "idx_queued_task_state" not in some_channels, some_channels

    claimed = await repo.claim_tasks("server", 10)
    assert [t.priority for t in claimed] == [2] * 10


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_completion_looks_up_by_key_despite_skewed_statistics(
    repo: PostgresRepository, db: asyncpg.Connection, mode: str
) -> None:
    await db.execute(FINISHED_ROWS, 30_000)
    (fan_out,) = await repo.create_tasks([NewTask("map", FUNCTION)])
    for _ in range(4):
        await repo.create_tasks(
            [NewTask("part", FUNCTION, parent_ids=(fan_out,)) for _ in range(5_000)]
        )
    running = await repo.create_tasks([NewTask(f"r{i}", FUNCTION) for i in range(50)])
    await repo.claim_tasks("server", 100)
    await db.execute("ANALYZE")
    await db.execute(f"SET plan_cache_mode = {mode}")

    ids = ",".join(str(i) for i in running[:10])
    done = ",".join(["done"] * 10)
    plan = await plan_of(
        db,
        statements.COMPLETE_SQL,
        f"'server', '{{{ids}}}', '{{{done}}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, 'queue_new_task'",
    )
    assert "Seq Scan" not in plan, plan
    assert "idx_queued_task_state" not in plan, plan
    assert "queued_task_dependencies_children_idx" in plan, plan


async def analyzed_plan(db: asyncpg.Connection, statement: str, arguments: str) -> str:
    """``plan_of`` with actual row counts and loops (run in a transaction rolled back)."""
    await db.execute(f"PREPARE plan_under_test AS {statement}")
    try:
        async with db.transaction():
            rows = await db.fetch(f"EXPLAIN (ANALYZE) EXECUTE plan_under_test({arguments})")
            raise _RollBack(rows)
    except _RollBack as done:
        rows = done.rows
    finally:
        await db.execute("DEALLOCATE plan_under_test")
    return "\n".join(r[0] for r in rows)


class _RollBack(Exception):
    def __init__(self, rows: list[asyncpg.Record]) -> None:
        super().__init__("roll back")
        self.rows = rows


async def test_the_completion_keeps_one_plan_for_its_batches(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    """A chain of tasks, each completion releasing the next: after its first five runs,
    PostgreSQL runs the cached generic plan of the statement, instead of planning every batch
    anew (about 1 ms a batch: a third of a chain's time per link). It keeps planning anew
    when it estimates the generic plan dearer than a custom one plus planning, as it did when
    each outcome probed its children with a subquery of its own."""
    previous: int | None = None
    for _ in range(10):
        parents = () if previous is None else (previous,)
        (previous,) = await repo.create_tasks([NewTask("link", FUNCTION, parent_ids=parents)])
    await db.execute(f"PREPARE completion AS {statements.COMPLETE_SQL}")
    for _ in range(10):
        [task] = await repo.claim_tasks("server", 1)
        await db.execute(
            f"EXECUTE completion('server', '{{{task.id}}}', '{{done}}', "
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        )
    row = await db.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'completion'"
    )
    assert row is not None and row["generic_plans"] >= 4, dict(row or {})


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_a_big_completion_stays_linear_in_its_batch(
    repo: PostgresRepository, db: asyncpg.Connection, mode: str
) -> None:
    """500 outcomes: each row is probed once by key, then fetched once by its TID; neither
    the outcomes nor the table are read again per row (that was quadratic in the batch)."""
    await db.execute(FINISHED_ROWS, 60_000)
    await repo.create_tasks([NewTask(f"r{i}", FUNCTION) for i in range(600)])
    running = [t.id for t in await repo.claim_tasks("server", 500)]
    await db.execute("ANALYZE")
    await db.execute(f"SET plan_cache_mode = {mode}")

    ids = ",".join(str(i) for i in running)
    done = ",".join(["done"] * len(running))
    plan = await analyzed_plan(
        db,
        statements.COMPLETE_SQL,
        f"'server', '{{{ids}}}', '{{{done}}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, 'queue_new_task'",
    )
    assert "Seq Scan on queued_tasks" not in plan, plan
    assert "Tid Scan on queued_tasks" in plan, plan
    assert "Index Scan using queued_tasks_pkey" in plan, plan
    # The outcomes are read once each: no scan of them is repeated per row.
    rescanned = [
        line
        for line in plan.splitlines()
        if ("Function Scan on o" in line or "CTE Scan on pre" in line) and "loops=1)" not in line
    ]
    assert not rescanned, plan
    assert "rows=500 loops=1" in plan.split("CTE upd")[1].split("CTE seeds")[0], plan


async def fan_out(repo: PostgresRepository, children: int) -> int:
    """A parent claimed by ``server`` with ``children`` waiting children; its id."""
    (parent,) = await repo.create_tasks([NewTask("map", FUNCTION)])
    for start in range(0, children, 4_000):
        count = min(4_000, children - start)
        await repo.create_tasks([NewTask("part", FUNCTION, parent_ids=(parent,))] * count)
    [claimed] = await repo.claim_tasks("server", 1)
    assert claimed.id == parent
    return parent


def assert_linear(plan: str, released: str, rows: int) -> None:
    """``released`` (a part of ``plan``) found and updated each of ``rows`` children once: what
    runs once per child reads a few rows (its own edges), never a list of children (a nested
    loop over them is quadratic: tens of millions of comparisons, seconds, not milliseconds)."""
    assert f"rows={rows} loops=1" in released, plan
    per_child = re.findall(r"actual time=\S+ rows=(\d+) loops=([1-9]\d{3,})", released)
    assert all(int(found) <= 5 for found, _ in per_child), plan
    removed = [int(n) for n in re.findall(r"Rows Removed by Join Filter: (\d+)", released)]
    assert sum(removed) < rows, plan


@pytest.mark.parametrize("analyzed", [False, True])
@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_releasing_a_fan_out_stays_linear_in_its_children(
    repo: PostgresRepository, db: asyncpg.Connection, mode: str, analyzed: bool
) -> None:
    """A parent with as many children as the completion releases itself (``RELEASE_CHUNK``)
    ends: the completion updates each child once. Then a parent with 8,000: the completion
    leaves them to ``RELEASE_SQL``, whose chunks update each of theirs once."""
    await db.execute(FINISHED_ROWS, 20_000)
    small = await fan_out(repo, statements.RELEASE_CHUNK)
    if analyzed:
        await db.execute("ANALYZE")
    await db.execute(f"SET plan_cache_mode = {mode}")
    arguments = "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'queue_new_task'"
    plan = await analyzed_plan(
        db, statements.COMPLETE_SQL, f"'server', '{{{small}}}', '{{done}}', {arguments}"
    )
    released = plan.split("CTE released")[1].split("CTE ended")[0]
    assert_linear(plan, released, statements.RELEASE_CHUNK)

    big = await fan_out(repo, 8_000)
    if analyzed:
        await db.execute("ANALYZE")
    plan = await analyzed_plan(
        db, statements.COMPLETE_SQL, f"'server', '{{{big}}}', '{{done}}', {arguments}"
    )
    released = plan.split("CTE released")[1].split("CTE ended")[0]
    assert "rows=0 loops=1" in released.splitlines()[1], plan
    nulls = [None] * 8
    await db.fetchrow(statements.COMPLETE_SQL, "server", [big], ["done"], *nulls, None)
    first = "SELECT min(task_id) FROM queued_task_dependencies WHERE parent_id = $1"
    release_next = "SELECT release_next FROM queued_tasks WHERE id = $1"
    assert await db.fetchval(release_next, big) == await db.fetchval(first, big)
    for _ in range(2):
        plan = await analyzed_plan(
            db, statements.RELEASE_SQL, f"{big}, {statements.RELEASE_CHUNK}, 'queue_new_task'"
        )
        released = plan.split("CTE released")[1].split("CTE ready")[0]
        assert_linear(plan, released, statements.RELEASE_CHUNK)


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_next_due_probes_the_claim_index_per_priority(
    repo: PostgresRepository, db: asyncpg.Connection, mode: str
) -> None:
    """20,000 ready tasks and a few scheduled later on four priorities: a handful of index
    probes, never a read of every enqueued entry (the index is ordered by priority first)."""
    await db.execute(FINISHED_ROWS, 30_000)
    later = utcnow() + timedelta(hours=1)
    for _ in range(4):
        await repo.create_tasks([NewTask(f"ready{i}", FUNCTION) for i in range(5_000)])
    await repo.create_tasks(
        [
            NewTask(f"later{i}", FUNCTION, priority=i % 4, date_scheduled=later + timedelta(i))
            for i in range(40)
        ]
    )
    await db.execute("ANALYZE queued_tasks")
    await db.execute(f"SET plan_cache_mode = {mode}")

    for statement, arguments in (
        (statements.NEXT_DUE_ANY_SQL, ""),
        (statements.NEXT_DUE_CHANNELS_SQL, "'{default}'"),
    ):
        if arguments:
            plan = await analyzed_plan(db, statement, arguments)
        else:
            await db.execute(f"PREPARE plan_under_test AS {statement}")
            try:
                rows = await db.fetch("EXPLAIN (ANALYZE) EXECUTE plan_under_test")
            finally:
                await db.execute("DEALLOCATE plan_under_test")
            plan = "\n".join(r[0] for r in rows)
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
        probes = [line for line in plan.splitlines() if "queued_tasks_claim_idx" in line]
        assert probes, plan
        # Each probe stops at its first entry: at most one row per loop.
        assert all(re.search(r"actual time=\S+ rows=[01] loops", line) for line in probes), plan
    assert await repo.next_due() == later


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_children_are_found_through_the_partial_parent_index(
    repo: PostgresRepository, db: asyncpg.Connection, mode: str
) -> None:
    """The ``parent_task`` index holds the tasks that have a parent only; listing a parent's
    children (and the foreign key's ON DELETE SET NULL, the same condition) still uses it."""
    indexes = {
        r["indexname"]: r["indexdef"]
        for r in await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'queued_tasks'"
        )
    }
    assert "WHERE (parent_task IS NOT NULL)" in indexes["queued_tasks_parent_idx"], indexes
    assert not [name for name in indexes if name.startswith("idx_queued_task_parent")], indexes

    await db.execute(FINISHED_ROWS, 60_000)
    [parent] = await repo.create_tasks([NewTask("parent", FUNCTION)])
    await repo.create_tasks(
        [NewTask(f"child{i}", FUNCTION, parent_ids=(parent,)) for i in range(20)]
    )
    await db.execute("ANALYZE queued_tasks")
    await db.execute(f"SET plan_cache_mode = {mode}")

    where, _ = filters.filter_sql(TaskFilter(parent_task=parent))
    listing = await plan_of(db, f"SELECT id FROM queued_tasks{where}", str(parent))
    assert "queued_tasks_parent_idx" in listing, listing
    assert "Seq Scan" not in listing, listing
    size = await db.fetchval("SELECT pg_relation_size('queued_tasks_parent_idx')")
    assert size <= 2 * 8192, "the tasks without a parent are in the index"
