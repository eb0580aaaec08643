"""TaskQueue on PostgreSQL only: transactions, NOTIFY across connections, the seed's SQL."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskqueue_core import (
    Outcome,
    QueueConfig,
    ServerInfo,
    TaskCall,
    TaskQueue,
    TaskState,
)
from taskqueue_core.testing import run_until_idle
from tests.conftest import _asyncpg_url
from tests.core.conftest import CountingRepository, parked
from tests.core.tasks import SERVER, add, log_and_return

pytestmark = pytest.mark.postgres


# The four statements of the seed's "Monitoring and Debugging" section, verbatim.
SEED_ALL_TASKS = """
SELECT id, name, state, date_enqueued, date_started, date_done, parent_task
FROM queued_tasks
ORDER BY date_enqueued DESC;
"""

SEED_TASK_LOGS = """
SELECT qt.name, qtl.type, qtl.message, qtl.date_created
FROM queued_task_logs qtl
JOIN queued_tasks qt ON qtl.queued_task_id = qt.id
ORDER BY qtl.date_created DESC;
"""

SEED_ACTIVE_WORKERS = """
SELECT server_name, max_workers, active_workers, idle_workers, is_running, last_heartbeat
FROM queued_task_workers
WHERE is_running = true;
"""

SEED_HIERARCHY = """
WITH RECURSIVE task_hierarchy AS (SELECT id, name, parent_task, 1 as level, ARRAY[id] as path
                                  FROM queued_tasks
                                  WHERE parent_task IS NULL

                                  UNION ALL

                                  SELECT qt.id, qt.name, qt.parent_task, th.level + 1, th.path || qt.id
                                  FROM queued_tasks qt
                                  JOIN task_hierarchy th ON qt.parent_task = th.id)
SELECT level, REPEAT('  ', level - 1) || name as indented_name, id, path
FROM task_hierarchy
ORDER BY path;
"""  # noqa: E501


def _config(url: str, **overrides: object) -> QueueConfig:
    values: dict[str, object] = {
        "database_url": url,
        "polling_interval": 3600,
        "fallback_polling_interval": 3600,
        "secret_key": "core-tests",
    }
    values.update(overrides)
    return QueueConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def pg_queue(pg_url: str) -> AsyncIterator[TaskQueue]:
    """A queue built from its config alone, as an application would build it."""
    queue = TaskQueue(_config(pg_url))
    async with queue:
        yield queue


@pytest.fixture
async def sql(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_queue_builds_its_postgres_repository_from_config(pg_queue: TaskQueue) -> None:
    from taskqueue_core.tortoise.postgres import PostgresRepository

    assert isinstance(pg_queue.repository, PostgresRepository)
    assert pg_queue.repository.supports_notify


async def test_enqueue_inside_the_applications_transaction(
    pg_url: str, pg_queue: TaskQueue, sql: asyncpg.Connection
) -> None:
    from tortoise.context import TortoiseContext
    from tortoise.transactions import in_transaction

    from taskqueue_core.tortoise.schema import tortoise_config

    async with TortoiseContext() as ctx:
        await ctx.init(config=tortoise_config(pg_url, connection_name="app"))

        class Rollback(Exception):
            pass

        with pytest.raises(Rollback):
            async with in_transaction("app") as conn:
                ref = await pg_queue.enqueue(add, 1, 2, name="rolled back", transaction=conn)
                assert ref.task_id is not None
                raise Rollback
        assert await sql.fetchval("SELECT count(*) FROM queued_tasks") == 0

        async with in_transaction("app") as conn:
            ref = await pg_queue.enqueue(add, 3, 4, name="committed", transaction=conn)
            [other] = await pg_queue.enqueue_many(
                [TaskCall(add, (5, 6), parent=ref)], transaction=conn
            )
            # not visible to others until the application commits
            assert await sql.fetchval("SELECT count(*) FROM queued_tasks") == 0
        assert await sql.fetchval("SELECT count(*) FROM queued_tasks") == 2
        task = await pg_queue.get_task(await ref.get_task_id())
        child = await pg_queue.get_task(await other.get_task_id())
        assert child.parent_task == task.id
        assert (task.name, task.state, task.args) == ("committed", TaskState.ENQUEUED, [3, 4])


@pytest.mark.parametrize("notify", [True, False])
async def test_wait_across_connections(pg_url: str, notify: bool) -> None:
    """Completed through another repository (another process, as far as events go): with
    NOTIFY the waiter is woken by it (polling is hourly); without, it polls the waited id."""
    from taskqueue_core.tortoise.postgres import PostgresRepository

    counting = CountingRepository(PostgresRepository(pg_url, use_notify=notify))
    config = _config(pg_url, polling_interval=3600 if notify else 0.05)
    other = PostgresRepository(pg_url, use_notify=notify)
    async with TaskQueue(config, repository=counting) as queue:  # type: ignore[arg-type]
        assert queue.repository.supports_notify is notify
        await other.open()
        try:
            ref = queue.add_task(add, 2, 3)
            waiter = await parked(counting, ref)
            [claimed] = await other.claim_tasks(SERVER, 10)
            await other.complete_tasks(SERVER, [Outcome(claimed.id, TaskState.DONE, result=5)])
            assert await asyncio.wait_for(waiter, 10) == 5
        finally:
            await other.close()
        polls = queue._end_watcher().polls
    assert polls == 0 if notify else polls >= 1
    assert counting.subscribe_calls == 1


async def test_bulk_add_task_figures(pg_queue: TaskQueue, sql: asyncpg.Connection) -> None:
    """10,000 add_task calls in one tick: how long to return, and to be written."""
    started = time.perf_counter()
    refs = [pg_queue.add_task(add, i, i) for i in range(10_000)]
    returned = time.perf_counter() - started
    await asyncio.wait_for(pg_queue.flush(), 120)
    written = time.perf_counter() - started
    assert all(r.created for r in refs)
    assert await sql.fetchval("SELECT count(*) FROM queued_tasks") == 10_000
    if os.environ.get("TASKQUEUE_PRINT_FIGURES"):
        print(f"\n10,000 add_task: returned in {returned:.3f} s, written in {written:.3f} s")


async def test_seed_monitoring_queries_on_a_tree_built_through_the_queue(
    pg_queue: TaskQueue, sql: asyncpg.Connection
) -> None:
    root = pg_queue.add_task(log_and_return, "import", name="import orders")
    order1 = pg_queue.add_task(log_and_return, "order 1", name="process order 1", parent=root)
    order2 = pg_queue.add_task(log_and_return, "order 2", name="process order 2", parent=root)
    confirm = pg_queue.add_task(
        log_and_return, "confirmation", name="send confirmation", parent=order1
    )
    await run_until_idle(pg_queue, timeout=60)
    ids = {
        name: await ref.get_task_id()
        for name, ref in [
            ("import orders", root),
            ("process order 1", order1),
            ("process order 2", order2),
            ("send confirmation", confirm),
        ]
    }
    await pg_queue.repository.register_server(
        ServerInfo(server_name="web-1", hostname="web-1.local", pid=4242, max_workers=4)
    )

    # -- View all tasks
    rows = await sql.fetch(SEED_ALL_TASKS)
    assert {r["name"]: (r["id"], r["parent_task"]) for r in rows} == {
        "import orders": (ids["import orders"], None),
        "process order 1": (ids["process order 1"], ids["import orders"]),
        "process order 2": (ids["process order 2"], ids["import orders"]),
        "send confirmation": (ids["send confirmation"], ids["process order 1"]),
    }
    assert {r["state"] for r in rows} == {"done"}
    assert all(r["date_started"] <= r["date_done"] for r in rows)

    # -- View task logs
    rows = await sql.fetch(SEED_TASK_LOGS)
    assert sorted((r["name"], r["type"], r["message"]) for r in rows) == [
        ("import orders", "info", "processing import"),
        ("process order 1", "info", "processing order 1"),
        ("process order 2", "info", "processing order 2"),
        ("send confirmation", "info", "processing confirmation"),
    ]
    # the DESC order: the confirmation ran last, so its line comes first
    assert rows[0]["name"] == "send confirmation"

    # -- View active workers
    rows = await sql.fetch(SEED_ACTIVE_WORKERS)
    assert [(r["server_name"], r["max_workers"], r["is_running"]) for r in rows] == [
        ("web-1", 4, True)
    ]
    assert rows[0]["last_heartbeat"] is not None

    # -- Task hierarchy view
    rows = await sql.fetch(SEED_HIERARCHY)
    r, o1, o2, c = (
        ids[n] for n in ("import orders", "process order 1", "process order 2", "send confirmation")
    )
    assert [(x["level"], x["indented_name"], x["id"], list(x["path"])) for x in rows] == [
        (1, "import orders", r, [r]),
        (2, "  process order 1", o1, [r, o1]),
        (3, "    send confirmation", c, [r, o1, c]),
        (2, "  process order 2", o2, [r, o2]),
    ]
