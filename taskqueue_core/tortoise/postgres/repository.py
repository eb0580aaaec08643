"""``PostgresRepository``: the verbs of the seam, with the connections they run on.

The class holds the lifecycle (its own pool, or the host's client), the connection of each
verb (driver errors become ``RepositoryError``) and the retry of a write that lost a
deadlock. The verbs' contracts are their docstrings here; their work is in the modules named
by what they hold: ``creation``, ``execution``, ``control``, ``maintenance``, ``reads`` and
``events``, with ``connections`` and ``cascades`` shared among them. The hot-path verbs
(create, claim, complete, contexts, logs) take their connection and await their statements
here, so that the split costs them no extra coroutine per batch. The design of the
statements is in the package docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from taskqueue_core.exceptions import RepositoryError
from taskqueue_core.limits import json_text
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
from taskqueue_core.tortoise.listener import Listener, ListenerSubscription
from taskqueue_core.tortoise.postgres import (
    control,
    creation,
    events,
    execution,
    maintenance,
    reads,
)
from taskqueue_core.tortoise.postgres.batches import Batch, batch_of
from taskqueue_core.tortoise.postgres.codec import task
from taskqueue_core.tortoise.postgres.connections import (
    DRIVER_ERRORS,
    RETRYABLE_ERRORS,
    WRITE_ATTEMPTS,
    check_client,
    joined,
    open_pool,
)
from taskqueue_core.tortoise.postgres.maintenance import REAPER_LOCK_KEY
from taskqueue_core.tortoise.postgres.releases import Releaser
from taskqueue_core.tortoise.postgres.statements import (
    CLAIM_ANY_SQL,
    CLAIM_CHANNELS_SQL,
    UPDATE_CONTEXTS_SQL,
)

__all__ = ["REAPER_LOCK_KEY", "PostgresRepository"]

logger = logging.getLogger("taskqueue.postgres")

T = TypeVar("T")

SPARE_IDLE = 60.0
"""Seconds the connection ``_connection`` keeps between calls may wait unused. An older one is
closed instead of lent: a pool closes its connections that idle for long (asyncpg: after 300 s),
so that a call does not find one that a proxy, a firewall or a NAT dropped without a word; the
kept connection, lent out of the pool, has no such timer. Re-opening costs a few
milliseconds, once a minute at most."""


# -- the repository ---------------------------------------------------------------------------


class PostgresRepository:
    """``TaskRepository`` on PostgreSQL (migrated with ``taskq migrate``).

    ``database_url``: ``postgres://user:password@host:port/database`` (Tortoise URL options
    such as ``?maxsize=20`` size the pool). ``notify_channel``: the LISTEN/NOTIFY channel.
    ``use_notify``: with it, every write sends its events with NOTIFY inside its own
    transaction (delivered at commit, to every process, this one included, through LISTEN);
    without it, events reach only subscribers of this object and other processes poll.
    ``client``: a Tortoise asyncpg client of the host application to use instead of opening
    a connection pool of our own; it is never closed here.

    ``listen_probe_interval`` / ``listen_probe_timeout``: how often the LISTEN connection is
    probed with ``SELECT 1``, and how long a probe may take before the connection is
    declared dead and replaced.
    """

    concurrent_creations: int = 2
    """Two creations at once: each takes a connection of its own, and the server writes
    both in parallel (measured: 0.7x the time of one statement for 1,000 to 10,000 tasks)."""

    def __init__(
        self,
        database_url: str,
        *,
        notify_channel: str = "queue_new_task",
        use_notify: bool = True,
        client: Any = None,
        listen_probe_interval: float = 5.0,
        listen_probe_timeout: float = 5.0,
    ) -> None:
        self.database_url = database_url
        self.notify_channel = notify_channel
        self.use_notify = use_notify
        self.supports_notify: bool = use_notify
        self._given_client = client
        self._client: Any = None
        self._context: Any = None
        self._probe_interval = listen_probe_interval
        self._probe_timeout = listen_probe_timeout
        self._listener: Listener | None = None
        self._listener_lock: asyncio.Lock | None = None
        self._subscriptions: set[ListenerSubscription] = set()
        self._local = LocalSubscribers()
        self._releaser = Releaser(self)
        self._spare: tuple[Any, asyncpg.Connection] | None = None
        """The lease (Tortoise's pool wrapper, its connection) that ``_connection`` keeps
        between calls, own pool only."""
        self._spare_since = 0.0
        """When the spare was kept (``time.monotonic()``): see ``SPARE_IDLE``."""

    def __repr__(self) -> str:
        return f"<PostgresRepository channel={self.notify_channel!r} notify={self.use_notify}>"

    @property
    def _notify(self) -> str | None:
        """The channel statements NOTIFY on, or None (the SQL then skips its pg_notify)."""
        return self.notify_channel if self.use_notify else None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (own pool, unless a client was given) and check the schema. Idempotent.

        Raises ``RepositoryError`` when the database cannot be reached or was not migrated,
        and ``ConfigError`` when the given client is not a Tortoise asyncpg client.
        """
        if self._client is not None:
            return
        if self._given_client is not None:
            check_client(self._given_client)
            self._client = self._given_client
        else:
            self._context, self._client = await open_pool(self.database_url)
        try:
            async with self._connection() as conn:
                found = await conn.fetchval("SELECT to_regclass('queued_tasks') IS NOT NULL")
                if found:
                    with contextlib.suppress(asyncpg.PostgresError):
                        # Not needed to create tasks, only to start a burst's first write
                        # sooner (see ``creation.prepare_free``): a refusal is no error.
                        await creation.prepare_free(conn)
        except RepositoryError:
            await self.close()
            raise
        if not found:
            await self.close()
            raise RepositoryError(
                "the database has no taskqueue tables: run `taskq migrate` "
                "(taskqueue_core.tortoise.schema.migrate) first"
            )

    async def close(self) -> None:
        """Finish the releases under way (see ``releases``), then close subscriptions, the
        LISTEN connection and our own pool. Idempotent."""
        await self._releaser.settled()
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._local.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        context, self._context = self._context, None
        # No connection is kept once the context is gone (see ``_connection``): give back
        # the spare before the pool closes, which waits for every connection lent.
        spare, self._spare = self._spare, None
        if spare is not None:
            await _give_back(spare)
        if context is not None:
            self._client = None
            with contextlib.suppress(*DRIVER_ERRORS):
                await context.close_connections()
        elif self._given_client is not None:
            self._client = None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A raw asyncpg connection from the client's pool; driver errors become ours.

        With the repository's own pool, the connection of a call that ended cleanly (no
        error, no transaction left open) is kept as the spare and lent to the next call
        instead of going back to the pool: the pool's acquire and release cost 35 to 50 µs
        of CPU, as much as a short statement's own client work. One connection at most is
        kept, and ``close`` gives it back; one kept unused for ``SPARE_IDLE`` seconds is closed
        rather than lent. The connections of a host's client (``client=``) always go back to its
        pool, which serves the application too.
        """
        client = self._client
        if client is None:
            raise RepositoryError("the repository is not open")
        lease, self._spare = self._spare, None
        try:
            if lease is not None:
                lost = _lost(lease[1])
                if lost or time.monotonic() - self._spare_since > SPARE_IDLE:
                    # Lost while spare (the server ended it: the pool cleans it up), or unused
                    # for long (closed here: the pool opens a fresh one on the next acquire).
                    if not lost:
                        lease[1].terminate()
                    await _give_back(lease)
                    lease = None
            if lease is None:
                wrapper = client.acquire_connection()
                lease = (wrapper, await wrapper.__aenter__())
            yield lease[1]
        except BaseException as exc:
            if lease is not None:
                await _give_back(lease, exc)
            if isinstance(exc, DRIVER_ERRORS):
                raise RepositoryError(f"task database error: {exc}") from exc
            raise
        conn = lease[1]
        if (
            self._spare is None
            and self._client is client
            and self._context is not None
            and not _lost(conn)
            and not conn.is_in_transaction()
        ):
            self._spare = lease
            self._spare_since = time.monotonic()
        else:
            await _give_back(lease)

    async def _write(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a connection, again (a few times) if it lost a deadlock."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self._connection() as conn:
                    return await work(conn)
            except RepositoryError as exc:
                if attempt == WRITE_ATTEMPTS or not isinstance(exc.__cause__, RETRYABLE_ERRORS):
                    raise
                logger.info("retrying a write after %r", exc.__cause__)
        raise AssertionError("unreachable")

    # -- creation (creation.py) ----------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids.

        ``parent_task`` is ``parent_ids[0]`` when there is one, else the first batch parent;
        a parent named twice counts once. Raises ``UnknownParent`` (naming the id),
        ``InvalidTaskError`` or ``ArgumentNotSerializable`` before anything is written.
        ``transaction``: a Tortoise client from ``in_transaction()`` (or an asyncpg
        connection inside a transaction) to write through; the caller commits, and the
        NOTIFY goes out with that commit. Without NOTIFY, subscribers of this object hear
        of the tasks at once, before the caller commits.

        One statement whatever the size of the batch (its cost is linear in it), plus, when
        tasks name existing parents, the statement that locks them first (both in one
        transaction).
        """
        if not tasks:
            return []
        batch = batch_of(tasks)
        if transaction is not None:
            async with joined(transaction) as conn:
                return await creation.create(self, conn, batch, own_transaction=False)
        return await self._write(
            lambda conn: creation.create(self, conn, batch, own_transaction=True)
        )

    # The arguments of the creation statements, for the tests that EXPLAIN them.
    _columns_args = staticmethod(creation.columns_args)

    def _create_args(self, batch: Batch, states: Mapping[int, str]) -> list[Any]:
        """The arguments of ``CREATE_SQL`` for ``batch``, given its existing parents' states."""
        return creation.create_args(batch, states, self._notify)

    # -- execution (execution.py) --------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Move up to ``limit`` ready tasks to ``doing`` for ``server_name``, in claim order.

        One statement. ``channels=[]`` claims nothing.
        """
        if limit <= 0 or (channels is not None and not channels):
            return []
        async with self._connection() as conn:
            if channels is None:
                rows = await conn.fetch(CLAIM_ANY_SQL, server_name, limit)
            else:
                rows = await conn.fetch(CLAIM_CHANNELS_SQL, server_name, limit, list(channels))
        tasks = [task(r) for r in rows]
        # RETURNING gives no order; give them in claim order.
        tasks.sort(key=lambda t: (-t.priority, t.date_scheduled or t.date_enqueued, t.id))
        return tasks

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``date_scheduled`` after now among enqueued tasks of ``channels``
        (None: any), or None when no enqueued task is scheduled for later. A few index
        probes through the claim index, however many tasks are enqueued."""
        return await execution.next_due(self, channels)

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` for ``server_name``; return the ids changed.

        One statement per batch (more only when a concurrent writer touched one of the rows;
        see the package docstring). The ids are returned in the order of ``outcomes``; a second
        outcome for the same task is ignored, as the task is no longer doing by then.
        Raises ``InvalidTransition`` for an outcome state that is not done, failed, enqueued,
        cancelled or stopped, and ``ArgumentNotSerializable`` for a result or context that is
        not JSON, before anything is written.

        The children of a task done are released in the same statement, unless it has more
        than ``RELEASE_CHUNK``: then a first chunk of them is released before this returns
        and the rest in the background, in chunks (see ``releases``; ``close`` waits for
        them).
        """
        batch = execution.completions(outcomes)
        if not batch:
            return []
        changed: set[int] = set()
        async with self._connection() as conn:
            await execution.complete(self, conn, server_name, batch, changed)
        return [outcome.task_id for outcome, _, _ in batch if outcome.task_id in changed]

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        return await execution.get_states(self, task_ids)

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each task (any state; missing ids are ignored).

        Raises ``ArgumentNotSerializable`` (nothing written) if a context is not JSON.
        """
        if not contexts:
            return
        ids = list(contexts)
        texts = [json_text(contexts[i], f"context of task {i}") for i in ids]
        async with self._connection() as conn:
            await conn.execute(UPDATE_CONTEXTS_SQL, ids, texts)

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows in one statement; ``date_created`` None means now.

        Records of missing tasks are dropped. ``type`` and ``name`` longer than their columns
        (16 and 255 characters) are cut, and NUL characters (which PostgreSQL text cannot
        hold) replaced, rather than losing the line. Raises ``ArgumentNotSerializable``
        (nothing written) if an ``info`` is not JSON.
        """
        if not records:
            return
        args = execution.log_args(records)
        await self._write(lambda conn: execution.insert_logs(conn, args))

    # -- control (admin writes; control.py) ----------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or doing tasks and their waiting descendants.

        Returns every id changed, descendants included, ascending. Emits ``control`` for
        the tasks that were doing and ``ended`` for all.
        """
        return await control.cancel_or_stop(self, task_ids, TaskState.CANCELLED)

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or doing tasks; descendants stay waiting. Ids ascending.

        Emits ``control`` for those that were doing, and ``ended`` for all.
        """
        return await control.cancel_or_stop(self, task_ids, TaskState.STOPPED)

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Re-enqueue failed, cancelled or stopped tasks and restore what their end cascaded to.

        A retried task is due at once (``date_scheduled`` = now) with ``retry_count`` 0; the
        descendants restored (those failed or cancelled with ``ParentFailed`` /
        ``ParentCancelled``) keep their schedule and count. Each becomes ``enqueued`` when
        all its parents are done, else ``waiting`` with ``pending_parents`` recomputed.
        Returns the ids changed (retried and restored), ascending. Emits ``created`` naming
        the channels of the tasks now enqueued.
        """
        return await control.retry_tasks(self, task_ids)

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all), and the waiting
        descendants of those tasks in any channel (they could never start); return how many.

        Their logs and edges go with them (the foreign keys cascade).
        """
        return await control.delete_pending(self, channel)

    # -- servers and maintenance (maintenance.py) ----------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now).

        ``started_at`` is kept when given, else now.
        """
        await maintenance.register_server(self, server)

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record the server alive now with these counts; False when it has no row."""
        return await maintenance.heartbeat(self, server_name, active_workers, idle_workers)

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row (nothing happens when there is none)."""
        await maintenance.unregister_server(self, server_name)

    async def rescue_stale(self, stale_before: datetime) -> list[int]:
        """Re-enqueue (or fail, when attempts are used up) tasks of dead servers.

        Returns the ids of the ``doing`` tasks handled, ascending (descendants failed by the
        cascade are not listed). A re-enqueued task is due now with ``retry_count`` + 1 and
        ``WorkerLost`` as its last error; a task with no attempt left (``retry_count`` >=
        ``max_retries``) becomes failed, cascading as a failure. Stale server rows are
        deleted. One reaper at a time: the work runs under a transaction advisory lock and
        a caller that cannot take it returns [] at once. Then the children of tasks done
        before ``stale_before`` whose release was left unfinished (a worker stopped between
        its chunks: see ``releases``) are released.
        """
        return await maintenance.rescue_stale(self, stale_before)

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks that ended before ``ended_before``, with logs and edges.

        Children keep existing (``parent_task`` becomes null). Deletes in chunks so that no
        statement holds many locks for long. Returns how many.
        """
        return await maintenance.prune(self, ended_before)

    # -- reads (reads.py) ----------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        return await reads.get_tasks(self, task_ids)

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, highest id first, and the total that match.

        ``name`` matches a case-insensitive substring; ``enqueued_after`` is inclusive and
        ``enqueued_before`` exclusive (a half-open range).
        """
        return await reads.list_tasks(self, filter, limit=limit, offset=offset)

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant (ascending ids) with the edges between them.

        Raises ``UnknownTask``.
        """
        return await reads.get_tree(self, task_id)

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task in insertion (id) order, with id greater than ``after_id``."""
        return await reads.get_logs(self, task_id, after_id=after_id, limit=limit)

    async def stats(self) -> Stats:
        """Counts by state (every state listed) and channel, last-minute throughput, workers."""
        return await reads.stats(self)

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        return await reads.list_servers(self)

    # -- events (events.py) --------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> Subscription:
        """Deliver every event to ``handler`` until the subscription is closed.

        With NOTIFY: through one LISTEN connection shared by this repository's subscribers
        (events of this process arrive through it too, exactly once). The subscription's
        ``healthy`` is False while that connection is down; after a reconnect a ``created``
        event naming the channels with enqueued tasks is delivered, as notifications may have
        been missed. Without NOTIFY: events of this object only, soon after each change.
        """
        return await events.subscribe(self, handler)

    async def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber (other processes too, with NOTIFY)."""
        await events.publish(self, event)


def _lost(conn: asyncpg.Connection) -> bool:
    """Whether a lent connection can no longer be used: closed, or already taken back by its
    pool (asyncpg does that when the server ends a pooled connection)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


async def _give_back(
    lease: tuple[Any, asyncpg.Connection], error: BaseException | None = None
) -> None:
    """Return a lease of ``PostgresRepository._connection`` to its pool, which rolls back a
    transaction left open and drops a broken connection. A failure there is not the
    caller's: the work is done, or its own error is on its way."""
    with contextlib.suppress(*DRIVER_ERRORS):
        await lease[0].__aexit__(None if error is None else type(error), error, None)
