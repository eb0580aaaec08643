"""Claims and completions under concurrency: no task claimed twice, children in order."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import asyncpg
import pytest

from taskqueue_core.models import FunctionRef, NewTask, Outcome, Task, TaskFilter, TaskState
from taskqueue_core.tortoise.postgres import PostgresRepository

pytestmark = pytest.mark.postgres

FUNCTION = FunctionRef(module_name="tests.postgres.test_claims", function_name="noop")
WAIT = 120.0
"""Bound of each concurrent run, in seconds."""


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


async def open_repositories(url: str, count: int) -> list[PostgresRepository]:
    repositories = [PostgresRepository(url, use_notify=False) for _ in range(count)]
    await asyncio.gather(*(r.open() for r in repositories))
    return repositories


async def left(repository: PostgresRepository, *states: TaskState) -> int:
    """How many tasks are in ``states`` (through the claimer's own connections)."""
    return (await repository.list_tasks(TaskFilter(states=states), limit=0)).total


async def test_eight_claimers_take_each_task_exactly_once(
    repo: PostgresRepository, db: asyncpg.Connection, pg_url: str
) -> None:
    ids: list[int] = []
    for start in range(0, 2000, 500):
        ids += await repo.create_tasks(
            [NewTask(f"t{i}", FUNCTION) for i in range(start, start + 500)]
        )
    claimers = await open_repositories(pg_url, 8)
    rng = random.Random(7)

    async def claim_all(n: int, repository: PostgresRepository) -> list[Task]:
        got: list[Task] = []
        while True:
            batch = await repository.claim_tasks(f"server-{n}", rng.randint(5, 40))
            got += batch
            # An empty batch may only mean that the others hold the last rows for a moment.
            if not batch and await left(repository, TaskState.ENQUEUED) == 0:
                return got

    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(claim_all(n, r) for n, r in enumerate(claimers))), WAIT
        )
    finally:
        await asyncio.gather(*(r.close() for r in claimers))

    claimed = Counter(task.id for batch in results for task in batch)
    assert sorted(claimed) == sorted(ids)
    assert set(claimed.values()) == {1}
    assert all(len(batch) > 0 for batch in results)  # every claimer got a share
    owners = {task.id: task.claimed_by for batch in results for task in batch}
    rows = await db.fetch("SELECT id, state, claimed_by FROM queued_tasks")
    assert {r["state"] for r in rows} == {"doing"}
    assert {r["id"]: r["claimed_by"] for r in rows} == owners


async def test_concurrent_workers_run_a_fan_in_graph_in_order(
    repo: PostgresRepository, db: asyncpg.Connection, pg_url: str
) -> None:
    rng = random.Random(11)
    parents = await repo.create_tasks([NewTask(f"p{i}", FUNCTION) for i in range(150)])
    children = await repo.create_tasks(
        [NewTask(f"c{i}", FUNCTION, parent_ids=tuple(rng.sample(parents, 3))) for i in range(300)]
    )
    workers = await open_repositories(pg_url, 8)

    async def work(n: int, repository: PostgresRepository) -> list[int]:
        ran: list[int] = []
        name = f"worker-{n}"
        while True:
            batch = await repository.claim_tasks(name, rng.randint(3, 20))
            if batch:
                ran += [t.id for t in batch]
                done = await repository.complete_tasks(
                    name, [Outcome(t.id, TaskState.DONE, result=t.id) for t in batch]
                )
                assert done == [t.id for t in batch]
            elif not await left(repository, TaskState.WAITING, TaskState.ENQUEUED, TaskState.DOING):
                return ran

    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(work(n, r) for n, r in enumerate(workers))), WAIT
        )
    finally:
        await asyncio.gather(*(r.close() for r in workers))

    ran = Counter(task_id for batch in results for task_id in batch)
    assert sorted(ran) == sorted(parents + children)
    assert set(ran.values()) == {1}
    # Every child started only after its last parent was done.
    late = await db.fetch(
        """
        SELECT c.id FROM queued_tasks c
        JOIN queued_task_dependencies d ON d.task_id = c.id
        JOIN queued_tasks p ON p.id = d.parent_id
        GROUP BY c.id, c.date_started
        HAVING c.date_started < max(p.date_done)
        """
    )
    assert late == []
    pending = await db.fetchval("SELECT count(*) FROM queued_tasks WHERE pending_parents <> 0")
    assert pending == 0
