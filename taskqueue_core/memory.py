"""InMemoryRepository: the storage seam kept in this process's memory.

It is the reference semantics of ``TaskRepository`` (it passes the same ``tests/contract``
suite as the database backends) and a public fake for unit tests of code that uses the queue:
no database, no driver, nothing to clean up.

How it stays faithful to a database:

- Every JSON value (arguments, context, result, log info) is stored as JSON text and decoded
  on each read, so callers never share mutable objects with the store, tuples come back as
  lists, and a value a database would refuse (a set, NaN) is refused here too.
- Every verb is atomic: it runs from start to end without awaiting, so on one event loop no
  other coroutine ever sees a half-applied change. Events are delivered after the change, with
  ``loop.call_soon``, never from inside it.
- Datetimes are timezone-aware UTC; a naive datetime given to it is taken as UTC (as asyncpg
  does for ``timestamptz``).

Ready tasks live in one heap per channel ordered exactly like the claim query
(``-priority, date_scheduled, id``) and tasks scheduled for later in a heap by date, so a claim
costs ``O(limit * channels * log n)`` rather than a scan. Heap entries are invalidated lazily:
an entry counts only while its task is still ``enqueued`` with the same generation number.
"""

from __future__ import annotations

import bisect
import heapq
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from taskqueue_core.exceptions import (
    ArgumentNotSerializable,
    InvalidTaskError,
    InvalidTransition,
    UnknownParent,
    UnknownTask,
)
from taskqueue_core.limits import (
    LOG_TYPE_MAX,
    NAME_MAX,
    check_columns,
    json_has_nul,
    storable_text,
)
from taskqueue_core.models import (
    PARENT_CANCELLED,
    PARENT_FAILED,
    WORKER_LOST,
    Event,
    FunctionRef,
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
from taskqueue_core.subscribers import LocalSubscribers, LocalSubscription

__all__ = ["InMemoryRepository"]

logger = logging.getLogger("taskqueue.memory")


_ACTIVE = frozenset({TaskState.WAITING, TaskState.ENQUEUED, TaskState.DOING})
_RETRYABLE = frozenset({TaskState.FAILED, TaskState.CANCELLED, TaskState.STOPPED})
_OUTCOME_STATES = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.ENQUEUED, TaskState.CANCELLED, TaskState.STOPPED}
)
# Rebuild the ready heaps once this many entries are dead and they outnumber the live ones.
_COMPACT_AFTER = 1024

_ReadyEntry = tuple[int, datetime, int, int]
"""(-priority, date_scheduled, task id, generation): heap order is claim order."""
_ScheduledEntry = tuple[datetime, int, int]
"""(date_scheduled, task id, generation)."""


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _encode(value: Any, what: str) -> str:
    """``value`` as JSON text, or ``ArgumentNotSerializable`` naming ``what``.

    A NUL character is refused like PostgreSQL's jsonb refuses it, so that code tested
    against this fake does not first fail in production.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ArgumentNotSerializable(f"{what} is not JSON-serializable: {exc}") from exc
    if json_has_nul(text):
        raise ArgumentNotSerializable(f"{what} contains a NUL character, which cannot be stored")
    return text


def _log_text(value: str, limit: int | None = None) -> str:
    """A log field as PostgreSQL text holds it: NUL replaced, cut to the column's length."""
    value = storable_text(value)
    return value if limit is None else value[:limit]


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _unique(values: Iterable[int]) -> list[int]:
    """``values`` without repeats, first occurrence kept (a parent counts once)."""
    return list(dict.fromkeys(values))


@dataclass(slots=True)
class _Row:
    """The mutable stored form of a task; ``snapshot()`` turns it into a frozen ``Task``."""

    id: int
    name: str
    function: FunctionRef
    state: TaskState
    args: str
    kwargs: str
    context: str
    result: str | None
    parent_task: int | None
    pending_parents: int
    channel: str
    priority: int
    retry_count: int
    max_retries: int
    timeout: float | None
    date_enqueued: datetime
    date_scheduled: datetime
    date_started: datetime | None = None
    date_done: datetime | None = None
    date_failed: datetime | None = None
    date_cancelled: datetime | None = None
    date_stopped: datetime | None = None
    date_ended: datetime | None = None
    execution_time: float | None = None
    claimed_by: str | None = None
    exception_name: str | None = None
    exception_message: str | None = None
    exception_info: str | None = None
    generation: int = 0

    def snapshot(self) -> Task:
        return Task(
            id=self.id,
            name=self.name,
            function=self.function,
            state=self.state,
            args=json.loads(self.args),
            kwargs=json.loads(self.kwargs),
            context=json.loads(self.context),
            result=_decode(self.result),
            parent_task=self.parent_task,
            pending_parents=self.pending_parents,
            channel=self.channel,
            priority=self.priority,
            retry_count=self.retry_count,
            max_retries=self.max_retries,
            timeout=self.timeout,
            date_enqueued=self.date_enqueued,
            date_scheduled=self.date_scheduled,
            date_started=self.date_started,
            date_done=self.date_done,
            date_failed=self.date_failed,
            date_cancelled=self.date_cancelled,
            date_stopped=self.date_stopped,
            date_ended=self.date_ended,
            execution_time=self.execution_time,
            claimed_by=self.claimed_by,
            exception_name=self.exception_name,
            exception_message=self.exception_message,
            exception_info=self.exception_info,
        )

    def set_error(self, name: str | None, message: str | None, info: str | None) -> None:
        self.exception_name = storable_text(name)
        self.exception_message = storable_text(message)
        self.exception_info = storable_text(info)

    def clear_end(self) -> None:
        """Forget how the task last ended (before it runs again)."""
        self.set_error(None, None, None)
        self.date_done = self.date_failed = self.date_cancelled = None
        self.date_stopped = self.date_ended = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A ``NewTask`` checked and encoded, ready to be written."""

    new: NewTask
    parents: list[int]
    batch_parents: list[int]
    args: str
    kwargs: str
    context: str
    scheduled: datetime


@dataclass(slots=True)
class _LogRow:
    id: int
    type: str
    name: str
    message: str
    info: str | None
    date_created: datetime

    def snapshot(self, task_id: int) -> LogRecord:
        return LogRecord(
            id=self.id,
            task_id=task_id,
            type=self.type,
            name=self.name,
            message=self.message,
            info=_decode(self.info),
            date_created=self.date_created,
        )


@dataclass(slots=True)
class _Changes:
    """What one verb changed, for the events it emits once the change is complete."""

    ended: list[int]
    control: list[int]
    channels: set[str]

    @classmethod
    def empty(cls) -> _Changes:
        return cls([], [], set())


class InMemoryRepository:
    """A ``TaskRepository`` that keeps everything in memory, for one process and one event loop.

    Ids of tasks and of log rows start at 1 and increase. Events reach subscribers of this
    object only (``supports_notify`` is False). Data survive ``close()`` and a later ``open()``;
    ``transaction`` arguments are accepted and ignored (every verb applies at once).

    ``clock`` returns "now" (aware UTC); tests may pass their own to move time forward
    without sleeping, e.g. to make a delayed task or a retry due.
    """

    supports_notify: bool = False

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tasks: dict[int, _Row] = {}
        self._by_state: dict[TaskState, set[int]] = {state: set() for state in TaskState}
        self._parents: dict[int, list[int]] = {}
        self._children: dict[int, list[int]] = {}
        self._logs: dict[int, list[_LogRow]] = {}
        self._servers: dict[str, ServerInfo] = {}
        self._ready: dict[str, list[_ReadyEntry]] = {}
        self._scheduled: list[_ScheduledEntry] = []
        self._dead_entries = 0
        self._next_task_id = 1
        self._next_log_id = 1
        self._subscriptions = LocalSubscribers()
        self._opened = False

    def __repr__(self) -> str:
        return f"<InMemoryRepository tasks={len(self._tasks)} servers={len(self._servers)}>"

    def _now(self) -> datetime:
        return _utc(self._clock())

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to connect; idempotent."""
        self._opened = True

    async def close(self) -> None:
        """Close every subscription; the stored data stay. Idempotent."""
        self._opened = False
        await self._subscriptions.close()

    # -- creation ------------------------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids.

        Parents listed in ``parent_ids`` come before ``batch_parents`` (so ``parent_task`` is
        ``parent_ids[0]`` when there is one); a parent named twice counts once.
        Raises ``UnknownParent``, ``InvalidTaskError`` or ``ArgumentNotSerializable`` before
        anything is written. ``transaction`` is ignored.
        """
        del transaction  # nothing to join: every verb applies at once
        now = self._now()
        prepared: list[_Prepared] = []
        for position, new in enumerate(tasks):
            what = f"task {position} ({new.name!r})"
            parent_ids = _unique(new.parent_ids)
            for parent_id in parent_ids:
                if parent_id not in self._tasks:
                    raise UnknownParent(f"{what}: parent task {parent_id} does not exist")
            batch_parents = _unique(new.batch_parents)
            for index in batch_parents:
                if isinstance(index, bool) or not isinstance(index, int):
                    raise InvalidTaskError(f"{what}: batch_parents entry {index!r} is not an int")
                if not 0 <= index < position:
                    raise InvalidTaskError(
                        f"{what}: batch_parents entry {index} is not an earlier position "
                        "in the same batch"
                    )
            if not isinstance(new.args, list | tuple):
                raise InvalidTaskError(
                    f"{what}: args must be a list, got {type(new.args).__name__}"
                )
            for label, value in (("kwargs", new.kwargs), ("context", new.context)):
                if not isinstance(value, dict):
                    raise InvalidTaskError(
                        f"{what}: {label} must be a dict, got {type(value).__name__}"
                    )
            check_columns(new, what)
            prepared.append(
                _Prepared(
                    new=new,
                    parents=parent_ids,
                    batch_parents=batch_parents,
                    args=_encode(list(new.args), f"{what}: args"),
                    kwargs=_encode(new.kwargs, f"{what}: kwargs"),
                    context=_encode(new.context, f"{what}: context"),
                    scheduled=now if new.date_scheduled is None else _utc(new.date_scheduled),
                )
            )

        # Everything is valid: write. Ids are consecutive, so a batch position maps to
        # first_id + position.
        first_id = self._next_task_id
        self._next_task_id += len(prepared)
        changes = _Changes.empty()
        ids: list[int] = []
        for position, item in enumerate(prepared):
            new = item.new
            task_id = first_id + position
            parents = item.parents + [first_id + index for index in item.batch_parents]
            rows = [self._tasks[parent_id] for parent_id in parents]
            row = _Row(
                id=task_id,
                name=new.name,
                function=new.function,
                state=TaskState.WAITING,
                args=item.args,
                kwargs=item.kwargs,
                context=item.context,
                result=None,
                parent_task=parents[0] if parents else None,
                pending_parents=sum(1 for parent in rows if parent.state is not TaskState.DONE),
                channel=new.channel,
                priority=new.priority,
                retry_count=0,
                max_retries=new.max_retries,
                timeout=new.timeout,
                date_enqueued=now,
                date_scheduled=item.scheduled,
            )
            self._tasks[task_id] = row
            self._by_state[TaskState.WAITING].add(task_id)
            self._parents[task_id] = parents
            for parent_id in parents:
                self._children.setdefault(parent_id, []).append(task_id)
            failed = next((p for p in rows if p.state is TaskState.FAILED), None)
            cancelled = next((p for p in rows if p.state is TaskState.CANCELLED), None)
            # As if the parent had just ended: a failure wins over a cancellation.
            if failed is not None:
                self._end(row, TaskState.FAILED, now)
                row.set_error(PARENT_FAILED, f"parent task {failed.id} failed", None)
                changes.ended.append(task_id)
            elif cancelled is not None:
                self._end(row, TaskState.CANCELLED, now)
                row.set_error(PARENT_CANCELLED, f"parent task {cancelled.id} was cancelled", None)
                changes.ended.append(task_id)
            elif row.pending_parents == 0:
                self._enqueue(row, now)
                changes.channels.add(row.channel)
            ids.append(task_id)
        self._emit(changes)
        return ids

    # -- execution -----------------------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Move up to ``limit`` ready tasks to ``doing`` for ``server_name``, in claim order."""
        if limit <= 0:
            return []
        now = self._now()
        self._promote_due(now)
        names = list(self._ready) if channels is None else _unique_str(channels)
        heaps = [self._ready[name] for name in names if name in self._ready]
        claimed: list[Task] = []
        while len(claimed) < limit:
            best: list[_ReadyEntry] | None = None
            for heap in heaps:
                self._clean_top(heap, now)
                if heap and (best is None or heap[0] < best[0]):
                    best = heap
            if best is None:
                break
            entry = heapq.heappop(best)
            row = self._tasks[entry[2]]
            self._move(row, TaskState.DOING)
            row.date_started = now
            row.claimed_by = server_name
            claimed.append(row.snapshot())
        return claimed

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``date_scheduled`` after now among enqueued tasks of ``channels``
        (None: any), or None when no enqueued task is scheduled for later."""
        if channels is not None and not channels:
            return None
        self._promote_due(self._now())
        heap = self._scheduled  # what is left is scheduled after now
        if channels is None:
            # The heap's top is the answer once the entries of tasks that changed are gone.
            while heap and self._valid(heap[0][1], heap[0][2]) is None:
                heapq.heappop(heap)
            return heap[0][0] if heap else None
        wanted = set(channels)
        best: datetime | None = None
        for scheduled, task_id, generation in heap:
            if best is not None and scheduled >= best:
                continue
            row = self._valid(task_id, generation)
            if row is not None and row.channel in wanted:
                best = scheduled
        return best

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` for ``server_name``; return the ids changed.

        The returned ids are those of the outcomes applied, in order (children released or
        cascaded to are not listed). Raises ``InvalidTransition`` for an outcome state that is
        not done, failed, enqueued, cancelled or stopped, and ``ArgumentNotSerializable`` for
        a result or context that is not JSON, before anything is written.
        """
        encoded: list[tuple[Outcome, str, str | None]] = []
        for outcome in outcomes:
            if outcome.state not in _OUTCOME_STATES:
                raise InvalidTransition(
                    f"task {outcome.task_id}: an outcome cannot be {outcome.state.value!r}"
                )
            result = _encode(outcome.result, f"result of task {outcome.task_id}")
            context = (
                None
                if outcome.context is None
                else _encode(outcome.context, f"context of task {outcome.task_id}")
            )
            encoded.append((outcome, result, context))

        now = self._now()
        changes = _Changes.empty()
        changed: list[int] = []
        for outcome, result, context in encoded:
            row = self._tasks.get(outcome.task_id)
            if row is None or row.state is not TaskState.DOING or row.claimed_by != server_name:
                continue  # cancelled, stopped or rescued meanwhile: the late outcome is stale
            changed.append(row.id)
            if context is not None:
                row.context = context
            if outcome.execution_time is not None:
                row.execution_time = outcome.execution_time
            state = outcome.state
            if state is TaskState.DONE:
                row.result = result
                row.set_error(None, None, None)
                self._end(row, TaskState.DONE, now)
                changes.ended.append(row.id)
                self._release_children(row, now, changes)
            elif state is TaskState.ENQUEUED:
                if outcome.error_name is not None:
                    row.set_error(outcome.error_name, outcome.error_message, outcome.error_info)
                if outcome.count_attempt:
                    row.retry_count += 1
                row.claimed_by = None
                retry_at = now if outcome.retry_at is None else _utc(outcome.retry_at)
                row.date_scheduled = retry_at
                self._enqueue(row, now)
                changes.channels.add(row.channel)
            else:
                if state is TaskState.FAILED:
                    row.set_error(outcome.error_name, outcome.error_message, outcome.error_info)
                self._end(row, state, now)
                changes.ended.append(row.id)
                self._cascade_end(row, state, now, changes)
        self._emit(changes)
        return changed

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        return {i: self._tasks[i].state for i in task_ids if i in self._tasks}

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each existing task (missing ids are ignored).

        Raises ``ArgumentNotSerializable`` (nothing written) if a context is not JSON.
        """
        encoded = {
            task_id: _encode(context, f"context of task {task_id}")
            for task_id, context in contexts.items()
        }
        for task_id, text in encoded.items():
            row = self._tasks.get(task_id)
            if row is not None:
                row.context = text

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows; ``date_created`` None means now. Records of missing tasks are dropped.

        Like the database backends, ``type`` and ``name`` are cut to their columns (16 and
        255 characters) and NUL characters replaced (U+FFFD) rather than losing the line.

        Raises ``ArgumentNotSerializable`` (nothing written) if an ``info`` is not JSON.
        """
        now = self._now()
        encoded = [
            (
                record,
                None if record.info is None else _encode(record.info, "log info"),
            )
            for record in records
        ]
        for record, info in encoded:
            if record.task_id not in self._tasks:
                continue
            log = _LogRow(
                id=self._next_log_id,
                type=_log_text(record.type, LOG_TYPE_MAX),
                name=_log_text(record.name, NAME_MAX),
                message=_log_text(record.message),
                info=info,
                date_created=now if record.date_created is None else _utc(record.date_created),
            )
            self._next_log_id += 1
            self._logs.setdefault(record.task_id, []).append(log)

    # -- control (admin writes) ----------------------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or doing tasks and their waiting descendants.

        Returns every id changed, descendants included, in ascending order.
        """
        return self._control(task_ids, TaskState.CANCELLED)

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or doing tasks; descendants stay waiting. Ids ascending."""
        return self._control(task_ids, TaskState.STOPPED)

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Re-enqueue failed, cancelled or stopped tasks and restore what their end cascaded to.

        A retried task is due at once (``date_scheduled`` = now) with ``retry_count`` 0; the
        descendants restored keep their schedule and count. Returns the ids changed (retried
        and restored), ascending.
        """
        now = self._now()
        changes = _Changes.empty()
        changed: list[int] = []
        for task_id in task_ids:
            row = self._tasks.get(task_id)
            if row is None or row.state not in _RETRYABLE:
                continue
            row.retry_count = 0
            row.date_scheduled = now
            self._restore(row, now, changes)
            changed.append(row.id)
            stack = list(self._children.get(row.id, ()))
            while stack:
                child = self._tasks.get(stack.pop())
                if child is None or not _ended_by_parent(child):
                    continue
                self._restore(child, now, changes)
                changed.append(child.id)
                stack.extend(self._children.get(child.id, ()))
        self._emit(changes)
        return sorted(changed)

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all) with their logs and edges,
        and the waiting descendants of those tasks in any channel (they could never start).

        Returns how many.
        """
        doomed = {
            task_id
            for state in (TaskState.WAITING, TaskState.ENQUEUED)
            for task_id in self._by_state[state]
            if channel is None or self._tasks[task_id].channel == channel
        }
        stack = list(doomed)
        while stack:
            for child_id in self._children.get(stack.pop(), ()):
                child = self._tasks.get(child_id)
                if (
                    child is not None
                    and child.state is TaskState.WAITING
                    and child_id not in doomed
                ):
                    doomed.add(child_id)
                    stack.append(child_id)
        for task_id in doomed:
            self._delete(task_id)
        self._maybe_compact()
        return len(doomed)

    # -- servers and maintenance ---------------------------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now).

        ``started_at`` is kept when given, else now.
        """
        now = self._now()
        self._servers[server.server_name] = replace(
            server,
            is_running=True,
            last_heartbeat=now,
            started_at=now if server.started_at is None else _utc(server.started_at),
        )

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record the server alive now with these counts; False when it has no row."""
        server = self._servers.get(server_name)
        if server is None:
            return False
        self._servers[server_name] = replace(
            server,
            active_workers=active_workers,
            idle_workers=idle_workers,
            last_heartbeat=self._now(),
        )
        return True

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row (nothing happens when there is none)."""
        self._servers.pop(server_name, None)

    async def rescue_stale(self, stale_before: datetime) -> list[int]:
        """Re-enqueue (or fail, when attempts are used up) tasks of dead servers.

        Returns the ids of the ``doing`` tasks handled, ascending (descendants failed by
        the cascade are not listed). A re-enqueued task is due now and shows ``WorkerLost``
        as its last error; a failed one keeps its ``retry_count``.
        """
        stale_before = _utc(stale_before)
        now = self._now()
        stale = {
            name
            for name, server in self._servers.items()
            if server.last_heartbeat is None or server.last_heartbeat < stale_before
        }
        changes = _Changes.empty()
        rescued: list[int] = []
        for task_id in sorted(self._by_state[TaskState.DOING]):
            row = self._tasks[task_id]
            owner = row.claimed_by
            dead = owner is None or owner in stale or owner not in self._servers
            if not dead or (row.date_started is not None and row.date_started >= stale_before):
                continue
            rescued.append(task_id)
            message = f"server {owner!r} stopped heartbeating while the task ran"
            if row.retry_count >= row.max_retries:
                row.set_error(WORKER_LOST, message, None)
                self._end(row, TaskState.FAILED, now)
                changes.ended.append(task_id)
                self._cascade_end(row, TaskState.FAILED, now, changes)
            else:
                row.retry_count += 1
                row.set_error(WORKER_LOST, message, None)
                row.claimed_by = None
                row.date_scheduled = now
                self._enqueue(row, now)
                changes.channels.add(row.channel)
        for name in stale:
            del self._servers[name]
        self._emit(changes)
        return rescued

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks that ended before ``ended_before``, with logs and edges."""
        ended_before = _utc(ended_before)
        doomed = [
            task_id
            for state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.STOPPED)
            for task_id in self._by_state[state]
            if (ended := self._tasks[task_id].date_ended) is not None and ended < ended_before
        ]
        for task_id in doomed:
            self._delete(task_id)
        return len(doomed)

    # -- reads ---------------------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        return [self._tasks[i].snapshot() for i in task_ids if i in self._tasks]

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, highest id first, and the total that match.

        ``enqueued_after`` is inclusive and ``enqueued_before`` exclusive (a half-open range).
        """
        if filter is None:
            filter = TaskFilter()
        candidates: Iterable[_Row]
        if filter.states is not None:
            ids: set[int] = set()
            for state in filter.states:
                ids |= self._by_state[TaskState(state)]
            candidates = (self._tasks[i] for i in sorted(ids, reverse=True))
        else:
            candidates = reversed(self._tasks.values())
        needle = None if filter.name is None else filter.name.casefold()
        after = None if filter.enqueued_after is None else _utc(filter.enqueued_after)
        before = None if filter.enqueued_before is None else _utc(filter.enqueued_before)
        matching = [
            row
            for row in candidates
            if (needle is None or needle in row.name.casefold())
            and (filter.channel is None or row.channel == filter.channel)
            and (filter.parent_task is None or row.parent_task == filter.parent_task)
            and (after is None or row.date_enqueued >= after)
            and (before is None or row.date_enqueued < before)
        ]
        page = matching[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        return TaskPage(tasks=[row.snapshot() for row in page], total=len(matching))

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant (ascending ids) with the edges between them."""
        if task_id not in self._tasks:
            raise UnknownTask(f"task {task_id} does not exist")
        members = {task_id}
        stack = [task_id]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in members:
                    members.add(child)
                    stack.append(child)
        ordered = sorted(members)
        edges = [
            (child, parent)
            for child in ordered
            for parent in self._parents.get(child, ())
            if parent in members
        ]
        return TaskTree(tasks=[self._tasks[i].snapshot() for i in ordered], edges=edges)

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task in insertion (id) order, with id greater than ``after_id``."""
        rows = self._logs.get(task_id, [])
        start = 0
        if after_id is not None:
            start = bisect.bisect_right(rows, after_id, key=lambda log: log.id)
        return [log.snapshot(task_id) for log in rows[start : start + max(limit, 0)]]

    async def stats(self) -> Stats:
        """Counts by state (every state listed) and channel, last-minute throughput, workers."""
        since = self._now() - timedelta(minutes=1)
        by_channel: dict[str, dict[str, int]] = {}
        done_recently = failed_recently = 0
        for row in self._tasks.values():
            counts = by_channel.setdefault(row.channel, {})
            counts[row.state.value] = counts.get(row.state.value, 0) + 1
            if row.date_done is not None and row.date_done >= since:
                done_recently += 1
            if row.date_failed is not None and row.date_failed >= since:
                failed_recently += 1
        running = [server for server in self._servers.values() if server.is_running]
        return Stats(
            by_state={state.value: len(self._by_state[state]) for state in TaskState},
            by_channel=by_channel,
            done_last_minute=done_recently,
            failed_last_minute=failed_recently,
            servers_running=len(running),
            workers_total=sum(server.max_workers for server in running),
            workers_active=sum(server.active_workers for server in running),
            workers_idle=sum(server.idle_workers for server in running),
        )

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        return [self._servers[name] for name in sorted(self._servers)]

    # -- events --------------------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> LocalSubscription:
        """Deliver every event of this repository to ``handler`` (soon after the change that
        caused it, in the running loop) until the subscription is closed."""
        return self._subscriptions.add(handler)

    async def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber of this repository."""
        self._publish(event)

    # -- internals: state changes (never await in here) ---------------------------------

    def _move(self, row: _Row, state: TaskState) -> None:
        if row.state is TaskState.ENQUEUED and state is not TaskState.DOING:
            # Its heap entry stays behind until popped or compacted away.
            self._dead_entries += 1
        self._by_state[row.state].discard(row.id)
        row.state = state
        self._by_state[state].add(row.id)

    def _enqueue(self, row: _Row, now: datetime) -> None:
        """Make ``row`` enqueued and index it (ready now, or scheduled for later)."""
        self._move(row, TaskState.ENQUEUED)
        row.pending_parents = 0
        row.generation += 1
        if row.date_scheduled <= now:
            heap = self._ready.setdefault(row.channel, [])
            heapq.heappush(heap, (-row.priority, row.date_scheduled, row.id, row.generation))
        else:
            heapq.heappush(self._scheduled, (row.date_scheduled, row.id, row.generation))

    def _end(self, row: _Row, state: TaskState, now: datetime) -> None:
        self._move(row, state)
        if state is TaskState.DONE:
            row.date_done = now
        elif state is TaskState.FAILED:
            row.date_failed = now
        elif state is TaskState.CANCELLED:
            row.date_cancelled = now
        elif state is TaskState.STOPPED:
            row.date_stopped = now
        row.date_ended = now

    def _release_children(self, parent: _Row, now: datetime, changes: _Changes) -> None:
        """``parent`` is done: waiting children count one pending parent less."""
        for child_id in self._children.get(parent.id, ()):
            child = self._tasks.get(child_id)
            if child is None or child.state is not TaskState.WAITING:
                continue
            child.pending_parents = max(child.pending_parents - 1, 0)
            if child.pending_parents == 0:
                self._enqueue(child, now)
                changes.channels.add(child.channel)

    def _cascade_end(self, root: _Row, state: TaskState, now: datetime, changes: _Changes) -> None:
        """``root`` ended ``state``: fail or cancel its waiting descendants (stopped: none)."""
        if state is TaskState.FAILED:
            name, message = PARENT_FAILED, f"parent task {root.id} failed"
        elif state is TaskState.CANCELLED:
            name, message = PARENT_CANCELLED, f"parent task {root.id} was cancelled"
        else:
            return
        stack = list(self._children.get(root.id, ()))
        while stack:
            child = self._tasks.get(stack.pop())
            if child is None or child.state is not TaskState.WAITING:
                continue
            self._end(child, state, now)
            child.set_error(name, message, None)
            changes.ended.append(child.id)
            stack.extend(self._children.get(child.id, ()))

    def _control(self, task_ids: Sequence[int], state: TaskState) -> list[int]:
        now = self._now()
        changes = _Changes.empty()
        for task_id in task_ids:
            row = self._tasks.get(task_id)
            if row is None or row.state not in _ACTIVE:
                continue
            if row.state is TaskState.DOING:
                changes.control.append(task_id)
            self._end(row, state, now)
            changes.ended.append(task_id)
            self._cascade_end(row, state, now, changes)
        self._emit(changes)
        self._maybe_compact()
        return sorted(changes.ended)

    def _restore(self, row: _Row, now: datetime, changes: _Changes) -> None:
        """Put an ended task back: enqueued when all its parents are done, else waiting."""
        row.clear_end()
        row.claimed_by = None
        pending = sum(
            1
            for parent_id in self._parents.get(row.id, ())
            if (parent := self._tasks.get(parent_id)) is not None
            and parent.state is not TaskState.DONE
        )
        if pending:
            self._move(row, TaskState.WAITING)
            row.pending_parents = pending
        else:
            self._enqueue(row, now)
            changes.channels.add(row.channel)

    def _delete(self, task_id: int) -> None:
        row = self._tasks.pop(task_id)
        if row.state is TaskState.ENQUEUED:
            self._dead_entries += 1
        self._by_state[row.state].discard(task_id)
        self._logs.pop(task_id, None)
        for parent_id in self._parents.pop(task_id, ()):
            siblings = self._children.get(parent_id)
            if siblings is not None:
                siblings.remove(task_id)
        for child_id in self._children.pop(task_id, ()):
            child = self._tasks.get(child_id)
            if child is None:
                continue
            parents = self._parents.get(child_id)
            if parents is not None and task_id in parents:
                parents.remove(task_id)
            if child.parent_task == task_id:
                child.parent_task = None

    # -- internals: the ready index ------------------------------------------------------

    def _valid(self, task_id: int, generation: int) -> _Row | None:
        row = self._tasks.get(task_id)
        if row is None or row.state is not TaskState.ENQUEUED or row.generation != generation:
            return None
        return row

    def _promote_due(self, now: datetime) -> None:
        """Move scheduled entries whose time has come to their channel's ready heap."""
        while self._scheduled and self._scheduled[0][0] <= now:
            _, task_id, generation = heapq.heappop(self._scheduled)
            row = self._valid(task_id, generation)
            if row is not None:
                heap = self._ready.setdefault(row.channel, [])
                heapq.heappush(heap, (-row.priority, row.date_scheduled, row.id, generation))

    def _clean_top(self, heap: list[_ReadyEntry], now: datetime) -> None:
        """Drop dead entries from the top of ``heap`` so that ``heap[0]`` is claimable."""
        while heap:
            _, scheduled, task_id, generation = heap[0]
            if self._valid(task_id, generation) is None:
                heapq.heappop(heap)
                self._dead_entries = max(self._dead_entries - 1, 0)
            elif scheduled > now:
                # Only when the clock went backwards: not due any more.
                heapq.heappop(heap)
                heapq.heappush(self._scheduled, (scheduled, task_id, generation))
            else:
                return

    def _maybe_compact(self) -> None:
        live = len(self._by_state[TaskState.ENQUEUED])
        if self._dead_entries < _COMPACT_AFTER or self._dead_entries < live:
            return
        now = self._now()
        self._ready = {}
        self._scheduled = []
        self._dead_entries = 0
        for task_id in self._by_state[TaskState.ENQUEUED]:
            row = self._tasks[task_id]
            if row.date_scheduled <= now:
                entry = (-row.priority, row.date_scheduled, row.id, row.generation)
                heapq.heappush(self._ready.setdefault(row.channel, []), entry)
            else:
                heapq.heappush(self._scheduled, (row.date_scheduled, row.id, row.generation))

    # -- internals: events ---------------------------------------------------------------

    def _emit(self, changes: _Changes) -> None:
        if changes.channels:
            self._publish(Event("created", channels=tuple(sorted(changes.channels))))
        if changes.control:
            self._publish(Event("control", task_ids=tuple(changes.control)))
        if changes.ended:
            self._publish(Event("ended", task_ids=tuple(sorted(changes.ended))))

    def _publish(self, event: Event) -> None:
        self._subscriptions.publish(event)


def _ended_by_parent(row: _Row) -> bool:
    """True when ``row`` ended only because an ancestor failed or was cancelled."""
    return (row.state is TaskState.FAILED and row.exception_name == PARENT_FAILED) or (
        row.state is TaskState.CANCELLED and row.exception_name == PARENT_CANCELLED
    )


def _unique_str(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
