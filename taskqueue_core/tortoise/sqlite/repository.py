"""``SqliteRepository``: the ``TaskRepository`` on a SQLite file, through Tortoise ORM.

The class holds the repository's state (its connection: its own, or a shared Tortoise
client; its write lock; its subscribers) and states the contract of every verb; the verbs'
bodies live in the modules of their concern: ``connection`` (opening), ``transactions``
(the transactions every verb runs in: single writer, cancellation-safe, joining a host
transaction on a shared connection), ``creation``, ``execution``, ``control``,
``maintenance`` and ``reads``. Events reach this object's subscribers after each write
commits (``taskqueue_core.subscribers``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from taskqueue_core.exceptions import ConfigError, RepositoryError
from taskqueue_core.models import (
    Event,
    LogRecord,
    NewLogRecord,
    NewTask,
    Outcome,
    ServerInfo,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskState,
    TaskTree,
)
from taskqueue_core.repository import EventHandler, Subscription
from taskqueue_core.subscribers import LocalSubscribers
from taskqueue_core.tortoise.sqlite import control, creation, execution, maintenance, reads
from taskqueue_core.tortoise.sqlite.codec import ts
from taskqueue_core.tortoise.sqlite.connection import (
    MIN_SQLITE,
    driver_errors,
    open_own,
    open_shared,
)
from taskqueue_core.tortoise.sqlite.transactions import joining, reading, writing

__all__ = ["SqliteRepository"]


class SqliteRepository:
    """The ``TaskRepository`` on a SQLite file (or ``sqlite://:memory:``).

    ``database_url``: ``sqlite://relative/path.sqlite3``, ``sqlite:///absolute/path`` or
    ``sqlite://:memory:``; query parameters are applied as PRAGMAs. ``client``: a Tortoise
    SQLite client of the host application to share (its connection is used, never closed;
    the taskqueue tables are created on it if missing). Raises ``ConfigError`` for a URL
    that is not ``sqlite://``.
    """

    supports_notify: bool = False
    concurrent_creations: int = 1
    """One writer at a time: SQLite serializes writes anyway."""

    def __init__(self, database_url: str, *, client: Any = None) -> None:
        if not isinstance(database_url, str) or not database_url.startswith("sqlite://"):
            raise ConfigError(f"SqliteRepository needs a sqlite:// URL, got {database_url!r}")
        self.database_url = database_url
        self._given_client = client
        self._client: Any = None
        self._context: Any = None
        self._prepared: Any = None  # the raw connection last prepared (functions, timeout)
        self._open_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._rescuing = False
        self._subscribers = LocalSubscribers()

    def __repr__(self) -> str:
        return f"SqliteRepository({self.database_url!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, apply the pragmas and create any missing table and index. Idempotent.

        Raises ``ConfigError`` (bad URL or client) or ``RepositoryError`` (SQLite failed,
        or is older than 3.35)."""
        async with self._open_lock:
            if self._client is not None:
                return
            if sqlite3.sqlite_version_info < MIN_SQLITE:
                raise RepositoryError(
                    f"SQLite {sqlite3.sqlite_version} is too old: taskqueue needs 3.35 or newer"
                )
            if self._given_client is not None:
                await open_shared(self, self._given_client)
            else:
                await open_own(self)

    async def close(self) -> None:
        """Close the connection this repository opened (a shared client stays open), once
        the write in progress, if any, has finished. Idempotent."""
        async with self._open_lock, self._write_lock:
            context, self._context = self._context, None
            self._client = None
            self._prepared = None
            if context is not None:
                try:
                    await context.close_connections()
                except driver_errors() as exc:
                    raise RepositoryError(f"closing {self.database_url!r} failed: {exc}") from exc

    # -- transactions (the verbs' access to the connection) ---------------------------

    def _reading(self, verb: str, *, snapshot: bool = False) -> AbstractAsyncContextManager[Any]:
        """The raw connection for reads: see ``transactions.reading``."""
        return reading(self, verb, snapshot=snapshot)

    def _writing(self, verb: str, *, single: bool = False) -> AbstractAsyncContextManager[Any]:
        """The raw connection inside a write transaction: see ``transactions.writing``."""
        return writing(self, verb, single=single)

    def _joining(self, transaction: Any, verb: str) -> AbstractAsyncContextManager[Any]:
        """The raw connection of the caller's open Tortoise transaction, inside a savepoint:
        see ``transactions.joining``."""
        return joining(self, transaction, verb)

    # -- creation ----------------------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids.

        See ``TaskRepository.create_tasks``. With ``transaction`` the rows are written
        through the caller's transaction and the ``created`` event is sent at once (the
        SQLite write lock that transaction holds keeps claimers out until it commits).
        Raises ``InvalidTaskError`` (bad positions, function, names), ``UnknownParent``,
        ``ArgumentNotSerializable`` before anything is written."""
        return await creation.create_tasks(self, tasks, transaction)

    # -- execution ---------------------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Move up to ``limit`` ready tasks to ``doing`` for ``server_name``, in claim order.

        One ``UPDATE ... RETURNING`` under the write lock: nobody else can claim between
        the selection and the change."""
        return await execution.claim_tasks(self, server_name, limit, channels)

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` for ``server_name``; cascade; return
        the ids changed. Only the first outcome of a task id counts (the later ones find the
        task no longer doing). Raises ``InvalidTransition`` for an outcome state that is
        not a way to end an attempt, ``ArgumentNotSerializable`` for a non-JSON result."""
        return await execution.complete_tasks(self, server_name, outcomes)

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``date_scheduled`` after now among enqueued tasks of ``channels``
        (None: any), or None when no enqueued task is scheduled for later."""
        return await execution.next_due(self, channels)

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        return await execution.get_states(self, task_ids)

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each task (any state; missing ids are ignored).
        Raises ``ArgumentNotSerializable`` (nothing written) for a non-JSON context."""
        await execution.update_contexts(self, contexts)

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows; ``date_created`` None means now. Records of missing tasks are
        dropped. ``type`` and ``name`` are cut to their columns (16 and 255 characters) and
        NUL characters replaced by U+FFFD rather than losing the line. Raises
        ``ArgumentNotSerializable`` (nothing written) for non-JSON info."""
        await execution.append_logs(self, records)

    # -- control (admin writes) --------------------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or doing tasks and, recursively, their waiting
        descendants (``ParentCancelled``); return every id changed."""
        return await control.interrupt(self, task_ids, TaskState.CANCELLED)

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or doing tasks; their descendants stay waiting."""
        return await control.interrupt(self, task_ids, TaskState.STOPPED)

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Put failed, cancelled or stopped tasks back (``enqueued``, or ``waiting`` while a
        parent is not done) with ``retry_count`` 0 and no error or end dates, and restore to
        ``waiting`` the descendants failed or cancelled because of them. Returns the ids
        changed (retried and restored), ascending. A retried task is due at once."""
        return await control.retry_tasks(self, task_ids)

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all) with their logs and
        edges, and the waiting descendants of those tasks in any channel (they could never
        start); return how many tasks."""
        return await control.delete_pending(self, channel)

    # -- servers and maintenance -------------------------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now)."""
        await maintenance.register_server(self, server)

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record that the server is alive now; False when it has no row (re-register)."""
        return await maintenance.heartbeat(self, server_name, active_workers, idle_workers)

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row."""
        await maintenance.unregister_server(self, server_name)

    async def rescue_stale(self, stale_before: datetime) -> list[int]:
        """Re-enqueue (or, attempts used up, fail with ``WorkerLost``) the tasks doing on
        servers silent since ``stale_before`` or without a row, started before it; delete
        those servers' rows; return the rescued ids. A call made while another one of this
        repository runs returns [] at once; across processes the write lock serializes
        them and the later one finds nothing left to do."""
        if self._rescuing:
            return []
        self._rescuing = True
        try:
            return await maintenance.rescue(self, ts(stale_before))
        finally:
            self._rescuing = False

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks ended before ``ended_before`` with their logs and edges;
        their children keep existing (``parent_task`` becomes null). Returns the count."""
        return await maintenance.prune(self, ended_before)

    # -- reads -------------------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        return await reads.get_tasks(self, task_ids)

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, newest (highest id) first, and the total that match.
        ``enqueued_after`` is inclusive, ``enqueued_before`` exclusive (a half-open range);
        a negative ``limit`` or ``offset`` counts as 0."""
        return await reads.list_tasks(self, filter, limit=limit, offset=offset)

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant (by id), with the edges between them (sorted).
        Raises ``UnknownTask``."""
        return await reads.get_tree(self, task_id)

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task, oldest (lowest id) first, with id greater than ``after_id``."""
        return await reads.get_logs(self, task_id, after_id=after_id, limit=limit)

    async def stats(self) -> Stats:
        """Counts by state (every state, zeros included) and by channel (states present),
        tasks done and failed in the last minute, and totals of the running servers."""
        return await reads.stats(self)

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        return await reads.list_servers(self)

    # -- events ------------------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> Subscription:
        """Deliver every event of this repository object to ``handler`` until closed."""
        return self._subscribers.add(handler)

    async def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber of this repository object."""
        self._subscribers.publish(event)

    def _emit_changes(
        self, channels: Iterable[str], control: Iterable[int], ended: Iterable[int]
    ) -> None:
        """Send the events of one write to the subscribers, after it committed (see
        ``LocalSubscribers.publish_changes``)."""
        self._subscribers.publish_changes(channels, control, ended)
