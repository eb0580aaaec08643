"""The one persistence seam: every read and write the queue makes goes through it.

Verbs are what the queue does, batch-first (single-item calls are the callers' wrappers),
frozen dataclasses in and out. Every state change is guarded: it applies only to rows still
in the state the caller expects, and the verb returns the ids it actually changed.

Implementations: ``taskqueue_core.tortoise.PostgresRepository`` (production),
``taskqueue_core.tortoise.SqliteRepository`` (embedded default) and
``taskqueue_core.testing.InMemoryRepository`` (public fake). All three pass
``tests/contract``.

Errors: implementations raise only taskqueue exceptions (``UnknownParent``, ``UnknownTask``,
``RepositoryError`` wrapping the driver's error), never a driver's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

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

__all__ = ["EventHandler", "Subscription", "TaskRepository"]

EventHandler = Callable[[Event], None]
"""Called (in the event loop, never concurrently with itself) for each event received."""


@runtime_checkable
class Subscription(Protocol):
    """A live subscription to repository events; close it to stop receiving."""

    @property
    def healthy(self) -> bool:
        """False while the backend's notification channel is down (callers should poll)."""
        ...

    async def close(self) -> None:
        """Stop delivering events and release the connection, if any. Idempotent."""
        ...


@runtime_checkable
class TaskRepository(Protocol):
    """Storage of tasks, their logs and the servers running them."""

    supports_notify: bool
    """True when events reach other processes (PostgreSQL LISTEN/NOTIFY). When False, events
    reach only subscribers in this process and other processes must poll."""

    concurrent_creations: int
    """How many ``create_tasks`` calls the queue's background writer runs at once, each with
    part of a big round of ``add_task`` calls: 2 where calls at once are written in parallel
    (PostgreSQL: each on its own connection, each by its own server process), 1 where they
    would only wait for each other (the embedded backends). Those calls are separate
    transactions: each part's ids follow its order, but the ids of two parts may interleave."""

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (and, for embedded backends, create the schema). Idempotent."""
        ...

    async def close(self) -> None:
        """Release every connection this repository opened. Idempotent."""
        ...

    # -- creation ------------------------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids in order.

        ``parent_task`` is set to the first parent; every parent (existing or in the batch) gets
        an edge in ``queued_task_dependencies``; ``pending_parents`` counts parents not done.
        Raises ``UnknownParent`` (naming the id) if a ``parent_ids`` entry does not exist, and
        ``InvalidTaskError`` if a ``batch_parents`` entry is not an earlier position.
        ``transaction``: a backend connection already inside a transaction (Tortoise:
        the client from ``in_transaction()``) to write through; the caller commits.
        Emits one ``created`` event per call, after commit, naming the channels of
        tasks created ``enqueued``.
        """
        ...

    # -- execution -----------------------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Atomically move up to ``limit`` ready tasks to ``doing`` for ``server_name``.

        Ready: state ``enqueued``, ``date_scheduled`` null or past, channel in ``channels``
        (None: any). Order: priority descending, then ``date_scheduled``/``date_enqueued``,
        then id. Sets ``date_started`` and ``claimed_by``. Concurrent claimers never receive
        the same task. Returns the claimed tasks as stored after the change.
        """
        ...

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """When the next task scheduled for later becomes ready: the earliest
        ``date_scheduled`` after now among ``enqueued`` tasks of ``channels`` (None: any).

        None when no enqueued task is scheduled for later (tasks ready now do not count:
        a claim is what finds them). An idle worker sleeps until this moment, as no event
        announces that a delayed task or a retry is due.
        """
        ...

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` and claimed by ``server_name``.

        Returns the ids changed; an outcome for a task that is no longer doing for this
        server (cancelled, stopped or rescued meanwhile) is ignored. Cascades to children
        as each ``Outcome`` state documents, in the same transaction. Emits ``ended`` for the
        tasks that reached a finished state and ``created`` if any child became enqueued.
        """
        ...

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        ...

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each task (any state; missing ids are ignored)."""
        ...

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows; ``date_created`` None means now.

        Records of tasks that no longer exist are dropped."""
        ...

    # -- control (admin writes) ----------------------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel tasks that are waiting, enqueued or doing; return the ids changed.

        Waiting descendants of each cancelled task are cancelled too (``exception_name``
        ``ParentCancelled``) and are part of the returned ids. A doing task becomes
        ``cancelled`` at once (its worker's late outcome will be ignored). Emits ``control``
        for the tasks that were doing, and ``ended`` for all.
        """
        ...

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop tasks that are waiting, enqueued or doing; descendants stay waiting.

        Emits ``control`` for those that were doing, and ``ended`` for all.
        """
        ...

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Put failed, cancelled or stopped tasks back to ``enqueued`` (``waiting`` if a
        parent is not done), clearing their error and end dates, and restore the descendants
        that were failed or cancelled because of them (``ParentFailed``/``ParentCancelled``)
        to ``waiting`` with ``pending_parents`` recomputed. Returns the ids changed.
        ``retry_count`` is reset to 0 for the retried tasks. Emits ``created``.
        """
        ...

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all), with their logs and
        edges, and the waiting descendants of those tasks in any channel (they could never
        start); return how many."""
        ...

    # -- servers and maintenance ---------------------------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now)."""
        ...

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record that the server is alive now with these counts.

        Returns False when the server has no row (a reaper declared it dead): the caller
        re-registers with ``register_server``."""
        ...

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row."""
        ...

    async def rescue_stale(self, stale_before: datetime) -> list[int]:
        """Re-enqueue tasks ``doing`` on servers whose heartbeat is older than ``stale_before``
        (or that have no row) and that started before ``stale_before``; return their ids.

        Each rescue counts an attempt: ``retry_count`` + 1, and a task whose attempts are
        used up becomes ``failed`` (``exception_name`` ``WorkerLost``), cascading as a failure.
        Deletes the rows of those stale servers. Only one caller at a time does the work
        (PostgreSQL: an advisory lock); the others return [] at once.
        """
        ...

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks whose ``date_ended`` is before ``ended_before``, with their
        logs and edges; children keep existing (``parent_task`` becomes null). Returns count."""
        ...

    # -- reads ---------------------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        ...

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, newest (highest id) first, and the total that match."""
        ...

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant, with edges. Raises ``UnknownTask``."""
        ...

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task, oldest first, with id greater than ``after_id``."""
        ...

    async def stats(self) -> Stats:
        """Counts by state and channel, recent throughput and worker totals."""
        ...

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        ...

    # -- events --------------------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> Subscription:
        """Deliver every event (from this process, and from others when ``supports_notify``)
        to ``handler`` until the subscription is closed."""
        ...

    async def publish(self, event: Event) -> None:
        """Send an event to every subscriber (other processes too when ``supports_notify``)."""
        ...
