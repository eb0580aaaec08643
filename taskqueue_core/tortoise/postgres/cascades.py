"""The follow-up of a guarded cascade, and how often a guarded statement runs again.

A statement that ends tasks and cascades from them updates only the row versions it read
(the ``xmin`` guards of the package docstring); cascaded rows that changed meanwhile come
back as ``kill_left``, and ``finish_cascade`` ends them with follow-up statements. Each
guarded statement, and the follow-up, runs again at most ``GUARD_ROUNDS`` times.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import asyncpg

from taskqueue_core.tortoise.postgres.connections import fetchrow
from taskqueue_core.tortoise.postgres.statements import KILL_SQL

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository

logger = logging.getLogger("taskqueue.postgres")

GUARD_ROUNDS = 50  # re-runs of a guarded statement; each needs a concurrent change to happen


async def finish_cascade(
    repo: PostgresRepository, conn: asyncpg.Connection, kill_left: str | None
) -> list[int]:
    """End the cascaded tasks a guarded statement had to leave; return their ids.

    Each follow-up statement sends its own ``ended`` NOTIFY; the caller emits the local
    events (when NOTIFY is off) once its work is committed.
    """
    ended: list[int] = []
    for _ in range(GUARD_ROUNDS):
        if not kill_left:
            return ended
        left = json.loads(kill_left)
        row = await fetchrow(
            conn,
            KILL_SQL,
            [int(item[0]) for item in left],
            [int(item[1]) for item in left],
            [str(item[2]) for item in left],
            repo._notify,
        )
        ended.extend(row["ended"])
        kill_left = row["kill_left"]
    logger.warning("a cascade gave up on contended tasks: %s", kill_left)
    return ended
