"""SqliteRepository: the embedded default backend, SQLite through Tortoise ORM.

One file, no server: a new user runs the queue, its workers and the admin views against
``sqlite://taskqueue.sqlite3``. Every write is a single-writer transaction: an
``asyncio.Lock`` serializes the writes of this repository and ``BEGIN IMMEDIATE`` takes
SQLite's write lock up front, so a second process on the same file (a ``taskq start``
worker beside the web app) waits its turn (busy timeout) instead of failing on a lock
upgrade halfway through a claim. The database runs in WAL mode, so reads never wait for
writers.

Storage conventions (readable by the Tortoise models of ``taskqueue_core.tortoise.models``):

- JSON columns hold JSON text (``json.dumps``); datetimes are UTC text of one fixed width,
  ``YYYY-MM-DD HH:MM:SS.ffffff+00:00``, so that comparing the strings compares the instants
  (the claim query and every date filter rely on it).
- Events (``created``, ``ended``, ``control``) reach only subscribers of this repository
  object, after the write commits: ``supports_notify`` is False and other processes poll.

Requires SQLite 3.35 or newer (``RETURNING``).

The package, one module per concern: ``repository`` (``SqliteRepository``: its state and
the contract of each verb, whose body lives in the module of its concern), ``connection``
(opening the database: pragmas, Tortoise's process-wide settings, driver errors),
``transactions`` (the transactions every verb runs in, and leaving a connection outside any
transaction after a failed or cancelled call), ``codec`` (values as stored and rows back as
the core's dataclasses), ``statements`` (SQL text and the statements several verbs share),
``creation`` (checking, encoding and inserting a batch of new tasks), ``execution``
(claiming, completing, and what running tasks write), ``control`` (cancel, stop, retry,
delete pending), ``maintenance`` (servers' rows, rescue of stale tasks, pruning),
and ``reads`` (the admin views' reads). Events reach the subscribers of one repository
object, after each write commits (``taskqueue_core.subscribers``).
"""

from __future__ import annotations

from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["SqliteRepository"]
