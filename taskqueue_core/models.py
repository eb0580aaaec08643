"""The values that cross the storage seam: frozen dataclasses, no ORM rows.

JSON-typed fields (``args``, ``kwargs``, ``context``, ``result``, log ``info``) hold plain
JSON values: dicts, lists, str, int, float, bool and None. Datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "FINISHED_STATES",
    "Event",
    "FunctionRef",
    "LogRecord",
    "NewLogRecord",
    "NewTask",
    "Outcome",
    "ServerInfo",
    "Stats",
    "Task",
    "TaskFilter",
    "TaskPage",
    "TaskState",
    "TaskTree",
]

JSON = Any
"""A JSON value (documentation alias: dict, list, str, int, float, bool or None)."""


class TaskState(enum.StrEnum):
    """Where a task is in its life.

    ``waiting`` (parents not all done) -> ``enqueued`` (ready, or scheduled for later) ->
    ``doing`` -> ``done`` | ``failed`` | ``cancelled`` | ``stopped``.
    """

    WAITING = "waiting"
    ENQUEUED = "enqueued"
    DOING = "doing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"

    @property
    def is_finished(self) -> bool:
        """True for the states a task only leaves by an explicit retry."""
        return self in FINISHED_STATES


FINISHED_STATES = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.STOPPED}
)

PARENT_FAILED = "ParentFailed"
"""``exception_name`` of a task failed because one of its ancestors failed."""

PARENT_CANCELLED = "ParentCancelled"
"""``exception_name`` of a task cancelled because one of its ancestors was cancelled."""

WORKER_LOST = "WorkerLost"
"""``exception_name`` of a task whose server died (or lost it) while it ran: it is enqueued
again, or failed once its retries are used up."""


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """How a task's function is stored: an import path, or a signed dill blob.

    Exactly one of (``module_name`` and ``function_name``) or ``serialized_function`` is set.
    ``signature`` is the HMAC-SHA256 hex digest of the reference under ``QUEUE_SECRET_KEY``,
    or None when the queue has no key.
    """

    module_name: str | None = None
    function_name: str | None = None
    serialized_function: bytes | None = None
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to create.

    ``parent_ids`` are existing tasks; ``batch_parents`` are positions of parents created in
    the same ``create_tasks`` call, each strictly less than this task's own position (so a
    parent is always created before its children). The task starts ``waiting`` while any
    parent is not done, ``enqueued`` otherwise; if a parent already failed (or was cancelled)
    it is created failed (or cancelled) at once, as if that parent had just ended.
    ``context`` is a dict that ``on_pre_create`` hooks may update in place.
    """

    name: str
    function: FunctionRef
    args: list[JSON] = field(default_factory=list)
    kwargs: dict[str, JSON] = field(default_factory=dict)
    context: dict[str, JSON] = field(default_factory=dict)
    parent_ids: tuple[int, ...] = ()
    batch_parents: tuple[int, ...] = ()
    channel: str = "default"
    priority: int = 0
    max_retries: int = 3
    timeout: float | None = None
    date_scheduled: datetime | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """A stored task, as read back from the repository."""

    id: int
    name: str
    function: FunctionRef
    state: TaskState
    args: list[JSON]
    kwargs: dict[str, JSON]
    context: dict[str, JSON]
    result: JSON
    parent_task: int | None
    pending_parents: int
    channel: str
    priority: int
    retry_count: int
    max_retries: int
    timeout: float | None
    date_enqueued: datetime
    date_scheduled: datetime | None = None
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a claimed task ended, as reported by the worker that ran it.

    ``state`` is one of:

    - ``done``: ``result`` is stored; children whose parents are now all done become enqueued.
    - ``failed``: final failure; the ``error_*`` fields are stored; waiting descendants fail
      with ``exception_name`` ``ParentFailed``.
    - ``enqueued``: try again at ``retry_at`` (None: now). ``retry_count`` grows by one when
      ``count_attempt`` (False for a graceful-shutdown hand-back); the error is kept for display.
    - ``cancelled`` / ``stopped``: as the admin verbs of the same name.

    ``context``, when not None, replaces the stored context in the same write.
    """

    task_id: int
    state: TaskState
    result: JSON = None
    error_name: str | None = None
    error_message: str | None = None
    error_info: str | None = None
    retry_at: datetime | None = None
    count_attempt: bool = True
    execution_time: float | None = None
    context: dict[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class NewLogRecord:
    """A log line emitted inside a task, to be appended to ``queued_task_logs``.

    ``date_created``: aware in any zone (stored as that instant, read back in UTC), naive
    taken as UTC, or None for the time of the write."""

    task_id: int
    type: str
    name: str
    message: str
    info: dict[str, JSON] | None = None
    date_created: datetime | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A stored log line."""

    id: int
    task_id: int
    type: str
    name: str
    message: str
    info: dict[str, JSON] | None
    date_created: datetime


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One running process of workers, a row of ``queued_task_workers``."""

    server_name: str
    hostname: str
    pid: int
    max_workers: int
    active_workers: int = 0
    idle_workers: int = 0
    is_running: bool = True
    last_heartbeat: datetime | None = None
    started_at: datetime | None = None
    version: str = ""


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing returns; every set field must match (None: any)."""

    states: tuple[TaskState, ...] | None = None
    name: str | None = None
    """Substring of the task name (case-insensitive)."""
    channel: str | None = None
    parent_task: int | None = None
    enqueued_after: datetime | None = None
    enqueued_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a listing, newest first, and the total count matching the filter."""

    tasks: list[Task]
    total: int


@dataclass(frozen=True, slots=True)
class TaskTree:
    """A task and all its descendants, with the dependency edges between them."""

    tasks: list[Task]
    edges: list[tuple[int, int]]
    """(child id, parent id) pairs."""


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts for the status and stats views."""

    by_state: dict[str, int]
    by_channel: dict[str, dict[str, int]]
    """channel -> state -> count."""
    done_last_minute: int
    failed_last_minute: int
    servers_running: int
    workers_total: int
    workers_active: int
    workers_idle: int


@dataclass(frozen=True, slots=True)
class Event:
    """A notification from the repository to the queues and workers listening.

    - ``created``: new tasks are ready on ``channels``.
    - ``ended``: ``task_ids`` reached a finished state (wakes ``TaskRef.wait``).
    - ``control``: ``task_ids`` were cancelled or stopped by an admin (interrupts workers).
    """

    kind: str
    task_ids: tuple[int, ...] = ()
    channels: tuple[str, ...] = ()


# A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which
# costs most of building one: about 2 us for a ``NewTask``, 4 us for a ``Task``, and the hot
# paths build one per task (a checked call, a claimed row, its outcome, a stored log line).
# Its twin is a plain class with the same slots: setting a field on it is an ordinary
# attribute store (the interpreter specialises those for slots), and one ``__class__``
# assignment then makes the object the dataclass's. That takes about a quarter of the
# ``__init__``'s time, and half the time of calling each slot descriptor's ``__set__``.
_BUILDER_NAMES = frozenset({"_tq_new", "_tq_twin", "_tq_cls", "_tq_obj"})


def slot_builder(cls: type[T]) -> Callable[..., T]:
    """A function that takes every field of the frozen slots dataclass ``cls`` positionally,
    in declaration order, and returns the instance ``cls(*values)`` would: equal, hashed,
    printed and frozen alike.

    It builds an instance of ``cls``'s twin, sets each field, then assigns ``cls`` as its
    ``__class__`` (generated code, as ``dataclasses`` generates ``__init__``). When ``cls`` is
    not exactly what that needs (slots in field order, every field an ``__init__`` argument,
    no ``__post_init__``, which would be skipped, the default ``__new__``, a layout Python lets
    an object change to), the function calls ``cls`` by field name instead.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = tuple(f.name for f in fields)
    new: object = cls.__new__
    twin: type | None = None
    if (
        tuple(getattr(cls, "__slots__", ())) == names
        and all(f.init for f in fields)
        and not hasattr(cls, "__post_init__")
        and new is object.__new__
        and not _BUILDER_NAMES & set(names)
    ):
        twin = type(f"{cls.__name__}Twin", (), {"__slots__": names, "__module__": __name__})
        probe: Any = object.__new__(twin)
        try:
            probe.__class__ = cls
        except TypeError:  # "object layout differs"
            twin = None
    if twin is None:

        def by_name(*values: Any) -> T:
            return cls(**dict(zip(names, values, strict=True)))

        return by_name
    stores = "".join(f"    _tq_obj.{name} = {name}\n" for name in names)
    source = (
        f"def build({', '.join(names)}):\n"
        "    _tq_obj = _tq_new(_tq_twin)\n"
        f"{stores}"
        "    _tq_obj.__class__ = _tq_cls\n"
        "    return _tq_obj\n"
    )
    namespace: dict[str, Any] = {"_tq_new": object.__new__, "_tq_twin": twin, "_tq_cls": cls}
    exec(source, namespace)  # the names are the class's own field identifiers
    built: Callable[..., T] = namespace["build"]
    built.__qualname__ = f"build_{cls.__name__}"
    return built
