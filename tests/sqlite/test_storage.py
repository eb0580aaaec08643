"""How values are stored: JSON text, fixed-width UTC timestamps, the partial indexes."""

from __future__ import annotations

import math
import re
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from taskqueue_core.models import Outcome, TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import new

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$")


def raw(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.parametrize(
    "result",
    [1.0, -0.0, 1e16, 2.5, 2**70, -(2**64), 7, True, None, "1.0", [1.0, 2**70], {"x": 1.0}],
)
async def test_results_round_trip_with_their_json_type(
    repo: SqliteRepository, result: object
) -> None:
    """The JSON columns have NUMERIC affinity: "1.0" would come back as the integer 1 and
    2**70 as a float unless the repository guards against it."""
    (task_id,) = await repo.create_tasks([new()])
    await repo.claim_tasks("s", 1)
    await repo.complete_tasks("s", [Outcome(task_id=task_id, state=TaskState.DONE, result=result)])
    (task,) = await repo.get_tasks([task_id])
    assert task.result == result
    assert type(task.result) is type(result)
    if isinstance(result, float):
        assert math.copysign(1, task.result) == math.copysign(1, result)


async def test_json_is_stored_as_text(db_path: Path, repo: SqliteRepository) -> None:
    (task_id,) = await repo.create_tasks(
        [new(args=["é", 1], kwargs={"k": None}, context={"a": {"b": 2}})]
    )
    ((args, kwargs, context),) = raw(
        db_path, "SELECT args, kwargs, context FROM queued_tasks WHERE id = ?", task_id
    )
    assert (args, kwargs, context) == ('["é",1]', '{"k":null}', '{"a":{"b":2}}')


async def test_datetimes_are_stored_as_fixed_width_utc_and_read_back_aware(
    db_path: Path, repo: SqliteRepository
) -> None:
    plus_five = timezone(timedelta(hours=5))
    scheduled = datetime(2020, 1, 2, 8, 0, 0, tzinfo=plus_five)  # 03:00 UTC
    (task_id,) = await repo.create_tasks([new(date_scheduled=scheduled)])
    ((stored_enqueued, stored_scheduled),) = raw(
        db_path, "SELECT date_enqueued, date_scheduled FROM queued_tasks WHERE id = ?", task_id
    )
    assert STAMP.match(str(stored_enqueued)) and STAMP.match(str(stored_scheduled))
    assert stored_scheduled == "2020-01-02 03:00:00.000000+00:00"
    (task,) = await repo.get_tasks([task_id])
    assert task.date_scheduled == scheduled
    assert task.date_scheduled is not None and task.date_scheduled.tzinfo == UTC
    assert task.date_enqueued.tzinfo == UTC


async def test_claim_order_compares_instants_not_local_spellings(repo: SqliteRepository) -> None:
    """Two past schedules written in different offsets: the earlier instant is claimed first
    even though its local spelling sorts later."""
    now = datetime.now(UTC)
    earlier = (now - timedelta(hours=2)).astimezone(timezone(timedelta(hours=10)))
    later = (now - timedelta(hours=1)).astimezone(timezone(timedelta(hours=-10)))
    assert str(earlier) > str(later)
    late_id, early_id = await repo.create_tasks(
        [new("late", date_scheduled=later), new("early", date_scheduled=earlier)]
    )
    assert [t.id for t in await repo.claim_tasks("s", 1)] == [early_id]
    assert [t.id for t in await repo.claim_tasks("s", 1)] == [late_id]


async def test_claim_reads_the_partial_claim_index(repo: SqliteRepository) -> None:
    """The claim statement, as executed, is planned on queued_tasks_claim_idx without a sort."""
    await repo.create_tasks([new(priority=p) for p in range(5)])
    statements: list[str] = []
    async with repo._reading("trace") as conn:
        await conn.set_trace_callback(statements.append)
    try:
        assert len(await repo.claim_tasks("s", 2)) == 2
    finally:
        async with repo._reading("trace") as conn:
            await conn.set_trace_callback(None)
    (claim,) = [s for s in statements if "state = 'doing'" in s]
    select = claim[claim.index("SELECT id FROM queued_tasks") : claim.rindex(")")]
    # Without statistics the planner would pick the plain state index and sort.
    assert "INDEXED BY queued_tasks_claim_idx" in select
    async with repo._reading("plan") as conn:
        plan = " / ".join(str(row[3]) for row in await conn.execute_fetchall(
            f"EXPLAIN QUERY PLAN {select}"
        ))  # fmt: skip
    assert "queued_tasks_claim_idx" in plan
    assert "TEMP B-TREE" not in plan


async def test_the_parent_index_is_partial_and_replaces_the_full_one(db_path: Path) -> None:
    """A database made with the full ``parent_task`` index gets the partial one on open; a
    lookup of a parent's children uses it, and tasks without a parent are not in it."""
    first = SqliteRepository(f"sqlite://{db_path}")
    await first.open()
    try:
        [parent] = await first.create_tasks([new("parent")])
        await first.create_tasks([new("child", parent_ids=(parent,)), new("alone")])
    finally:
        await first.close()
    with sqlite3.connect(db_path) as conn:  # the index of an older schema
        conn.execute("DROP INDEX queued_tasks_parent_idx")
        conn.execute('CREATE INDEX "idx_queued_task_parent__75ab0b" ON queued_tasks (parent_task)')

    again = SqliteRepository(f"sqlite://{db_path}")
    await again.open()
    await again.close()
    indexes = dict(raw(db_path, "SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    assert "idx_queued_task_parent__75ab0b" not in indexes
    assert 'WHERE "parent_task" IS NOT NULL' in str(indexes["queued_tasks_parent_idx"])
    plan = raw(db_path, "EXPLAIN QUERY PLAN SELECT id FROM queued_tasks WHERE parent_task = ?", 1)
    assert "queued_tasks_parent_idx" in str(plan), plan
    entries = raw(db_path, "SELECT count(*) FROM queued_tasks INDEXED BY queued_tasks_parent_idx "
                  "WHERE parent_task IS NOT NULL")  # fmt: skip
    assert entries == [(1,)]


async def test_outcomes_for_many_tasks_are_applied_in_one_call(repo: SqliteRepository) -> None:
    ids = await repo.create_tasks([new(f"t{i}") for i in range(300)])
    claimed = await repo.claim_tasks("s", 300)
    states = [TaskState.DONE, TaskState.FAILED, TaskState.ENQUEUED, TaskState.STOPPED]
    outcomes = [
        Outcome(task_id=t.id, state=states[i % 4], result=i, error_name="E")
        for i, t in enumerate(claimed)
    ]
    assert await repo.complete_tasks("s", outcomes) == [t.id for t in claimed]
    stored = {t.id: t for t in await repo.get_tasks(ids)}
    for i, t in enumerate(claimed):
        assert stored[t.id].state is states[i % 4]
    assert sorted(t.id for t in claimed) == ids
