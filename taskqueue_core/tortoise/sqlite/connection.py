"""Opening the SQLite database and setting up its connections.

The pragmas of the repository's own connection (added to its URL), the busy timeout every
connection gets, the ``taskqueue_casefold`` SQL function of name filters, the process-wide
Tortoise settings that opening must leave as they were, and the driver's errors that the
repository reports as ``RepositoryError``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from taskqueue_core.exceptions import RepositoryError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CONNECTION_NAME",
    "MIN_SQLITE",
    "casefold",
    "check_directory",
    "driver_errors",
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
