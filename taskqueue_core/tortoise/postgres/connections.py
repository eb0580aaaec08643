"""Connections to the task database: pools, driver errors, deadlock retries, transactions.

``open_pool`` opens the repository's own pool (``keep_session`` is its ``reset``) and
``check_client`` accepts a host's client instead. ``DRIVER_ERRORS`` are the errors of
asyncpg and Tortoise that the repository reports as ``RepositoryError``;
``RETRYABLE_ERRORS`` those after which a statement (or a transaction) can simply run again,
at most ``WRITE_ATTEMPTS`` times. ``fetchrow`` runs one statement, again if it lost a
deadlock; ``joined`` lends the connection of a caller's transaction; ``rowcount`` reads a
command status.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from tortoise.exceptions import BaseORMException

from taskqueue_core.exceptions import ConfigError, InvalidTaskError, RepositoryError

logger = logging.getLogger("taskqueue.postgres")

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left mid-operation by a server restart
    BaseORMException,
    OSError,  # connection refused/reset, and TimeoutError
)
# A statement that lost a deadlock (or a serialization conflict) was rolled back whole and
# can simply run again.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
WRITE_ATTEMPTS = 5


async def open_pool(database_url: str) -> tuple[Any, Any]:
    """A ``TortoiseContext`` of our own on ``database_url`` and its client (a pool).

    Raises ``RepositoryError`` when the database cannot be reached.
    """
    from tortoise.context import TortoiseContext

    from taskqueue_core.tortoise.schema import tortoise_config

    context = TortoiseContext()
    config = tortoise_config(database_url, pool_options={"reset": keep_session}, with_models=False)
    try:
        # A pool only: the repository's SQL needs no models, and registering them would
        # rebind the model classes away from a host application's own Tortoise setup. The
        # context is current only while it initialises.
        with context, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Module .* has no models", RuntimeWarning)
            await context.init(config=config)
            client = context.db("taskqueue")
    except DRIVER_ERRORS as exc:
        with contextlib.suppress(*DRIVER_ERRORS):
            await context.close_connections()
        raise RepositoryError(f"cannot open the task database: {exc}") from exc
    return context, client


def check_client(client: Any) -> None:
    """Raise ``ConfigError`` unless ``client`` is a Tortoise asyncpg client."""
    from tortoise.backends.asyncpg.client import AsyncpgDBClient

    if not isinstance(client, AsyncpgDBClient):
        raise ConfigError(
            f"PostgresRepository needs a Tortoise asyncpg client, got {type(client).__name__}"
        )


async def fetchrow(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record:
    """The one row of a statement run on its own (autocommit), run again if it lost a deadlock.

    Such a statement was rolled back whole, so running it again is safe; this keeps the
    follow-up statements of a batch (its contended rows, its cascade) from being dropped by
    a retry of the whole batch. Inside a transaction the error goes up to
    ``PostgresRepository._write``, which runs the whole transaction again.
    """
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            row = await conn.fetchrow(sql, *args)
        except RETRYABLE_ERRORS:
            if attempt == WRITE_ATTEMPTS or conn.is_in_transaction():
                raise
            logger.info("statement lost a deadlock; running it again")
            continue
        assert row is not None
        return row
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def joined(transaction: Any) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection of a caller's transaction; driver errors become ours."""
    from tortoise.backends.base.client import TransactionalDBClient

    if isinstance(transaction, TransactionalDBClient):
        if transaction._finalized:
            raise InvalidTaskError("transaction= is already committed or rolled back")
        try:
            async with transaction.acquire_connection() as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise RepositoryError(f"task database error: {exc}") from exc
        return
    if isinstance(transaction, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
        if not transaction.is_in_transaction():
            raise InvalidTaskError("transaction= must be a connection inside a transaction")
        try:
            yield transaction
        except DRIVER_ERRORS as exc:
            raise RepositoryError(f"task database error: {exc}") from exc
        return
    raise InvalidTaskError(
        "transaction= must be a Tortoise client from in_transaction() or an asyncpg "
        f"connection inside a transaction, got {type(transaction).__name__}"
    )


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool ``reset`` of our own pool: nothing beyond asyncpg's rollback of an open transaction.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL; ...`` each time a
    connection goes back to the pool: one more round trip per statement, which measured
    2-3x the cost of a short query itself. This repository leaves no session state behind
    (no SET, no LISTEN on pooled connections, advisory locks are transaction-scoped), so
    there is nothing to reset.
    """


def rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 3`` or ``UPDATE 0``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
