"""The repository's connections: the spare that ``_connection`` keeps between calls."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from taskqueue_core.exceptions import RepositoryError
from taskqueue_core.models import FunctionRef, NewTask
from taskqueue_core.tortoise.postgres import PostgresRepository
from tests.faults.harness import wait_until

pytestmark = pytest.mark.postgres

FUNCTION = FunctionRef(module_name="tests.postgres.test_connections", function_name="noop")


async def _pid(repo: PostgresRepository) -> int:
    async with repo._connection() as conn:
        pid: int = conn.get_server_pid()
        await conn.fetchval("SELECT 1")
    return pid


async def test_a_call_that_ends_cleanly_lends_its_connection_to_the_next(
    repo: PostgresRepository,
) -> None:
    first = await _pid(repo)
    assert await _pid(repo) == first
    # Calls at the same time still get connections of their own.
    async with repo._connection() as outer, repo._connection() as inner:
        assert outer.get_server_pid() == first
        assert inner.get_server_pid() != first


async def test_a_connection_left_in_a_transaction_or_after_an_error_goes_back_to_the_pool(
    repo: PostgresRepository,
) -> None:
    async with repo._connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMPORARY TABLE scratch (x int)")
    # Had it been kept, the next call would run inside that open transaction.
    async with repo._connection() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.scratch')") is None
    with pytest.raises(RepositoryError, match="division by zero"):
        async with repo._connection() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert repo._spare is None
    assert await _pid(repo) > 0


async def test_a_spare_connection_the_server_dropped_is_replaced(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    lost = await _pid(repo)
    spare = repo._spare
    assert spare is not None
    assert await db.fetchval("SELECT pg_terminate_backend($1)", lost)

    async def noticed() -> bool:
        try:
            return spare[1].is_closed()
        except asyncpg.InterfaceError:
            return True  # asyncpg gave it back to the pool when it saw it end

    await wait_until(noticed, timeout=10, interval=0.01, what="the client saw its connection end")
    assert await _pid(repo) != lost
    (task_id,) = await repo.create_tasks([NewTask("after", FUNCTION)])
    assert task_id > 0


async def test_a_spare_connection_unused_for_long_is_closed_not_lent(
    repo: PostgresRepository, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept connection is out of the pool, so the pool's own timer for idle connections
    does not apply to it: one unused for ``SPARE_IDLE`` seconds (a proxy or a NAT may have
    dropped it silently) is closed and the call gets a fresh one."""
    import taskqueue_core.tortoise.postgres.repository as repository_module

    monkeypatch.setattr(repository_module, "SPARE_IDLE", 0.05)
    first = await _pid(repo)
    spare = repo._spare
    assert spare is not None
    await asyncio.sleep(0.1)  # the idle time itself is what is tested
    second = await _pid(repo)
    assert second != first

    async def first_gone() -> bool:
        return not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first)

    await wait_until(first_gone, timeout=10, interval=0.01, what="the old backend to end")
    # Used again within the limit, the kept connection is lent as before.
    monkeypatch.setattr(repository_module, "SPARE_IDLE", 60.0)
    assert await _pid(repo) == second


async def test_close_gives_the_spare_back_so_the_pool_closes(pg_url: str) -> None:
    repo = PostgresRepository(pg_url)
    await repo.open()
    await _pid(repo)
    assert repo._spare is not None
    # The pool waits for every connection lent before it closes.
    await asyncio.wait_for(repo.close(), timeout=20)
    assert repo._spare is None
    with pytest.raises(RepositoryError, match="not open"):
        await _pid(repo)


async def test_a_host_clients_connections_all_go_back_to_its_pool(
    pg_url: str, host_client: Any
) -> None:
    repo = PostgresRepository(pg_url, client=host_client)
    await repo.open()
    await _pid(repo)
    assert repo._spare is None
    await repo.close()
