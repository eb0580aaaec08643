"""``InMemoryRepository``: the ``TaskRepository`` verbs over a ``Store``.

Each public method states its contract and hands the work to the module of its kind
(``creation``, ``execution``, ``control``, ``maintenance``, ``reads``), whose functions are
synchronous: a verb applies from start to end without awaiting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from taskqueue_core.memory import control, creation, execution, maintenance, reads
from taskqueue_core.memory.store import Store
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
from taskqueue_core.repository import EventHandler
from taskqueue_core.subscribers import LocalSubscription

__all__ = ["InMemoryRepository"]


class InMemoryRepository:
    """A ``TaskRepository`` that keeps everything in memory, for one process and one event loop.

    Ids of tasks and of log rows start at 1 and increase. Events reach subscribers of this
    object only (``supports_notify`` is False). Data survive ``close()`` and a later ``open()``;
    ``transaction`` arguments are accepted and ignored (every verb applies at once).

    ``clock`` returns "now" (aware UTC); tests may pass their own to move time forward
    without sleeping, e.g. to make a delayed task or a retry due.
    """

    supports_notify: bool = False
    concurrent_creations: int = 1

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._store = Store(clock or (lambda: datetime.now(UTC)))
        self._opened = False

    def __repr__(self) -> str:
        store = self._store
        return f"<InMemoryRepository tasks={len(store.tasks)} servers={len(store.servers)}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to connect; idempotent."""
        self._opened = True

    async def close(self) -> None:
        """Close every subscription; the stored data stay. Idempotent."""
        self._opened = False
        await self._store.subscriptions.close()

    # -- creation ------------------------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids.

        Parents listed in ``parent_ids`` come before ``batch_parents`` (so ``parent_task`` is
        ``parent_ids[0]`` when there is one); a parent named twice counts once.
        Raises ``UnknownParent``, ``InvalidTaskError`` or ``ArgumentNotSerializable`` before
        anything is written. ``transaction`` is ignored.
        """
        del transaction  # nothing to join: every verb applies at once
        return creation.create_tasks(self._store, tasks)

    # -- execution -----------------------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Move up to ``limit`` ready tasks to ``doing`` for ``server_name``, in claim order."""
        return execution.claim_tasks(self._store, server_name, limit, channels)

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``date_scheduled`` after now among enqueued tasks of ``channels``
        (None: any), or None when no enqueued task is scheduled for later."""
        return execution.next_due(self._store, channels)

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` for ``server_name``; return the ids changed.

        The returned ids are those of the outcomes applied, in order (children released or
        cascaded to are not listed). Raises ``InvalidTransition`` for an outcome state that is
        not done, failed, enqueued, cancelled or stopped, and ``ArgumentNotSerializable`` for
        a result or context that is not JSON, before anything is written.
        """
        return execution.complete_tasks(self._store, server_name, outcomes)

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        return {i: self._store.tasks[i].state for i in task_ids if i in self._store.tasks}

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each existing task (missing ids are ignored).

        Raises ``ArgumentNotSerializable`` (nothing written) if a context is not JSON.
        """
        execution.update_contexts(self._store, contexts)

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows; ``date_created`` None means now. Records of missing tasks are dropped.

        Like the database backends, ``type`` and ``name`` are cut to their columns (16 and
        255 characters) and NUL characters replaced (U+FFFD) rather than losing the line.

        Raises ``ArgumentNotSerializable`` (nothing written) if an ``info`` is not JSON.
        """
        execution.append_logs(self._store, records)

    # -- control (admin writes) ----------------------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or doing tasks and their waiting descendants.

        Returns every id changed, descendants included, in ascending order.
        """
        return control.end_active(self._store, task_ids, TaskState.CANCELLED)

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or doing tasks; descendants stay waiting. Ids ascending."""
        return control.end_active(self._store, task_ids, TaskState.STOPPED)

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Re-enqueue failed, cancelled or stopped tasks and restore what their end cascaded to.

        A retried task is due at once (``date_scheduled`` = now) with ``retry_count`` 0; the
        descendants restored keep their schedule and count. Returns the ids changed (retried
        and restored), ascending.
        """
        return control.retry_tasks(self._store, task_ids)

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all) with their logs and edges,
        and the waiting descendants of those tasks in any channel (they could never start).

        Returns how many.
        """
        return control.delete_pending(self._store, channel)

    # -- servers and maintenance ---------------------------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now).

        ``started_at`` is kept when given, else now.
        """
        maintenance.register_server(self._store, server)

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record the server alive now with these counts; False when it has no row."""
        return maintenance.heartbeat(self._store, server_name, active_workers, idle_workers)

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row (nothing happens when there is none)."""
        self._store.servers.pop(server_name, None)

    async def rescue_stale(self, stale_before: datetime) -> list[int]:
        """Re-enqueue (or fail, when attempts are used up) tasks of dead servers.

        Returns the ids of the ``doing`` tasks handled, ascending (descendants failed by
        the cascade are not listed). A re-enqueued task is due now and shows ``WorkerLost``
        as its last error; a failed one keeps its ``retry_count``.
        """
        return maintenance.rescue_stale(self._store, stale_before)

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks that ended before ``ended_before``, with logs and edges."""
        return maintenance.prune(self._store, ended_before)

    # -- reads ---------------------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        return [self._store.tasks[i].snapshot() for i in task_ids if i in self._store.tasks]

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, highest id first, and the total that match.

        ``enqueued_after`` is inclusive and ``enqueued_before`` exclusive (a half-open range).
        """
        return reads.list_tasks(self._store, filter, limit, offset)

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant (ascending ids) with the edges between them."""
        return reads.get_tree(self._store, task_id)

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task in insertion (id) order, with id greater than ``after_id``."""
        return reads.get_logs(self._store, task_id, after_id, limit)

    async def stats(self) -> Stats:
        """Counts by state (every state listed) and channel, last-minute throughput, workers."""
        return reads.stats(self._store)

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        return [self._store.servers[name] for name in sorted(self._store.servers)]

    # -- events --------------------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> LocalSubscription:
        """Deliver every event of this repository to ``handler`` (soon after the change that
        caused it, in the running loop) until the subscription is closed."""
        return self._store.subscriptions.add(handler)

    async def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber of this repository."""
        self._store.publish(event)
