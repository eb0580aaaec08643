"""``SqliteRepository``: the ``TaskRepository`` on a SQLite file, through Tortoise ORM.

The verbs, the repository's connection (its own, or a shared Tortoise client) and the
transactions every verb runs in (single writer, cancellation-safe, joining a host
transaction on a shared connection), and the events sent to this object's subscribers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from taskqueue_core.exceptions import (
    ArgumentNotSerializable,
    ConfigError,
    InvalidTaskError,
    InvalidTransition,
    RepositoryError,
    UnknownTask,
)
from taskqueue_core.limits import LOG_TYPE_MAX, NAME_MAX
from taskqueue_core.models import (
    PARENT_CANCELLED,
    PARENT_FAILED,
    WORKER_LOST,
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
from taskqueue_core.tortoise.sqlite.codec import (
    distinct_ids,
    dt,
    dump,
    load,
    log_text,
    task_from_row,
    ts,
    utc_now,
)
from taskqueue_core.tortoise.sqlite.connection import (
    BUSY_TIMEOUT_MS,
    CONNECTION_NAME,
    MIN_SQLITE,
    casefold,
    check_directory,
    driver_errors,
    tortoise_globals_kept,
    url_with_pragmas,
)
from taskqueue_core.tortoise.sqlite.creation import encode_new_tasks, insert_tasks
from taskqueue_core.tortoise.sqlite.statements import (
    FINISHED,
    IDS,
    OUTCOME_SQL,
    RETURNING_TASK,
    TASK_COLUMNS,
    cascade,
    delete_tasks,
    filter_sql,
    outcome_params,
    release_children,
)
from taskqueue_core.tortoise.sqlite.transactions import settle

__all__ = ["SqliteRepository"]

logger = logging.getLogger("taskqueue.sqlite")


def _claim_key(task: Task) -> tuple[int, datetime, int]:
    assert task.date_scheduled is not None
    return (-task.priority, task.date_scheduled, task.id)


# -- events -----------------------------------------------------------------------------


class _LocalSubscription:
    """A subscriber of one repository object; always healthy (nothing can disconnect)."""

    def __init__(self, owner: SqliteRepository, handler: EventHandler) -> None:
        self._owner = owner
        self.handler = handler

    @property
    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._owner._unsubscribe(self)


# -- the repository -----------------------------------------------------------------------


class SqliteRepository:
    """The ``TaskRepository`` on a SQLite file (or ``sqlite://:memory:``).

    ``database_url``: ``sqlite://relative/path.sqlite3``, ``sqlite:///absolute/path`` or
    ``sqlite://:memory:``; query parameters are applied as PRAGMAs. ``client``: a Tortoise
    SQLite client of the host application to share (its connection is used, never closed;
    the taskqueue tables are created on it if missing). Raises ``ConfigError`` for a URL
    that is not ``sqlite://``.
    """

    supports_notify: bool = False

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
        self._subscriptions: list[_LocalSubscription] = []

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
                await self._open_shared(self._given_client)
            else:
                await self._open_own()

    async def _open_own(self) -> None:
        from tortoise.context import TortoiseContext
        from tortoise.exceptions import ConfigurationError

        from taskqueue_core.tortoise.schema import create_schema, tortoise_config

        context = TortoiseContext()
        try:
            with context, tortoise_globals_kept():
                await context.init(config=tortoise_config(url_with_pragmas(self.database_url)))
                client = context.db(CONNECTION_NAME)
                check_directory(getattr(client, "filename", ":memory:"))
                # The schema generator finds the models through the current context.
                await create_schema(client)
            async with client.acquire_connection() as conn:
                await self._prepare(conn)
        except ConfigurationError as exc:
            await context.close_connections()
            raise ConfigError(f"invalid SQLite URL {self.database_url!r}: {exc}") from exc
        except driver_errors() as exc:
            await context.close_connections()
            raise RepositoryError(f"cannot open {self.database_url!r}: {exc}") from exc
        except BaseException:
            await context.close_connections()
            raise
        self._context = context
        self._client = client

    async def _open_shared(self, client: Any) -> None:
        from taskqueue_core.tortoise.schema import create_schema, index_statements

        dialect = getattr(getattr(client, "capabilities", None), "dialect", None)
        if dialect != "sqlite" or not hasattr(client, "acquire_connection"):
            raise ConfigError(f"SqliteRepository needs a Tortoise SQLite client, got {client!r}")
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queued_tasks'"
        try:
            async with client.acquire_connection() as conn:
                await self._prepare(conn)
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
        self._client = client

    async def _prepare(self, conn: Any) -> None:
        """Per-connection setup: the case-folding function of name filters and, on a shared
        connection, a busy timeout at least ours."""
        await conn.create_function("taskqueue_casefold", 1, casefold, deterministic=True)
        rows = await conn.execute_fetchall("PRAGMA busy_timeout")
        if rows and int(rows[0][0]) < BUSY_TIMEOUT_MS:
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._prepared = conn

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

    def _require_client(self) -> Any:
        if self._client is None:
            raise RepositoryError(f"{self!r} is not open: call open() first")
        return self._client

    async def _ready(self, conn: Any) -> None:
        """Before a statement: prepare a connection the host replaced, and roll back a
        transaction left open on it (a shared connection's host, or a rollback of ours
        that failed)."""
        if conn is not self._prepared:
            await self._prepare(conn)
        if conn.in_transaction:
            await conn.execute_fetchall("ROLLBACK")

    @asynccontextmanager
    async def _reading(self, verb: str, *, snapshot: bool = False) -> AsyncIterator[Any]:
        """The raw connection for reads; ``snapshot`` wraps them in one read transaction
        (rolled back at the end: it only pins what the reads see)."""
        client = self._require_client()
        joined = self._host_transaction(client)
        if joined is not None:
            async with self._joining(joined, verb) as conn:
                yield conn
            return
        try:
            async with self._transaction(client, "BEGIN" if snapshot else None, "ROLLBACK") as conn:
                yield conn
        except driver_errors() as exc:
            raise RepositoryError(f"SQLite {verb} failed: {exc}") from exc

    @asynccontextmanager
    async def _writing(self, verb: str, *, single: bool = False) -> AsyncIterator[Any]:
        """The raw connection inside ``BEGIN IMMEDIATE``; commits on success, rolls back on
        any exception, cancellation included (see ``_transaction``). Holds the write lock
        throughout.

        ``single``: the body runs exactly one statement (no executemany), which SQLite
        makes its own transaction. A writing statement asks for the write lock before it
        reads anything, just as BEGIN IMMEDIATE does, so this saves two round trips. Only
        for idempotent writes (servers' rows): the statement of a call cancelled once it
        was sent still takes effect."""
        client = self._require_client()
        joined = self._host_transaction(client)
        if joined is not None:
            # Not under the write lock: another write of ours may be holding it while it
            # waits for the connection, which the caller's transaction holds until we return.
            async with self._joining(joined, verb) as conn:
                yield conn
            return
        # IMMEDIATE takes the write lock now: a deferred transaction that reads first would
        # fail with SQLITE_BUSY (no retry) on its first write if another process wrote in
        # between.
        begin = None if single else "BEGIN IMMEDIATE"
        async with self._write_lock:
            try:
                async with self._transaction(client, begin, "COMMIT") as conn:
                    yield conn
            except driver_errors() as exc:
                raise RepositoryError(f"SQLite {verb} failed: {exc}") from exc

    @asynccontextmanager
    async def _transaction(self, client: Any, begin: str | None, end: str) -> AsyncIterator[Any]:
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
                await self._ready(conn)
                if begin is not None:
                    await conn.execute_fetchall(begin)
                yield conn
                if begin is not None:
                    await conn.execute_fetchall(end)
            except BaseException:
                await settle(conn)
                raise

    def _host_transaction(self, client: Any) -> Any:
        """The host application's open Tortoise transaction on the shared connection, when
        the calling task is inside one (else None).

        Tortoise keeps a transaction in a context variable and holds the connection's lock
        until it ends: a verb that waited for that lock from inside the same task would wait
        forever, so it joins the transaction instead (its writes commit or roll back with
        the caller's, and its events are sent at once, as with ``transaction=``)."""
        if self._given_client is None:
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
    async def _joining(self, transaction: Any, verb: str) -> AsyncIterator[Any]:
        """The raw connection of the caller's open Tortoise transaction, inside a savepoint
        (all or nothing; the caller commits)."""
        import aiosqlite

        self._require_client()
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
                if conn is not self._prepared:
                    await conn.create_function(
                        "taskqueue_casefold", 1, casefold, deterministic=True
                    )
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

    # -- creation ----------------------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids.

        See ``TaskRepository.create_tasks``. With ``transaction`` the rows are written
        through the caller's transaction and the ``created`` event is sent at once (the
        SQLite write lock that transaction holds keeps claimers out until it commits).
        Raises ``InvalidTaskError`` (bad positions, function, names), ``UnknownParent``,
        ``ArgumentNotSerializable`` before anything is written."""
        tasks = list(tasks)
        if not tasks:
            return []
        rows = encode_new_tasks(tasks)
        existing = sorted({p for task in tasks for p in task.parent_ids})
        cm = self._joining(transaction, "create") if transaction is not None else None
        async with cm if cm is not None else self._writing("create") as conn:
            plan = await insert_tasks(conn, tasks, rows, existing)
        self._emit_changes(plan.channels, (), plan.ended)
        return plan.ids

    # -- execution ---------------------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Move up to ``limit`` ready tasks to ``doing`` for ``server_name``, in claim order.

        One ``UPDATE ... RETURNING`` under the write lock: nobody else can claim between
        the selection and the change."""
        if limit <= 0 or (channels is not None and not channels):
            return []
        now = ts(utc_now())
        channel_filter = ""
        params: list[Any] = [now, server_name, now]
        if channels is not None:
            channel_filter = f"AND channel IN ({IDS})"
            params.append(json.dumps(list(channels)))
        params.append(limit)
        # ORDER BY -priority, date_scheduled, id over state = 'enqueued' is exactly the
        # partial claim index: read in index order, the first `limit` ready entries are the
        # answer, with no sort. INDEXED BY because without ANALYZE statistics the planner
        # prefers the plain state index and sorts every enqueued row (open() creates it).
        sql = f"""
            UPDATE queued_tasks SET state = 'doing', date_started = ?, claimed_by = ?
            WHERE id IN (
                SELECT id FROM queued_tasks INDEXED BY queued_tasks_claim_idx
                WHERE state = 'enqueued' AND date_scheduled <= ? {channel_filter}
                ORDER BY -priority, date_scheduled, id
                LIMIT ?
            )
            {RETURNING_TASK}
        """
        # A transaction even for one statement: if this call is cancelled while the UPDATE
        # waits for another process's lock, the ROLLBACK queued behind it undoes the claim
        # (a lone statement would still run later, marking tasks doing for nobody).
        async with self._writing("claim") as conn:
            rows = await conn.execute_fetchall(sql, params)
        return sorted((task_from_row(r) for r in rows), key=_claim_key)

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` for ``server_name``; cascade; return
        the ids changed. Only the first outcome of a task id counts (the later ones find the
        task no longer doing). Raises ``InvalidTransition`` for an outcome state that is
        not a way to end an attempt, ``ArgumentNotSerializable`` for a non-JSON result."""
        firsts: dict[int, Outcome] = {}
        for outcome in outcomes:
            firsts.setdefault(outcome.task_id, outcome)
        if not firsts:
            return []
        now = ts(utc_now())
        params: dict[TaskState, list[dict[str, Any]]] = {state: [] for state in OUTCOME_SQL}
        for outcome in firsts.values():
            state = TaskState(outcome.state)
            if state not in OUTCOME_SQL:
                raise InvalidTransition(
                    f"outcome of task {outcome.task_id}: {state.value!r} is not a way to end "
                    "an attempt (done, failed, enqueued, cancelled or stopped)"
                )
            params[state].append(outcome_params(outcome, state, now))
        async with self._writing("complete") as conn:
            live_rows = await conn.execute_fetchall(
                "SELECT id, channel, EXISTS (SELECT 1 FROM queued_task_dependencies "
                "WHERE parent_id = queued_tasks.id) FROM queued_tasks "
                f"WHERE id IN ({IDS}) AND state = 'doing' AND claimed_by = ?",
                (json.dumps(list(firsts)), server_name),
            )
            live = {row[0]: row[1] for row in live_rows}
            parents = {row[0] for row in live_rows if row[2]}
            for state, group in params.items():
                group = [p for p in group if p["id"] in live]
                if group:
                    await conn.executemany(OUTCOME_SQL[state], group)
            by_state = {
                state: [p["id"] for p in group if p["id"] in live]
                for state, group in params.items()
            }

            # Only tasks with children cascade (most tasks have none: no statement at all).
            def having_children(state: TaskState) -> list[int]:
                return [i for i in by_state[state] if i in parents]

            released = await release_children(conn, having_children(TaskState.DONE))
            failed = await cascade(conn, having_children(TaskState.FAILED), TaskState.FAILED, now)
            cancelled = await cascade(
                conn, having_children(TaskState.CANCELLED), TaskState.CANCELLED, now
            )
        changed = [task_id for task_id in firsts if task_id in live]
        retried = by_state[TaskState.ENQUEUED]
        channels = [live[i] for i in retried] + [channel for _, channel in released]
        ended = {i for i in changed if i not in set(retried)} | set(failed) | set(cancelled)
        self._emit_changes(channels, (), ended)
        return changed

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``date_scheduled`` after now among enqueued tasks of ``channels``
        (None: any), or None when no enqueued task is scheduled for later."""
        if channels is not None and not channels:
            return None
        params: list[Any] = [ts(utc_now())]
        channel_filter = ""
        if channels is not None:
            channel_filter = f"AND channel IN ({IDS})"
            params.append(json.dumps(list(channels)))
        # Stored dates are fixed-width ISO text, so min() and > compare them as dates.
        async with self._reading("next_due") as conn:
            rows = await conn.execute_fetchall(
                "SELECT min(date_scheduled) FROM queued_tasks "
                f"WHERE state = 'enqueued' AND date_scheduled > ? {channel_filter}",
                params,
            )
        return dt(rows[0][0]) if rows else None

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        ids = distinct_ids(task_ids)
        if not ids:
            return {}
        async with self._reading("get_states") as conn:
            rows = await conn.execute_fetchall(
                f"SELECT id, state FROM queued_tasks WHERE id IN ({IDS})", (json.dumps(ids),)
            )
        states = {row[0]: TaskState(row[1]) for row in rows}
        return {i: states[i] for i in ids if i in states}

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each task (any state; missing ids are ignored).
        Raises ``ArgumentNotSerializable`` (nothing written) for a non-JSON context."""
        params = []
        for task_id, context in contexts.items():
            if not isinstance(context, dict):
                raise ArgumentNotSerializable(
                    f"context of task {task_id} must be a dict, got {type(context).__name__}"
                )
            params.append((dump(context, f"context of task {task_id}"), task_id))
        if not params:
            return
        async with self._writing("update_contexts") as conn:
            await conn.executemany("UPDATE queued_tasks SET context = ? WHERE id = ?", params)

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows; ``date_created`` None means now. Records of missing tasks are
        dropped. ``type`` and ``name`` are cut to their columns (16 and 255 characters) and
        NUL characters replaced by U+FFFD rather than losing the line. Raises
        ``ArgumentNotSerializable`` (nothing written) for non-JSON info."""
        now = ts(utc_now())
        params = [
            {
                "task_id": r.task_id,
                "type": log_text(r.type, LOG_TYPE_MAX),
                "name": log_text(r.name, NAME_MAX),
                "message": log_text(r.message),
                "info": None if r.info is None else dump(r.info, f"log info of task {r.task_id}"),
                "date": now if r.date_created is None else ts(r.date_created),
            }
            for r in records
        ]
        if not params:
            return
        async with self._writing("append_logs") as conn:
            await conn.executemany(
                "INSERT INTO queued_task_logs "
                "(queued_task_id, type, name, message, info, date_created) "
                "SELECT :task_id, :type, :name, :message, :info, :date "
                "WHERE EXISTS (SELECT 1 FROM queued_tasks WHERE id = :task_id)",
                params,
            )

    # -- control (admin writes) --------------------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or doing tasks and, recursively, their waiting
        descendants (``ParentCancelled``); return every id changed."""
        return await self._interrupt(task_ids, TaskState.CANCELLED)

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or doing tasks; their descendants stay waiting."""
        return await self._interrupt(task_ids, TaskState.STOPPED)

    async def _interrupt(self, task_ids: Sequence[int], state: TaskState) -> list[int]:
        ids = distinct_ids(task_ids)
        if not ids:
            return []
        now = ts(utc_now())
        date_column = "date_cancelled" if state is TaskState.CANCELLED else "date_stopped"
        async with self._writing(f"{state.value} tasks") as conn:
            # RETURNING yields the new row; the old state is read first to know which
            # tasks were running (their workers get a ``control`` event).
            doing_rows = await conn.execute_fetchall(
                f"SELECT id FROM queued_tasks WHERE id IN ({IDS}) AND state = 'doing'",
                (json.dumps(ids),),
            )
            rows = await conn.execute_fetchall(
                f"UPDATE queued_tasks SET state = ?, {date_column} = ?, date_ended = ? "
                f"WHERE id IN ({IDS}) AND state IN ('waiting', 'enqueued', 'doing') "
                "RETURNING id",
                (state.value, now, now, json.dumps(ids)),
            )
            changed_set = {row[0] for row in rows}
            changed = [i for i in ids if i in changed_set]
            descendants: list[int] = []
            if state is TaskState.CANCELLED:
                descendants = await cascade(conn, changed, TaskState.CANCELLED, now)
        were_doing = {row[0] for row in doing_rows} & changed_set
        everything = sorted({*changed, *descendants})
        self._emit_changes((), were_doing, everything)
        return everything

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Put failed, cancelled or stopped tasks back (``enqueued``, or ``waiting`` while a
        parent is not done) with ``retry_count`` 0 and no error or end dates, and restore to
        ``waiting`` the descendants failed or cancelled because of them. Returns the ids
        changed (retried and restored), ascending. A retried task is due at once."""
        ids = distinct_ids(task_ids)
        if not ids:
            return []
        now = ts(utc_now())
        pending = (
            "(SELECT COUNT(*) FROM queued_task_dependencies AS d "
            "JOIN queued_tasks AS p ON p.id = d.parent_id "
            "WHERE d.task_id = queued_tasks.id AND p.state <> 'done')"
        )
        cleared = (
            "exception_name = NULL, exception_message = NULL, exception_info = NULL, "
            "date_failed = NULL, date_cancelled = NULL, date_stopped = NULL, "
            "date_ended = NULL, claimed_by = NULL"
        )
        ended_by_parent = (
            f"((t.state = 'failed' AND t.exception_name = '{PARENT_FAILED}') "
            f"OR (t.state = 'cancelled' AND t.exception_name = '{PARENT_CANCELLED}'))"
        )
        async with self._writing("retry") as conn:
            retried = await conn.execute_fetchall(
                f"""
                UPDATE queued_tasks SET
                    pending_parents = {pending},
                    state = CASE WHEN {pending} > 0 THEN 'waiting' ELSE 'enqueued' END,
                    retry_count = 0,
                    date_scheduled = ?,
                    {cleared}
                WHERE id IN ({IDS}) AND state IN ('failed', 'cancelled', 'stopped')
                RETURNING id, state, channel
                """,
                (now, json.dumps(ids)),
            )
            restored = []
            if retried:
                # Descendants that a cascade from these tasks ended, through chains of
                # tasks ended the same way; each waits again for its parents.
                restored = await conn.execute_fetchall(
                    f"""
                    WITH RECURSIVE lost(id) AS (
                        SELECT d.task_id FROM queued_task_dependencies AS d
                        JOIN queued_tasks AS t ON t.id = d.task_id
                        WHERE d.parent_id IN ({IDS}) AND {ended_by_parent}
                        UNION
                        SELECT d.task_id FROM lost
                        JOIN queued_task_dependencies AS d ON d.parent_id = lost.id
                        JOIN queued_tasks AS t ON t.id = d.task_id
                        WHERE {ended_by_parent}
                    )
                    UPDATE queued_tasks SET
                        pending_parents = {pending},
                        state = CASE WHEN {pending} > 0 THEN 'waiting' ELSE 'enqueued' END,
                        {cleared}
                    WHERE id IN (SELECT id FROM lost)
                    RETURNING id, state, channel
                    """,
                    (json.dumps([row[0] for row in retried]),),
                )
        rows = [*retried, *restored]
        ready = (row[2] for row in rows if row[1] == TaskState.ENQUEUED)
        self._emit_changes(ready, (), ())
        return sorted(row[0] for row in rows)

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all) with their logs and
        edges, and the waiting descendants of those tasks in any channel (they could never
        start); return how many tasks."""
        where = "state IN ('waiting', 'enqueued')"
        params: tuple[Any, ...] = ()
        if channel is not None:
            # ``UNION`` visits a fan-in child once.
            where = """id IN (
                WITH RECURSIVE doomed(id) AS (
                    SELECT id FROM queued_tasks
                    WHERE state IN ('waiting', 'enqueued') AND channel = ?
                    UNION
                    SELECT d.task_id
                    FROM doomed AS p
                    JOIN queued_task_dependencies AS d ON d.parent_id = p.id
                    JOIN queued_tasks AS c ON c.id = d.task_id AND c.state = 'waiting'
                )
                SELECT id FROM doomed
            )"""
            params = (channel,)
        async with self._writing("delete_pending") as conn:
            return await delete_tasks(conn, where, params)

    # -- servers and maintenance -------------------------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now)."""
        now = utc_now()
        started = server.started_at or now
        async with self._writing("register_server", single=True) as conn:
            await conn.execute_fetchall(
                """
                INSERT INTO queued_task_workers (server_name, hostname, pid, max_workers,
                    active_workers, idle_workers, is_running, last_heartbeat, started_at, version)
                VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
                ON CONFLICT (server_name) DO UPDATE SET
                    hostname = excluded.hostname, pid = excluded.pid,
                    max_workers = excluded.max_workers,
                    active_workers = excluded.active_workers,
                    idle_workers = excluded.idle_workers, is_running = 1,
                    last_heartbeat = excluded.last_heartbeat,
                    started_at = excluded.started_at, version = excluded.version
                """,
                (
                    server.server_name,
                    server.hostname,
                    server.pid,
                    server.max_workers,
                    server.active_workers,
                    server.idle_workers,
                    ts(now),
                    ts(started),
                    server.version,
                ),
            )

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record that the server is alive now; False when it has no row (re-register)."""
        async with self._writing("heartbeat", single=True) as conn:
            rows = await conn.execute_fetchall(
                "UPDATE queued_task_workers SET last_heartbeat = ?, active_workers = ?, "
                "idle_workers = ? WHERE server_name = ? RETURNING id",
                (ts(utc_now()), active_workers, idle_workers, server_name),
            )
        return bool(rows)

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row."""
        async with self._writing("unregister_server", single=True) as conn:
            await conn.execute_fetchall(
                "DELETE FROM queued_task_workers WHERE server_name = ?", (server_name,)
            )

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
            return await self._rescue(ts(stale_before))
        finally:
            self._rescuing = False

    async def _rescue(self, stale: str) -> list[int]:
        now = ts(utc_now())
        used_up = "retry_count >= max_retries"
        async with self._writing("rescue_stale") as conn:
            rows = await conn.execute_fetchall(
                f"""
                UPDATE queued_tasks SET
                    state = CASE WHEN {used_up} THEN 'failed' ELSE 'enqueued' END,
                    date_failed = CASE WHEN {used_up} THEN :now ELSE date_failed END,
                    date_ended = CASE WHEN {used_up} THEN :now ELSE date_ended END,
                    date_scheduled = CASE WHEN {used_up} THEN date_scheduled ELSE :now END,
                    exception_name = :lost,
                    exception_message = 'server ' || COALESCE(claimed_by, '(none)')
                        || ' stopped sending heartbeats while running the task',
                    exception_info = NULL,
                    claimed_by = CASE WHEN {used_up} THEN claimed_by ELSE NULL END,
                    retry_count = CASE WHEN {used_up} THEN retry_count ELSE retry_count + 1 END
                WHERE state = 'doing' AND date_started < :stale
                  AND (claimed_by IS NULL OR claimed_by NOT IN (
                      SELECT server_name FROM queued_task_workers WHERE last_heartbeat >= :stale
                  ))
                RETURNING id, state, channel
                """,
                {"now": now, "lost": WORKER_LOST, "stale": stale},
            )
            await conn.execute_fetchall(
                "DELETE FROM queued_task_workers WHERE last_heartbeat < ?", (stale,)
            )
            failed = sorted(row[0] for row in rows if row[1] == TaskState.FAILED)
            descendants = await cascade(conn, failed, TaskState.FAILED, now)
        requeued = (row[2] for row in rows if row[1] == TaskState.ENQUEUED)
        self._emit_changes(requeued, (), [*failed, *descendants])
        return sorted(row[0] for row in rows)

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks ended before ``ended_before`` with their logs and edges;
        their children keep existing (``parent_task`` becomes null). Returns the count."""
        async with self._writing("prune") as conn:
            return await delete_tasks(
                conn, f"state IN {FINISHED} AND date_ended < ?", (ts(ended_before),)
            )

    # -- reads -------------------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        wanted = [operator.index(i) for i in task_ids]
        ids = distinct_ids(wanted)
        if not ids:
            return []
        async with self._reading("get_tasks") as conn:
            rows = await conn.execute_fetchall(
                f"SELECT {TASK_COLUMNS} FROM queued_tasks WHERE id IN ({IDS})",
                (json.dumps(ids),),
            )
        found = {task.id: task for task in map(task_from_row, rows)}
        return [found[i] for i in wanted if i in found]

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, newest (highest id) first, and the total that match.
        ``enqueued_after`` is inclusive, ``enqueued_before`` exclusive (a half-open range);
        a negative ``limit`` or ``offset`` counts as 0."""
        limit, offset = max(limit, 0), max(offset, 0)
        where, params = filter_sql(filter or TaskFilter())
        async with self._reading("list_tasks", snapshot=True) as conn:
            total_rows = await conn.execute_fetchall(
                f"SELECT COUNT(*) FROM queued_tasks WHERE {where}", params
            )
            rows = await conn.execute_fetchall(
                f"SELECT {TASK_COLUMNS} FROM queued_tasks WHERE {where} "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return TaskPage(tasks=[task_from_row(r) for r in rows], total=int(total_rows[0][0]))

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant (by id), with the edges between them (sorted).
        Raises ``UnknownTask``."""
        tree = (
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT d.task_id FROM tree "
            "JOIN queued_task_dependencies AS d ON d.parent_id = tree.id) "
        )
        async with self._reading("get_tree", snapshot=True) as conn:
            rows = await conn.execute_fetchall(
                f"{tree} SELECT {TASK_COLUMNS} FROM queued_tasks "
                "WHERE id IN (SELECT id FROM tree) ORDER BY id",
                (task_id,),
            )
            edges = await conn.execute_fetchall(
                f"{tree} SELECT task_id, parent_id FROM queued_task_dependencies "
                "WHERE task_id IN (SELECT id FROM tree) AND parent_id IN (SELECT id FROM tree) "
                "ORDER BY task_id, parent_id",
                (task_id,),
            )
        tasks = [task_from_row(r) for r in rows]
        if not any(task.id == task_id for task in tasks):
            raise UnknownTask(f"no task has id {task_id}")
        return TaskTree(tasks=tasks, edges=[(row[0], row[1]) for row in edges])

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task, oldest (lowest id) first, with id greater than ``after_id``."""
        async with self._reading("get_logs") as conn:
            rows = await conn.execute_fetchall(
                "SELECT id, queued_task_id, type, name, message, info, date_created "
                "FROM queued_task_logs WHERE queued_task_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (task_id, after_id if after_id is not None else 0, max(limit, 0)),
            )
        records = []
        for row in rows:
            created = dt(row[6])
            assert created is not None  # NOT NULL column
            records.append(
                LogRecord(
                    id=row[0],
                    task_id=row[1],
                    type=row[2],
                    name=row[3],
                    message=row[4],
                    info=load(row[5]),
                    date_created=created,
                )
            )
        return records

    async def stats(self) -> Stats:
        """Counts by state (every state, zeros included) and by channel (states present),
        tasks done and failed in the last minute, and totals of the running servers."""
        since = ts(utc_now() - timedelta(minutes=1))
        async with self._reading("stats", snapshot=True) as conn:
            counts = await conn.execute_fetchall(
                "SELECT channel, state, COUNT(*) FROM queued_tasks GROUP BY channel, state"
            )
            recent = await conn.execute_fetchall(
                "SELECT COALESCE(SUM(date_done >= :since), 0), "
                "COALESCE(SUM(date_failed >= :since), 0) FROM queued_tasks "
                "WHERE date_done >= :since OR date_failed >= :since",
                {"since": since},
            )
            servers = await conn.execute_fetchall(
                "SELECT COUNT(*), COALESCE(SUM(max_workers), 0), "
                "COALESCE(SUM(active_workers), 0), COALESCE(SUM(idle_workers), 0) "
                "FROM queued_task_workers WHERE is_running"
            )
        by_state = {state.value: 0 for state in TaskState}
        by_channel: dict[str, dict[str, int]] = {}
        for channel, state, count in counts:
            by_state[state] = by_state.get(state, 0) + count
            by_channel.setdefault(channel, {})[state] = count
        running, total, active, idle = servers[0]
        return Stats(
            by_state=by_state,
            by_channel=by_channel,
            done_last_minute=int(recent[0][0]),
            failed_last_minute=int(recent[0][1]),
            servers_running=int(running),
            workers_total=int(total),
            workers_active=int(active),
            workers_idle=int(idle),
        )

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        async with self._reading("list_servers") as conn:
            rows = await conn.execute_fetchall(
                "SELECT server_name, hostname, pid, max_workers, active_workers, idle_workers, "
                "is_running, last_heartbeat, started_at, version "
                "FROM queued_task_workers ORDER BY server_name"
            )
        return [
            ServerInfo(
                server_name=row[0],
                hostname=row[1],
                pid=row[2],
                max_workers=row[3],
                active_workers=row[4],
                idle_workers=row[5],
                is_running=bool(row[6]),
                last_heartbeat=dt(row[7]),
                started_at=dt(row[8]),
                version=row[9],
            )
            for row in rows
        ]

    # -- events ------------------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> Subscription:
        """Deliver every event of this repository object to ``handler`` until closed."""
        subscription = _LocalSubscription(self, handler)
        self._subscriptions.append(subscription)
        return subscription

    async def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber of this repository object."""
        self._dispatch(event)

    def _unsubscribe(self, subscription: _LocalSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _emit_changes(
        self, channels: Iterable[str], control: Iterable[int], ended: Iterable[int]
    ) -> None:
        """The events of one write, in the order every backend sends them: ``created``
        (channels made ready, sorted), ``control`` (tasks interrupted while doing), then
        ``ended`` (ids ascending); an event with nothing to name is not sent."""
        ready = tuple(sorted(set(channels)))
        if ready:
            self._dispatch(Event(kind="created", channels=ready))
        interrupted = tuple(sorted(set(control)))
        if interrupted:
            self._dispatch(Event(kind="control", task_ids=interrupted))
        finished = tuple(sorted(set(ended)))
        if finished:
            self._dispatch(Event(kind="ended", task_ids=finished))

    def _dispatch(self, event: Event) -> None:
        # Called after the commit, in the event loop; a failing handler must not undo
        # a write that already happened, nor starve the other subscribers.
        for subscription in list(self._subscriptions):
            try:
                subscription.handler(event)
            except Exception:
                logger.exception("taskqueue event handler %r failed", subscription.handler)
