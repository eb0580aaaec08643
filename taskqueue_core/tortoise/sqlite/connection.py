"""Opening the SQLite database and setting up its connections.

How ``SqliteRepository.open`` connects (``open_own``: a Tortoise context of its own on the
URL; ``open_shared``: the host application's client), the per-connection setup
(``prepare``), the pragmas of the repository's own connection (added to its URL), the busy
timeout every connection gets, the ``taskqueue_casefold`` SQL function of name filters, the
process-wide Tortoise settings that opening must leave as they were, and the driver's
errors that the repository reports as ``RepositoryError``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from taskqueue_core.exceptions import ConfigError, RepositoryError

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CONNECTION_NAME",
    "MIN_SQLITE",
    "casefold",
    "check_directory",
    "driver_errors",
    "open_own",
    "open_shared",
    "prepare",
    "tortoise_globals_kept",
    "url_with_pragmas",
]

CONNECTION_NAME = "taskqueue"
MIN_SQLITE = (3, 35, 0)
BUSY_TIMEOUT_MS = 30_000

# Pragmas applied to the repository's own connection unless the URL sets them. WAL lets
# readers run beside the writer; NORMAL synchronous is safe from corruption in WAL mode and
# spares an fsync per commit (a power cut may lose the last commits, a crash of the process
# loses nothing); the busy timeout makes a writer wait for another process's transaction.
_DEFAULT_PRAGMAS = {
    "journal_mode": "WAL",
    "foreign_keys": "ON",
    "busy_timeout": str(BUSY_TIMEOUT_MS),
    "synchronous": "NORMAL",
}


def casefold(value: Any) -> str | None:
    return value.casefold() if isinstance(value, str) else None


def url_with_pragmas(database_url: str) -> str:
    """``database_url`` with the default pragmas added as query parameters (Tortoise applies
    every query parameter of a ``sqlite://`` URL as a PRAGMA on connect); the URL's own
    values win."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in _DEFAULT_PRAGMAS.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def tortoise_globals_kept() -> Iterator[None]:
    """Undo what ``TortoiseContext.init`` changes process-wide (routers, the USE_TZ and
    TIMEZONE variables, the models' default connection), so that opening the queue's own
    context never rewires a Tortoise setup of the host application."""
    from tortoise.router import router
    from tortoise.timezone import _reset_timezone_cache

    from taskqueue_core.tortoise import models

    model_classes = [getattr(models, name) for name in models.__all__]
    routers = router._routers
    env = {key: os.environ.get(key) for key in ("USE_TZ", "TIMEZONE")}
    connections = {m: m._meta.default_connection for m in model_classes}
    try:
        yield
    finally:
        router._routers = routers
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_timezone_cache()
        for model, name in connections.items():
            if name is not None:
                model._meta.default_connection = name


def check_directory(filename: str) -> None:
    """Refuse a database file whose directory does not exist, before connecting (a clearer
    message than SQLite's "unable to open database file")."""
    if filename == ":memory:" or filename.startswith("file:"):
        return
    directory = os.path.dirname(os.path.abspath(filename))
    if not os.path.isdir(directory):
        raise RepositoryError(
            f"cannot open SQLite database {filename!r}: directory {directory!r} does not exist"
        )


def driver_errors() -> tuple[type[BaseException], ...]:
    from tortoise.exceptions import BaseORMException

    return (sqlite3.Error, BaseORMException, OSError)


async def open_own(repo: SqliteRepository) -> None:
    """Open ``repo`` on a Tortoise context of its own for its URL, creating the schema."""
    from tortoise.context import TortoiseContext
    from tortoise.exceptions import ConfigurationError

    from taskqueue_core.tortoise.schema import create_schema, tortoise_config

    context = TortoiseContext()
    try:
        with context, tortoise_globals_kept():
            await context.init(config=tortoise_config(url_with_pragmas(repo.database_url)))
            client = context.db(CONNECTION_NAME)
            check_directory(getattr(client, "filename", ":memory:"))
            # The schema generator finds the models through the current context.
            await create_schema(client)
        async with client.acquire_connection() as conn:
            await prepare(repo, conn)
    except ConfigurationError as exc:
        await context.close_connections()
        raise ConfigError(f"invalid SQLite URL {repo.database_url!r}: {exc}") from exc
    except driver_errors() as exc:
        await context.close_connections()
        raise RepositoryError(f"cannot open {repo.database_url!r}: {exc}") from exc
    except BaseException:
        await context.close_connections()
        raise
    repo._context = context
    repo._client = client


async def open_shared(repo: SqliteRepository, client: Any) -> None:
    """Open ``repo`` on the host application's Tortoise SQLite ``client``, creating the
    taskqueue tables through the host's setup if they are missing."""
    from taskqueue_core.tortoise.schema import create_schema, index_statements

    dialect = getattr(getattr(client, "capabilities", None), "dialect", None)
    if dialect != "sqlite" or not hasattr(client, "acquire_connection"):
        raise ConfigError(f"SqliteRepository needs a Tortoise SQLite client, got {client!r}")
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queued_tasks'"
    try:
        async with client.acquire_connection() as conn:
            await prepare(repo, conn)
            found = await conn.execute_fetchall(exists)
        schema_error: BaseException | None = None
        if not found:
            # Through the host's own Tortoise setup: it creates the taskqueue tables
            # only if the host registered taskqueue_core.tortoise.models on this client
            # (otherwise the claim index fails for want of its table: judged below).
            try:
                await create_schema(client)
            except driver_errors() as exc:
                schema_error = exc
        async with client.acquire_connection() as conn:
            if not await conn.execute_fetchall(exists):
                raise RepositoryError(
                    "the taskqueue tables are missing from the shared database: add "
                    "'taskqueue_core.tortoise.models' to the Tortoise apps of this "
                    "connection, or run `taskq migrate`"
                ) from schema_error
            for statement in index_statements(postgres=False):
                await conn.execute_fetchall(statement)
    except driver_errors() as exc:
        raise RepositoryError(f"cannot use the shared SQLite client: {exc}") from exc
    repo._client = client


async def prepare(repo: SqliteRepository, conn: Any) -> None:
    """Per-connection setup: the case-folding function of name filters and, on a shared
    connection, a busy timeout at least ours."""
    await conn.create_function("taskqueue_casefold", 1, casefold, deterministic=True)
    rows = await conn.execute_fetchall("PRAGMA busy_timeout")
    if rows and int(rows[0][0]) < BUSY_TIMEOUT_MS:
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    repo._prepared = conn
