"""Leaving a connection outside any transaction after a failed or cancelled call.

A cancelled ``await`` on aiosqlite does not withdraw its statement: ``settle`` queues a
``ROLLBACK`` behind everything sent and waits for it, so that the connection is handed to
the next caller with no transaction of ours left open (see ``SqliteRepository._transaction``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

__all__ = ["settle"]

logger = logging.getLogger("taskqueue.sqlite")


async def settle(conn: Any) -> None:
    """Leave ``conn`` outside any transaction once every statement sent on it has run.

    A ``ROLLBACK`` queued now runs after all of them: it undoes the transaction of a
    cancelled call (whose ``BEGIN`` may have run late), and finds none when a ``COMMIT``
    already sent went through. Waits for it even when cancelled again (a cancelled call
    thus returns once its statements are done: at most the busy timeout while another
    process holds the lock), then raises ``CancelledError`` if it was."""
    # A task of its own, so that a second cancellation of the caller cannot interrupt it.
    rollback = asyncio.create_task(_rollback(conn), name="taskqueue-sqlite-settle")
    cancelled = False
    while not rollback.done():
        try:
            await asyncio.shield(rollback)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    rollback.result()  # _rollback logs the driver's errors; anything else is raised here


async def _rollback(conn: Any) -> None:
    """Roll back the open transaction, if any.

    Issued unconditionally rather than after checking ``in_transaction``, which reads
    False while a ``BEGIN`` is still queued in the connection's thread: only a statement
    queued behind that ``BEGIN`` undoes it. "No transaction is active" is then the normal
    answer. Any other failure leaves the transaction to ``SqliteRepository._ready``, which
    rolls it back before the next call."""
    try:
        await conn.execute_fetchall("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "no transaction is active" not in str(exc):
            logger.warning("rollback failed; the next call rolls back: %s", exc)
    except (sqlite3.Error, ValueError):
        logger.warning("rollback failed; the next call rolls back", exc_info=True)
