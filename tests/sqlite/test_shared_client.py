"""Sharing the host application's Tortoise connection, and writing inside its transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from taskqueue_core.exceptions import ConfigError, InvalidTaskError, RepositoryError
from taskqueue_core.models import TaskState
from taskqueue_core.tortoise.models import QueuedTask
from taskqueue_core.tortoise.schema import tortoise_config
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import new


@pytest.fixture
async def host(db_url: str) -> AsyncIterator[TortoiseContext]:
    """The host application's Tortoise, with the taskqueue models on its "default" connection
    (no tables created: the repository creates them)."""
    async with TortoiseContext() as ctx:
        await ctx.init(config=tortoise_config(db_url, connection_name="default"))
        yield ctx


async def test_shared_client_gets_the_schema_and_stays_open(
    host: TortoiseContext, db_url: str
) -> None:
    client = host.db("default")
    repo = SqliteRepository(db_url, client=client)
    await repo.open()
    (task_id,) = await repo.create_tasks([new(kwargs={"x": 1})])
    await repo.close()
    # The host's connection is still usable, and the host's ORM reads the row.
    row = await QueuedTask.get(id=task_id)
    assert row.state == TaskState.ENQUEUED and row.kwargs == {"x": 1}
    assert row.date_enqueued.tzinfo is not None


async def test_rows_written_by_the_host_orm_are_read_back(
    host: TortoiseContext, db_url: str
) -> None:
    repo = SqliteRepository(db_url, client=host.db("default"))
    await repo.open()
    try:
        (task_id,) = await repo.create_tasks([new()])
        await QueuedTask.filter(id=task_id).update(context={"from": "orm"}, priority=5)
        (task,) = await repo.get_tasks([task_id])
        assert task.context == {"from": "orm"} and task.priority == 5
    finally:
        await repo.close()


async def test_create_inside_the_host_transaction_commits_with_it(
    host: TortoiseContext, db_url: str
) -> None:
    repo = SqliteRepository(db_url, client=host.db("default"))
    await repo.open()
    try:
        async with in_transaction("default") as conn:
            (kept,) = await repo.create_tasks([new("kept")], transaction=conn)
        with pytest.raises(RuntimeError, match="rolled back"):
            async with in_transaction("default") as conn:
                (lost,) = await repo.create_tasks([new("lost")], transaction=conn)
                raise RuntimeError("rolled back")
        assert await repo.get_states([kept, lost]) == {kept: TaskState.ENQUEUED}
        assert [t.id for t in await repo.claim_tasks("s", 5)] == [kept]
    finally:
        await repo.close()


async def test_verbs_called_inside_the_host_transaction_join_it(
    host: TortoiseContext, db_url: str
) -> None:
    """Without ``transaction=``, a call from inside the host's transaction on the shared
    connection joins it rather than waiting forever for the connection it holds."""
    repo = SqliteRepository(db_url, client=host.db("default"))
    await repo.open()
    try:
        with pytest.raises(RuntimeError, match="rolled back"):
            async with in_transaction("default"):
                (task_id,) = await asyncio.wait_for(repo.create_tasks([new()]), 10)
                claimed = await asyncio.wait_for(repo.claim_tasks("s", 5), 10)
                assert [t.id for t in claimed] == [task_id]
                assert (await repo.get_states([task_id]))[task_id] is TaskState.DOING
                raise RuntimeError("rolled back")
        assert await repo.get_states([task_id]) == {}
        async with in_transaction("default"):
            (kept,) = await asyncio.wait_for(repo.create_tasks([new()]), 10)
        assert await repo.get_states([kept]) == {kept: TaskState.ENQUEUED}
    finally:
        await repo.close()


async def test_failed_create_inside_a_transaction_leaves_the_callers_writes(
    host: TortoiseContext, db_url: str
) -> None:
    """All or nothing for the batch (a savepoint), without aborting the caller's work."""
    repo = SqliteRepository(db_url, client=host.db("default"))
    await repo.open()
    try:
        async with in_transaction("default") as conn:
            (first,) = await repo.create_tasks([new("first")], transaction=conn)
            with pytest.raises(InvalidTaskError):
                await repo.create_tasks([new("a"), new("b", batch_parents=(5,))], transaction=conn)
        (task,) = await repo.get_tasks([first])
        assert task.name == "first"
        assert (await repo.list_tasks()).total == 1
    finally:
        await repo.close()


async def test_transaction_must_be_a_tortoise_transaction(repo: SqliteRepository) -> None:
    bogus: Any = object()
    with pytest.raises(InvalidTaskError, match="in_transaction"):
        await repo.create_tasks([new()], transaction=bogus)


async def test_client_must_be_a_sqlite_client(db_path: Path) -> None:
    with pytest.raises(ConfigError, match="SQLite client"):
        await SqliteRepository(f"sqlite://{db_path}", client=object()).open()


# An app of models that are not taskqueue's: aerich's module, whose model Tortoise 1.x no
# longer finds there (it warns so, which is beside the point here).
@pytest.mark.filterwarnings('ignore:Module "aerich.models" has no models:RuntimeWarning')
async def test_shared_client_without_the_taskqueue_models_is_refused(db_url: str) -> None:
    async with TortoiseContext() as ctx:
        await ctx.init(
            config={
                "connections": {"default": db_url},
                "apps": {"other": {"models": ["aerich.models"], "default_connection": "default"}},
            }
        )
        repo = SqliteRepository(db_url, client=ctx.db("default"))
        with pytest.raises(RepositoryError, match=r"taskqueue_core\.tortoise\.models"):
            await repo.open()
