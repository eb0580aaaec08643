"""The transactions every verb of the SQLite repository runs in.

``reading`` and ``writing`` hand a verb the raw connection: reads outside any transaction
or in one read snapshot; writes inside ``BEGIN IMMEDIATE`` under the repository's write
lock (single writer). ``_transaction`` is the one place that opens and ends them, and
``settle`` leaves the connection outside any transaction after a failed or cancelled call
(a cancelled ``await`` on aiosqlite does not withdraw its statement: ``settle`` queues a
``ROLLBACK`` behind everything sent and waits for it, so that the connection is handed to
the next caller with no transaction of ours left open). On a shared connection, a verb
called inside the host application's open Tortoise transaction joins it
(``_host_transaction``, ``joining``: a savepoint the caller commits).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from taskqueue_core.exceptions import InvalidTaskError, RepositoryError
from taskqueue_core.tortoise.sqlite.connection import casefold, driver_errors, prepare

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["joining", "reading", "settle", "writing"]

logger = logging.getLogger("taskqueue.sqlite")


def _require_client(repo: SqliteRepository) -> Any:
    """The Tortoise client ``repo`` is open on; raises ``RepositoryError`` when closed."""
    if repo._client is None:
        raise RepositoryError(f"{repo!r} is not open: call open() first")
    return repo._client


async def _ready(repo: SqliteRepository, conn: Any) -> None:
    """Before a statement: prepare a connection the host replaced, and roll back a
    transaction left open on it (a shared connection's host, or a rollback of ours
    that failed)."""
    if conn is not repo._prepared:
        await prepare(repo, conn)
    if conn.in_transaction:
        await conn.execute_fetchall("ROLLBACK")


@asynccontextmanager
async def reading(
    repo: SqliteRepository, verb: str, *, snapshot: bool = False
) -> AsyncIterator[Any]:
    """The raw connection for reads; ``snapshot`` wraps them in one read transaction
    (rolled back at the end: it only pins what the reads see)."""
    client = _require_client(repo)
    joined = _host_transaction(repo, client)
    if joined is not None:
        async with joining(repo, joined, verb) as conn:
            yield conn
        return
    try:
        async with _transaction(repo, client, "BEGIN" if snapshot else None, "ROLLBACK") as conn:
            yield conn
    except driver_errors() as exc:
        raise RepositoryError(f"SQLite {verb} failed: {exc}") from exc


@asynccontextmanager
async def writing(repo: SqliteRepository, verb: str, *, single: bool = False) -> AsyncIterator[Any]:
    """The raw connection inside ``BEGIN IMMEDIATE``; commits on success, rolls back on
    any exception, cancellation included (see ``_transaction``). Holds the write lock
    throughout.

    ``single``: the body runs exactly one statement (no executemany), which SQLite
    makes its own transaction. A writing statement asks for the write lock before it
    reads anything, just as BEGIN IMMEDIATE does, so this saves two round trips. Only
    for idempotent writes (servers' rows): the statement of a call cancelled once it
    was sent still takes effect."""
    client = _require_client(repo)
    joined = _host_transaction(repo, client)
    if joined is not None:
        # Not under the write lock: another write of ours may be holding it while it
        # waits for the connection, which the caller's transaction holds until we return.
        async with joining(repo, joined, verb) as conn:
            yield conn
        return
    # IMMEDIATE takes the write lock now: a deferred transaction that reads first would
    # fail with SQLITE_BUSY (no retry) on its first write if another process wrote in
    # between.
    begin = None if single else "BEGIN IMMEDIATE"
    async with repo._write_lock:
        try:
            async with _transaction(repo, client, begin, "COMMIT") as conn:
                yield conn
        except driver_errors() as exc:
            raise RepositoryError(f"SQLite {verb} failed: {exc}") from exc


@asynccontextmanager
async def _transaction(
    repo: SqliteRepository, client: Any, begin: str | None, end: str
) -> AsyncIterator[Any]:
    """The client's raw connection, ``_ready``, with the body between ``begin`` and
    ``end`` (no statements of its own when ``begin`` is None); on any exception the
    connection is ``settle``d before it is handed to anyone else.

    The one place that opens and ends our transactions, because a cancelled ``await``
    on aiosqlite does not withdraw its statement: the statement stays queued in the
    connection's thread and runs after the caller has gone. Without ``settle``, a
    ``BEGIN IMMEDIATE`` cancelled while queued (or while it waits out another
    process's lock) would open its transaction after the connection was released, and
    the next caller's statements, seeing no transaction yet, would run inside it and
    never be committed; a cancelled ``COMMIT`` still queued would make the next
    caller's rollback of a "stale" transaction fail with "no transaction is active"."""
    async with client.acquire_connection() as conn:
        try:
            await _ready(repo, conn)
            if begin is not None:
                await conn.execute_fetchall(begin)
            yield conn
            if begin is not None:
                await conn.execute_fetchall(end)
        except BaseException:
            await settle(conn)
            raise


def _host_transaction(repo: SqliteRepository, client: Any) -> Any:
    """The host application's open Tortoise transaction on the shared connection, when
    the calling task is inside one (else None).

    Tortoise keeps a transaction in a context variable and holds the connection's lock
    until it ends: a verb that waited for that lock from inside the same task would wait
    forever, so it joins the transaction instead (its writes commit or roll back with
    the caller's, and its events are sent at once, as with ``transaction=``)."""
    if repo._given_client is None:
        return None  # our own connection: no host transaction can hold it
    try:
        from tortoise.context import get_current_context

        context = get_current_context()
        if context is None or not context.inited:
            return None
        current = context.connections._get_storage().get(client.connection_name)
    except Exception:  # an unknown Tortoise layout: behave as outside a transaction
        logger.debug("cannot look for a host transaction", exc_info=True)
        return None
    if current is None or current is client:
        return None
    raw: Any = getattr(current, "_connection", None)
    shares_connection = raw is not None and raw is getattr(client, "_connection", None)
    if not shares_connection or getattr(current, "_finalized", True):
        return None
    return current if raw.in_transaction else None


@asynccontextmanager
async def joining(repo: SqliteRepository, transaction: Any, verb: str) -> AsyncIterator[Any]:
    """The raw connection of the caller's open Tortoise transaction, inside a savepoint
    (all or nothing; the caller commits)."""
    import aiosqlite

    _require_client(repo)
    acquire = getattr(transaction, "acquire_connection", None)
    if acquire is None:
        raise InvalidTaskError(
            "transaction must be a Tortoise transaction client (from in_transaction()), "
            f"got {transaction!r}"
        )
    try:
        async with acquire() as conn:
            if not isinstance(conn, aiosqlite.Connection):
                raise InvalidTaskError(f"transaction is not a SQLite connection: {conn!r}")
            if not conn.in_transaction:
                raise InvalidTaskError("transaction is not inside an open transaction")
            if conn is not repo._prepared:
                await conn.create_function("taskqueue_casefold", 1, casefold, deterministic=True)
            await conn.execute_fetchall("SAVEPOINT taskqueue_write")
            try:
                yield conn
            except BaseException:
                await conn.execute_fetchall("ROLLBACK TO taskqueue_write")
                await conn.execute_fetchall("RELEASE taskqueue_write")
                raise
            await conn.execute_fetchall("RELEASE taskqueue_write")
    except driver_errors() as exc:
        raise RepositoryError(f"SQLite {verb} failed: {exc}") from exc


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
    answer. Any other failure leaves the transaction to ``_ready``, which rolls it back
    before the next call."""
    try:
        await conn.execute_fetchall("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "no transaction is active" not in str(exc):
            logger.warning("rollback failed; the next call rolls back: %s", exc)
    except (sqlite3.Error, ValueError):
        logger.warning("rollback failed; the next call rolls back", exc_info=True)
