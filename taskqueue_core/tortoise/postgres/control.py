"""Admin writes: cancel or stop tasks, retry them, delete the pending ones.

``cancel_or_stop`` is cancel and stop (one guarded statement, ``CONTROL_SQL``, re-run for contended
rows); ``retry_tasks`` restores ended tasks and what their end cascaded to, step by step in
one transaction; ``delete_pending`` is one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from taskqueue_core.limits import unique
from taskqueue_core.models import TaskState
from taskqueue_core.tortoise.postgres.cascades import GUARD_ROUNDS, finish_cascade
from taskqueue_core.tortoise.postgres.connections import fetchrow, rowcount
from taskqueue_core.tortoise.postgres.events import emit_local
from taskqueue_core.tortoise.postgres.statements import (
    CONTROL_SQL,
    DELETE_PENDING_CHANNEL_SQL,
    DELETE_PENDING_SQL,
    RETRY_LEVEL_SQL,
    RETRY_PARENTS_SQL,
    RETRY_ROOTS_SQL,
    RETRY_SETTLE_SQL,
)

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository


async def cancel_or_stop(
    repo: PostgresRepository, task_ids: Sequence[int], state: TaskState
) -> list[int]:
    """Cancel (``state`` cancelled) or stop (stopped) ``task_ids``; the ids changed, ascending."""
    ids = unique(task_ids)
    if not ids:
        return []

    changed: list[int] = []
    async with repo._connection() as conn:
        remaining = ids
        for _ in range(GUARD_ROUNDS):
            row = await fetchrow(conn, CONTROL_SQL, remaining, state.value, repo._notify)
            cascaded = await finish_cascade(repo, conn, row["kill_left"])
            changed.extend(row["ended"])
            changed.extend(cascaded)
            emit_local(repo, control=row["control"], ended=[*row["ended"], *cascaded])
            remaining = list(row["contended"])
            if not remaining:
                break
    return sorted(set(changed))


async def retry_tasks(repo: PostgresRepository, task_ids: Sequence[int]) -> list[int]:
    """``PostgresRepository.retry_tasks``: roots, then descendants level by level, then the
    parents locked and every task settled, in one transaction (run again on a deadlock)."""
    ids = unique(task_ids)
    if not ids:
        return []

    async def work(conn: asyncpg.Connection) -> list[int]:
        async with conn.transaction():
            roots = [r[0] for r in await conn.fetch(RETRY_ROOTS_SQL, ids)]
            if not roots:
                return []
            touched = list(roots)
            level = roots
            while level:
                level = [r[0] for r in await conn.fetch(RETRY_LEVEL_SQL, level)]
                touched.extend(level)
            # Lock the parents (and give them a new row version) before counting them:
            # a parent ending concurrently either committed before this (and is counted
            # done) or will see the restored children when it retries.
            await conn.execute(RETRY_PARENTS_SQL, touched)
            row = await conn.fetchrow(RETRY_SETTLE_SQL, touched, repo._notify)
            assert row is not None
        emit_local(repo, ready=row["ready"])
        return sorted(set(touched))

    return await repo._write(work)


async def delete_pending(repo: PostgresRepository, channel: str | None = None) -> int:
    """``PostgresRepository.delete_pending``: one statement; returns how many rows went."""
    async with repo._connection() as conn:
        if channel is None:
            status = await conn.execute(DELETE_PENDING_SQL)
        else:
            status = await conn.execute(DELETE_PENDING_CHANNEL_SQL, channel)
    return rowcount(status)
