"""Consistency at the edges: children added while their parent ends, writes inside the
caller's transaction, errors of the driver, the reaper's lock and the connection options."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import asyncpg
import pytest

from taskqueue_core.exceptions import ConfigError, InvalidTaskError, RepositoryError
from taskqueue_core.models import (
    PARENT_FAILED,
    Event,
    FunctionRef,
    NewTask,
    Outcome,
    TaskState,
)
from taskqueue_core.tortoise.postgres import REAPER_LOCK_KEY, PostgresRepository
from taskqueue_core.tortoise.schema import tortoise_config
from tests.conftest import _asyncpg_url
from tests.contract.helpers import EventRecorder, created, tick

pytestmark = pytest.mark.postgres

FUNCTION = FunctionRef(module_name="tests.postgres.test_consistency", function_name="noop")
WAIT = 10.0
"""Bound of every wait in this module, in seconds."""


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


async def blocked_on_a_lock(db: asyncpg.Connection) -> None:
    """Return once some session of this database waits for a row lock (bounded)."""
    async with asyncio.timeout(WAIT):
        while not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            await asyncio.sleep(0.01)


async def in_open_transaction(
    pg_url: str, repo: PostgresRepository, task: NewTask
) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction, int]:
    """Create ``task`` through the caller-transaction path, leaving that transaction open."""
    conn = await asyncpg.connect(_asyncpg_url(pg_url))
    transaction = conn.transaction()
    await transaction.start()
    (task_id,) = await repo.create_tasks([task], transaction=conn)
    return conn, transaction, task_id


@pytest.mark.parametrize(
    ("outcome", "child_state"),
    [(TaskState.FAILED, TaskState.FAILED), (TaskState.DONE, TaskState.ENQUEUED)],
)
async def test_a_child_added_while_its_parent_ends_is_not_forgotten(
    repo: PostgresRepository,
    db: asyncpg.Connection,
    pg_url: str,
    outcome: TaskState,
    child_state: TaskState,
) -> None:
    # The completion's snapshot is older than the child's commit: without the row-version
    # guard the cascade would not see the child, which would then wait forever.
    (parent,) = await repo.create_tasks([NewTask("parent", FUNCTION)])
    await repo.claim_tasks("s", 1)
    conn, transaction, child = await in_open_transaction(
        pg_url, repo, NewTask("child", FUNCTION, parent_ids=(parent,))
    )
    try:
        ending = asyncio.create_task(
            repo.complete_tasks("s", [Outcome(parent, outcome, error_name="E")]),
            name="ending-parent",
        )
        await blocked_on_a_lock(db)
        await transaction.commit()
        assert await asyncio.wait_for(ending, WAIT) == [parent]
    finally:
        await conn.close()
    (task,) = await repo.get_tasks([child])
    assert task.state is child_state
    assert task.pending_parents == (1 if outcome is TaskState.FAILED else 0)
    if outcome is TaskState.FAILED:
        assert task.exception_name == PARENT_FAILED


async def test_a_grandchild_added_while_the_cascade_runs_is_failed_too(
    repo: PostgresRepository, db: asyncpg.Connection, pg_url: str
) -> None:
    parent, child = await repo.create_tasks(
        [NewTask("parent", FUNCTION), NewTask("child", FUNCTION, batch_parents=(0,))]
    )
    await repo.claim_tasks("s", 1)
    conn, transaction, grandchild = await in_open_transaction(
        pg_url, repo, NewTask("grandchild", FUNCTION, parent_ids=(child,))
    )
    try:
        ending = asyncio.create_task(
            repo.complete_tasks("s", [Outcome(parent, TaskState.FAILED, error_name="E")]),
            name="ending-parent",
        )
        await blocked_on_a_lock(db)
        await transaction.commit()
        assert await asyncio.wait_for(ending, WAIT) == [parent]
    finally:
        await conn.close()
    states = await repo.get_states([parent, child, grandchild])
    assert states == {
        parent: TaskState.FAILED,
        child: TaskState.FAILED,
        grandchild: TaskState.FAILED,
    }
    (task,) = await repo.get_tasks([grandchild])
    assert str(parent) in (task.exception_message or "")


async def test_a_child_added_while_its_parent_is_cancelled_is_cancelled(
    repo: PostgresRepository, db: asyncpg.Connection, pg_url: str
) -> None:
    (parent,) = await repo.create_tasks([NewTask("parent", FUNCTION)])
    conn, transaction, child = await in_open_transaction(
        pg_url, repo, NewTask("child", FUNCTION, parent_ids=(parent,))
    )
    try:
        cancelling = asyncio.create_task(repo.cancel_tasks([parent]), name="cancelling")
        await blocked_on_a_lock(db)
        await transaction.commit()
        assert await asyncio.wait_for(cancelling, WAIT) == sorted([parent, child])
    finally:
        await conn.close()
    assert await repo.get_states([child]) == {child: TaskState.CANCELLED}


# -- the caller's transaction ---------------------------------------------------------------


async def test_tasks_created_in_a_tortoise_transaction_follow_it(
    repo: PostgresRepository, pg_url: str
) -> None:
    from tortoise.context import TortoiseContext
    from tortoise.transactions import in_transaction

    recorder = EventRecorder()
    await repo.subscribe(recorder)
    context = TortoiseContext()
    with context:
        await context.init(config=tortoise_config(pg_url))
        try:
            with pytest.raises(RuntimeError):
                async with in_transaction("taskqueue") as connection:
                    (lost,) = await repo.create_tasks(
                        [NewTask("lost", FUNCTION, channel="lost")], transaction=connection
                    )
                    raise RuntimeError("the caller gives up")
            assert await repo.get_states([lost]) == {}

            async with in_transaction("taskqueue") as connection:
                (kept,) = await repo.create_tasks(
                    [NewTask("kept", FUNCTION, channel="kept")], transaction=connection
                )
                assert await repo.get_states([kept]) == {}  # not visible before the commit
                await repo.publish(Event("marker", channels=("before-commit",)))
                await recorder.wait_for(
                    lambda e: e.kind == "marker" and e.channels == ("before-commit",)
                )
                # The NOTIFY goes out with the caller's commit, not before.
                assert not [e for e in recorder.drain() if "kept" in e.channels]
        finally:
            await context.close_connections()
    assert await repo.get_states([kept]) == {kept: TaskState.ENQUEUED}
    await recorder.wait_for(created("kept"))
    assert not [e for e in recorder.drain() if "lost" in e.channels]


async def test_transaction_must_be_a_transaction(repo: PostgresRepository, pg_url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        with pytest.raises(InvalidTaskError, match="inside a transaction"):
            await repo.create_tasks([NewTask("x", FUNCTION)], transaction=conn)
        with pytest.raises(InvalidTaskError, match="transaction="):
            await repo.create_tasks([NewTask("x", FUNCTION)], transaction=object())
    finally:
        await conn.close()
    assert (await repo.list_tasks()).total == 0


# -- errors ---------------------------------------------------------------------------------


async def test_a_lost_connection_is_a_repository_error_then_recovers(
    repo: PostgresRepository, db: asyncpg.Connection, pg_url: str
) -> None:
    (task_id,) = await repo.create_tasks([NewTask("x", FUNCTION)])
    holder = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        async with holder.transaction():
            # The repository's statement waits on this row lock; its connection is then cut
            # in the middle of the statement.
            await holder.execute("SELECT 1 FROM queued_tasks WHERE id = $1 FOR UPDATE", task_id)
            cancelling = asyncio.create_task(repo.cancel_tasks([task_id]), name="cancelling")
            await blocked_on_a_lock(db)
            assert await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            with pytest.raises(RepositoryError) as caught:
                await asyncio.wait_for(cancelling, WAIT)
    finally:
        await holder.close()
    assert isinstance(caught.value.__cause__, asyncpg.InterfaceError | asyncpg.PostgresError)
    # The pool replaces the connection: the caller's retry works.
    assert await repo.get_states([task_id]) == {task_id: TaskState.ENQUEUED}
    assert await repo.cancel_tasks([task_id]) == [task_id]


async def test_open_refuses_a_database_that_was_not_migrated(empty_pg_url: str) -> None:
    repo = PostgresRepository(empty_pg_url)
    with pytest.raises(RepositoryError, match="migrate"):
        await repo.open()
    await repo.close()


async def test_open_refuses_an_unreachable_database() -> None:
    repo = PostgresRepository("postgres://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(RepositoryError):
        await repo.open()
    await repo.close()


async def test_calls_before_open_are_repository_errors(pg_url: str) -> None:
    repo = PostgresRepository(pg_url)
    with pytest.raises(RepositoryError, match="not open"):
        await repo.get_states([1])


async def test_a_host_client_is_used_and_left_open(pg_url: str, host_client: Any) -> None:
    repo = PostgresRepository(pg_url, client=host_client)
    await repo.open()
    (task_id,) = await repo.create_tasks([NewTask("host", FUNCTION)])
    await repo.close()
    rows = await host_client.execute_query_dict(
        "SELECT name FROM queued_tasks WHERE id = $1", [task_id]
    )
    assert rows == [{"name": "host"}]


async def test_a_client_that_is_not_asyncpg_is_refused(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="asyncpg"):
        await PostgresRepository(pg_url, client=object()).open()


# -- the reaper -----------------------------------------------------------------------------


async def test_one_reaper_at_a_time(repo: PostgresRepository, pg_url: str) -> None:
    ids = await repo.create_tasks([NewTask(f"t{i}", FUNCTION) for i in range(3)])
    await repo.claim_tasks("ghost", 3)
    limit = tick()
    holder = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", REAPER_LOCK_KEY)
            # Another reaper holds the lock: this one returns at once, having done nothing.
            returned: Awaitable[list[int]] = repo.rescue_stale(limit)
            assert await asyncio.wait_for(returned, WAIT) == []
    finally:
        await holder.close()
    assert sorted(await repo.rescue_stale(limit)) == sorted(ids)


async def test_a_host_tortoise_setup_keeps_using_the_models(pg_url: str, empty_pg_url: str) -> None:
    # A host application registers taskqueue's models under its own connection name; our
    # pool and our migrations must not rebind the (process-wide) model classes.
    from tortoise.context import TortoiseContext

    from taskqueue_core.tortoise.models import MODELS_MODULE, QueuedTask
    from taskqueue_core.tortoise.schema import migrate

    host = TortoiseContext()
    async with host:
        await host.init(
            config={
                "connections": {"default": pg_url},
                "apps": {"taskqueue": {"models": [MODELS_MODULE], "default_connection": "default"}},
            }
        )
        repo = PostgresRepository(pg_url)
        await repo.open()
        try:
            (task_id,) = await repo.create_tasks([NewTask("seen by the host", FUNCTION)])
            assert await QueuedTask.filter(id=task_id).count() == 1
            assert await migrate(empty_pg_url)
            task = await QueuedTask.get(id=task_id)
            assert task.name == "seen by the host"
        finally:
            await repo.close()
        assert await QueuedTask.all().count() == 1


async def test_the_repository_satisfies_the_protocol(repo: PostgresRepository) -> None:
    from taskqueue_core.repository import Subscription, TaskRepository

    assert isinstance(repo, TaskRepository)
    subscription = await repo.subscribe(lambda event: None)
    assert isinstance(subscription, Subscription)
    await subscription.close()
