"""Servers and maintenance: server rows and heartbeats, the reaper, pruning.

``rescue_stale`` runs under the transaction advisory lock ``REAPER_LOCK_KEY`` (one reaper
at a time), then finishes the releases of children that workers left unfinished
(``releases.finish_left``); ``prune`` deletes in chunks of ``_PRUNE_CHUNK`` rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from taskqueue_core.limits import utc
from taskqueue_core.models import ServerInfo
from taskqueue_core.tortoise.postgres import releases
from taskqueue_core.tortoise.postgres.cascades import GUARD_ROUNDS, finish_cascade
from taskqueue_core.tortoise.postgres.connections import rowcount
from taskqueue_core.tortoise.postgres.events import emit_local
from taskqueue_core.tortoise.postgres.statements import PRUNE_SQL, REGISTER_SQL, RESCUE_SQL

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository

REAPER_LOCK_KEY = 0x7471_7265_6170_6572
"""Transaction advisory lock taken by ``rescue_stale``: one reaper at a time."""

_PRUNE_CHUNK = 5000


async def register_server(repo: PostgresRepository, server: ServerInfo) -> None:
    """``PostgresRepository.register_server``: one upsert."""
    async with repo._connection() as conn:
        await conn.execute(
            REGISTER_SQL,
            server.server_name,
            server.hostname,
            server.pid,
            server.max_workers,
            server.active_workers,
            server.idle_workers,
            None if server.started_at is None else utc(server.started_at),
            server.version,
        )


async def heartbeat(
    repo: PostgresRepository, server_name: str, active_workers: int, idle_workers: int
) -> bool:
    """``PostgresRepository.heartbeat``: one update; False when the server has no row."""
    async with repo._connection() as conn:
        status = await conn.execute(
            "UPDATE queued_task_workers SET active_workers = $2, idle_workers = $3, "
            "last_heartbeat = now() WHERE server_name = $1",
            server_name,
            active_workers,
            idle_workers,
        )
    return rowcount(status) > 0


async def unregister_server(repo: PostgresRepository, server_name: str) -> None:
    """``PostgresRepository.unregister_server``: one delete."""
    async with repo._connection() as conn:
        await conn.execute("DELETE FROM queued_task_workers WHERE server_name = $1", server_name)


async def rescue_stale(repo: PostgresRepository, stale_before: datetime) -> list[int]:
    """``PostgresRepository.rescue_stale``: ``RESCUE_SQL`` (re-run for contended rows) and
    its cascades, in one transaction under ``REAPER_LOCK_KEY`` (run again on a deadlock)."""
    limit = utc(stale_before)

    async def work(conn: asyncpg.Connection) -> list[int]:
        rescued: list[int] = []
        ready: list[str] = []
        ended: list[int] = []
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", REAPER_LOCK_KEY):
                return []
            for _ in range(GUARD_ROUNDS):
                row = await conn.fetchrow(RESCUE_SQL, limit, repo._notify)
                assert row is not None
                rescued.extend(row["rescued"])
                ready.extend(row["ready"])
                ended.extend(row["ended"])
                ended.extend(await finish_cascade(repo, conn, row["kill_left"]))
                if not row["contended"]:
                    break
        emit_local(repo, ready=sorted(set(ready)), ended=ended)
        return sorted(set(rescued))

    rescued = await repo._write(work)
    await releases.finish_left(repo, limit)
    return rescued


async def prune(repo: PostgresRepository, ended_before: datetime) -> int:
    """``PostgresRepository.prune``: ``PRUNE_SQL`` chunk after chunk; returns how many."""
    limit = utc(ended_before)
    total = 0
    async with repo._connection() as conn:
        while True:
            count = rowcount(await conn.execute(PRUNE_SQL, limit, _PRUNE_CHUNK))
            total += count
            if count < _PRUNE_CHUNK:
                return total
