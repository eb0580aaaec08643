"""Dual logging: the console through loguru and, inside a task, the ``queued_task_logs`` table.

``getLogger(name)`` (alias ``get_logger``) returns a ``TaskLogger`` with the methods of a
standard library logger (``debug`` ... ``critical``, ``exception``, ``log``; ``%``-style
arguments, ``exc_info=``, ``stacklevel=``, ``extra=``). Every call goes to loguru, so it is
printed by loguru's handlers like any other loguru line. Inside a running task every record,
from a ``TaskLogger`` or from ``loguru.logger`` directly, also becomes a row of
``queued_task_logs``: a ``TaskLogger``'s through a loguru patcher (before any handler runs),
``loguru.logger``'s through a loguru sink installed by this module (once per process). A
``TaskLogger`` line inside a task whose record nothing global would change (no patcher,
``extra``, ``contextualize`` values, modules disabled or enabled by name) is stored
directly, and goes to loguru's handlers only if one takes its level (``_route``). A row has:

- ``type``: ``debug``, ``info``, ``warning``, ``error`` or ``critical`` (loguru's ``TRACE``
  is not stored; ``SUCCESS`` is stored as ``info``);
- ``name``: the ``TaskLogger``'s name, or the module that called ``loguru.logger``;
- ``message``: the formatted message;
- ``info``: the ``extra=`` fields (or loguru ``bind()`` fields) as JSON, plus ``traceback``
  (the formatted exception) for ``exception()`` and ``exc_info=``; None when empty.

The sink never blocks the task and never waits for the database: it appends to the worker's
bounded in-memory buffer (``LogBuffer``), which the worker writes with ``append_logs`` in
batches, and flushes when the task ends (before the task's outcome). If a worker falls so
far behind that the buffer is full, further lines are counted and one warning row reports
how many were dropped.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import Any

from loguru import logger as _loguru

from taskqueue_core.attempt import error_text
from taskqueue_core.context import current_context
from taskqueue_core.limits import storable_json
from taskqueue_core.models import NewLogRecord, slot_builder

__all__ = [
    "INTERNAL_KEY",
    "LogBuffer",
    "TaskLogger",
    "getLogger",
    "get_logger",
    "install_task_sink",
]

LOGGER_KEY = "taskqueue_logger"
"""The loguru ``extra`` key that carries a ``TaskLogger``'s name."""

INTERNAL_KEY = "taskqueue_internal"
"""Records bound with this ``extra`` key are taskqueue's own and are not stored in a task's log."""

_HIDDEN_KEYS = frozenset({LOGGER_KEY, INTERNAL_KEY})

ExcInfo = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)


class LogBuffer:
    """A bounded, thread-safe buffer of task log records, drained in batches by the worker.

    ``add`` never blocks: while ``limit`` records wait, further ones are dropped and counted
    (``drain`` then returns a warning record saying how many). ``on_batch`` is called (from
    the adding thread) each time another ``batch_size`` records are waiting, so the writer
    can start a write before its next periodic flush.
    """

    def __init__(
        self,
        *,
        limit: int = 200_000,
        batch_size: int = 1_000,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        if limit < 1 or batch_size < 1:
            raise ValueError("LogBuffer limit and batch_size must be at least 1")
        self.limit = limit
        self.batch_size = batch_size
        self._on_batch = on_batch
        self._records: deque[NewLogRecord] = deque()
        self._dropped: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: NewLogRecord) -> None:
        """Buffer ``record`` (or count it as dropped when the buffer is full)."""
        records = self._records
        if len(records) >= self.limit:
            with self._lock:
                self._dropped[record.task_id] = self._dropped.get(record.task_id, 0) + 1
            return
        records.append(record)  # deque.append is atomic: no lock on the hot path
        if self._on_batch is not None and len(records) % self.batch_size == 0:
            self._on_batch()

    def drain(self, limit: int) -> list[NewLogRecord]:
        """Remove and return up to ``limit`` records, oldest first, plus drop warnings."""
        records = self._records
        out: list[NewLogRecord] = []
        append = out.append
        popleft = records.popleft
        for _ in range(min(limit, len(records))):
            append(popleft())
        if self._dropped:
            with self._lock:
                dropped, self._dropped = self._dropped, {}
            now = datetime.now(UTC)
            for task_id, count in dropped.items():
                out.append(
                    NewLogRecord(
                        task_id=task_id,
                        type="warning",
                        name="taskqueue",
                        message=f"{count} log lines of this task were dropped: the log buffer "
                        f"was full ({self.limit} lines waiting to be written)",
                        info={"dropped": count},
                        date_created=now,
                    )
                )
        return out


class TaskLogger:
    """A logger with the standard library's call signatures that logs through loguru.

    Inside a task its lines are also stored in ``queued_task_logs`` (see the module doc).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # The patcher stores the line in the task's log as soon as loguru has built its
        # record, before any handler runs; the task sink's filter then lets it pass by.
        named = _loguru.bind(**{LOGGER_KEY: name})
        self._logger = named.patch(_store_task_record)
        # The loggers of the common call (no option: the caller's own frame), built once, as
        # ``opt()`` makes a new logger object on every call: with the storing patcher, and
        # without it, for a line already stored (``_route``).
        self._direct = self._logger.opt(depth=2)
        self._printing = named.opt(depth=2)

    def __repr__(self) -> str:
        return f"<TaskLogger {self.name!r}>"

    # Each method hands its options on as the dict they arrived in: unpacking them into
    # keyword arguments costs the common call (none at all) more than the rest of our part.
    def debug(self, msg: object, *args: object, **options: Any) -> None:
        """Log ``msg % args`` at DEBUG."""
        self._log("DEBUG", msg, args, options)

    def info(self, msg: object, *args: object, **options: Any) -> None:
        """Log ``msg % args`` at INFO."""
        self._log("INFO", msg, args, options)

    def warning(self, msg: object, *args: object, **options: Any) -> None:
        """Log ``msg % args`` at WARNING."""
        self._log("WARNING", msg, args, options)

    warn = warning

    def error(self, msg: object, *args: object, **options: Any) -> None:
        """Log ``msg % args`` at ERROR."""
        self._log("ERROR", msg, args, options)

    def critical(self, msg: object, *args: object, **options: Any) -> None:
        """Log ``msg % args`` at CRITICAL."""
        self._log("CRITICAL", msg, args, options)

    fatal = critical

    def exception(
        self, msg: object, *args: object, exc_info: ExcInfo = True, **options: Any
    ) -> None:
        """Log ``msg % args`` at ERROR with the exception being handled (and its traceback)."""
        self._log("ERROR", msg, args, {**options, "exc_info": exc_info})

    def log(self, level: int | str, msg: object, *args: object, **options: Any) -> None:
        """Log ``msg % args`` at ``level`` (a standard library level number or a level name)."""
        self._log(_level_name(level), msg, args, options)

    def _log(
        self, level: str, msg: object, args: tuple[object, ...], options: dict[str, Any]
    ) -> None:
        if options:
            self._log_with(level, msg, args, **options)
            return
        message = msg if type(msg) is str and not args else _formatted(msg, args)
        ctx = current_context()
        stored = _STORED_LEVELS.get(level)
        if ctx is not None and stored is not None:
            route = _route(stored[0])
            if route is not _THROUGH_LOGURU:
                # Stored here, as the patcher would store it, without loguru's record (its
                # caller's frame, local time, process and thread) or the patcher's reading
                # of it; printed, if a handler takes it, by a logger without the patcher.
                ctx.writer.add_log(
                    _log_record(ctx.task_id, stored[1], self.name, message, None, datetime.now(UTC))
                )
                if route is _STORED_AND_PRINTED:
                    self._printing.log(level, message)
                return
        self._direct.log(level, message)

    def _log_with(
        self,
        level: str,
        msg: object,
        args: tuple[object, ...],
        *,
        exc_info: ExcInfo = None,
        extra: Mapping[str, object] | None = None,
        stack_info: bool = False,
        stacklevel: int = 1,
    ) -> None:
        """``_log`` with options: through loguru, whose patcher stores the line."""
        message = msg if type(msg) is str and not args else _formatted(msg, args)
        if stack_info:
            message = (
                message
                + "\nStack (most recent call last):\n"
                + "".join(traceback.format_stack(_outer_frame(stacklevel + 2)))
            )
        bound = self._logger.bind(**extra) if extra else self._logger
        # depth: skip _log_with, _log and the public method so loguru reports the caller's
        # location.
        bound.opt(depth=stacklevel + 2, exception=_exception(exc_info)).log(level, message)


def _outer_frame(depth: int) -> FrameType:
    """The frame ``depth`` levels above the caller's, or the outermost one when the stack is
    not that deep (the standard library's ``stacklevel`` does the same)."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame.f_back is None:
            break
        frame = frame.f_back
    return frame


def _formatted(msg: object, args: tuple[object, ...]) -> str:
    """``str(msg) % args`` as the standard library formats it (a single mapping argument is
    used by name). Never raises: as with the standard library's logging, a line whose message
    cannot be formatted does not fail the code that logs it (here, the task); the line is
    kept, with its message, its arguments and what went wrong."""
    try:
        message = str(msg)
        if args:
            if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
                return message % args[0]
            return message % args
        return message
    except Exception as exc:
        # (str.__str__: the text itself, even from a subclass whose own __str__ raised.)
        text = str.__str__(msg) if isinstance(msg, str) else _described(msg)
        problem = f"{type(exc).__name__}: {error_text(exc)}"
        if not args:
            return f"{text} (the message could not be made text: {problem})"
        arguments = ", ".join(_described(arg) for arg in args)
        return (
            f"{text} (the message could not be formatted with its arguments ({arguments}): "
            f"{problem})"
        )


_STORED_LEVELS = {
    name: (no, name.lower())
    for name, no in (("DEBUG", 10), ("INFO", 20), ("WARNING", 30), ("ERROR", 40), ("CRITICAL", 50))
}
"""The level names whose lines may be stored without loguru's record (``_route``), with their
number and stored ``type``: the standard ones, whose numbers loguru cannot change. Any other
name (``SUCCESS``, a custom level) goes through loguru."""

# The values of ``logger.contextualize()``, which a stored line must not lose (``_route``).
# Without it (another loguru layout), every line goes through loguru.
_loguru_context: Any
try:
    from loguru._logger import context as _loguru_context
except ImportError:  # pragma: no cover - depends on loguru's layout
    _loguru_context = None

_LOGURU_CORE: Any = getattr(_loguru, "_core", None)
"""loguru's core, which every logger made from ``loguru.logger`` (``bind``, ``opt``) shares:
its handlers, patcher, ``extra`` and activations (read by ``_route``)."""

_handlers_seen: tuple[object, float] = ({}, float("inf"))
"""loguru's last dict of handlers and the lowest level of those not the task sink (loguru
replaces the dict whenever a handler is added or removed, so the dict itself is the key)."""


_THROUGH_LOGURU = 0
_STORED = 1
_STORED_AND_PRINTED = 2


def _route(level_no: int) -> int:
    """How a ``TaskLogger`` line of ``level_no`` (one of ``_STORED_LEVELS``), logged inside a
    task with no option, goes:

    - ``_THROUGH_LOGURU``: something global would change loguru's record (a patcher or
      ``extra`` set by ``logger.configure``, ``logger.contextualize`` values, modules
      disabled or enabled by name), so the line goes through loguru, whose patcher
      stores the record as changed;
    - ``_STORED``: nothing would change it and no handler but the task sink takes that
      level: the line is stored directly, and loguru never sees it;
    - ``_STORED_AND_PRINTED``: nothing would change it and a handler takes it: the line is
      stored directly, then printed through loguru without the storing patcher.

    loguru has no public API for this, so its core is read; anything unexpected there answers
    ``_THROUGH_LOGURU``.
    """
    global _handlers_seen
    core = _LOGURU_CORE
    try:
        if (
            core.patcher is not None
            or core.extra
            or core.activation_list
            or not core.activation_none
            or _loguru_context.get()
        ):
            return _THROUGH_LOGURU
        handlers = core.handlers
        seen, lowest = _handlers_seen
        if handlers is not seen:
            lowest = min(
                (h.levelno for i, h in handlers.items() if i != _sink_id), default=float("inf")
            )
            _handlers_seen = (handlers, lowest)
    except (AttributeError, TypeError):
        return _THROUGH_LOGURU
    return _STORED_AND_PRINTED if level_no >= lowest else _STORED


_loggers: dict[str, TaskLogger] = {}
_loggers_lock = threading.Lock()


def getLogger(name: str | None = None) -> TaskLogger:
    """The ``TaskLogger`` called ``name`` (default ``"taskqueue"``); the same object every time."""
    key = name or "taskqueue"
    found = _loggers.get(key)
    if found is not None:
        return found
    install_task_sink()
    with _loggers_lock:
        return _loggers.setdefault(key, TaskLogger(key))


get_logger = getLogger


_sink_id: int | None = None
_sink_lock = threading.Lock()


def install_task_sink() -> None:
    """Add the loguru sink that stores task log lines. Idempotent; workers call it at start.

    If the application calls ``loguru.logger.remove()`` (without an id) afterwards, the sink
    is removed too; the next worker start or ``getLogger`` call puts it back.
    """
    global _sink_id
    with _sink_lock:
        if _sink_id is not None:
            # loguru has no public "is this handler still there"; without its core we trust
            # our own record.
            handlers = getattr(getattr(_loguru, "_core", None), "handlers", None)
            if handlers is None or _sink_id in handlers:
                return
        _sink_id = _loguru.add(
            _task_sink, level="DEBUG", format=_no_format, filter=_for_sink, catch=True
        )


def _no_format(record: Any) -> str:
    # The sink reads the record itself; an empty format keeps loguru from formatting the
    # message a second time for it.
    return ""


def _for_sink(record: Any) -> bool:
    """The records the task sink stores: ``loguru.logger``'s, inside a task.

    A ``TaskLogger``'s records were stored by its patcher already; the filter runs before
    loguru formats anything for the handler (a traceback included), so every other record
    costs this sink one call."""
    return LOGGER_KEY not in record["extra"] and current_context() is not None


def _task_sink(message: Any) -> None:
    _store(message.record)


def _store_task_record(record: Any) -> None:
    """A ``TaskLogger``'s patcher: store ``record`` when it is logged inside a task.

    Never raises: loguru calls patchers outside its handlers' error catching, so an error
    here would reach the line that logs."""
    if record["level"].no < _DEBUG:
        return  # TRACE is not stored (the sink's level, for loguru.logger's records)
    try:
        _store(record)
    except Exception:
        # What loguru does for a handler with catch=True: report, and go on.
        sys.stderr.write("taskqueue: a task log line could not be stored:\n")
        traceback.print_exc(file=sys.stderr)


def _store(record: Any) -> None:
    """Add ``record`` (a loguru record) to the running task's log; nothing outside a task,
    nor for records of taskqueue's own (``INTERNAL_KEY``)."""
    ctx = current_context()
    if ctx is None:
        return
    extra = record["extra"]
    if INTERNAL_KEY in extra:
        return
    info: dict[str, Any] | None = None
    if len(extra) > (LOGGER_KEY in extra):
        info = _jsonable({k: v for k, v in extra.items() if k not in _HIDDEN_KEYS})
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        if info is None:
            info = {}
        info["traceback"] = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        )
    ctx.writer.add_log(
        _log_record(
            ctx.task_id,
            _type(record["level"].no),
            extra.get(LOGGER_KEY) or record["name"] or "",
            record["message"],
            # The repositories replace NUL in names and messages; in ``extra`` they would
            # refuse the line (jsonb), so it is replaced here.
            None if info is None else storable_json(info),
            # Aware, in the local zone: every repository stores it as UTC.
            record["time"],
        )
    )


_DEBUG = 10
"""The lowest level stored in a task's log."""


_log_record = slot_builder(NewLogRecord)
"""``NewLogRecord(task_id, type, name, message, info, date_created)``, built through its twin
(``models.slot_builder``): a frozen dataclass's ``__init__`` takes four times as long, on
every line."""


def _type(level_no: int) -> str:
    if level_no >= 50:
        return "critical"
    if level_no >= 40:
        return "error"
    if level_no >= 30:
        return "warning"
    if level_no >= 20:
        return "info"
    return "debug"


_LEVEL_NAMES = {50: "CRITICAL", 40: "ERROR", 30: "WARNING", 20: "INFO", 10: "DEBUG", 5: "TRACE"}


def _level_name(level: int | str) -> str:
    if isinstance(level, str):
        return level.upper()
    for number, name in sorted(_LEVEL_NAMES.items(), reverse=True):
        if level >= number:
            return name
    return "TRACE"


def _exception(exc_info: ExcInfo) -> Any:
    if exc_info is None or exc_info is False:
        return None
    if exc_info is True:
        return sys.exc_info() if sys.exc_info()[0] is not None else None
    return exc_info


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as plain JSON; a value that is not JSON is stored as its ``repr``, and one
    that has none (an int too long to write, a ``__repr__`` that raises) as a description."""
    jsonable: dict[str, Any] = _Walk().value(fields, _NESTING_MAX + 1)
    return jsonable


_NESTING_MAX = 50
"""How deep ``_Walk`` looks into the dicts and lists of a value that is not JSON."""

_WALK_MAX = 10_000
"""How many dicts and lists ``_Walk`` opens for one line at most (a value shared many times
over would otherwise be walked once per path to it)."""


class _Walk:
    """One line's walk into the values its ``json.dumps`` refused: each dict and list that
    has something without JSON and without repr inside (an int too long to write) is opened
    to keep what can be kept around it. A value nested deeper than ``_NESTING_MAX``, one that
    holds itself, and any after the first ``_WALK_MAX`` containers, is described whole."""

    def __init__(self) -> None:
        self.left = _WALK_MAX
        self.open: set[int] = set()  # ids of the containers on the current path

    def value(self, value: Any, depth: int) -> Any:
        try:
            return json.loads(json.dumps(value, allow_nan=False, default=_described))
        except (TypeError, ValueError, RecursionError):
            pass
        if (
            depth <= 0
            or self.left <= 0
            or id(value) in self.open
            or not isinstance(value, dict | list | tuple)
        ):
            return _described(value)
        self.left -= 1
        self.open.add(id(value))
        try:
            if isinstance(value, dict):
                return {
                    k if isinstance(k, str) else _described(k): self.value(v, depth - 1)
                    for k, v in value.items()
                }
            return [self.value(v, depth - 1) for v in value]
        finally:
            self.open.discard(id(value))


def _described(value: object) -> str:
    """``repr(value)``, or what ``value`` is when it has no repr: Python refuses to write an
    int of more than ``sys.get_int_max_str_digits()`` digits, and a ``__repr__`` may raise."""
    try:
        return repr(value)
    except Exception:
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits, too long to write>"
        return f"<{type(value).__qualname__} object, whose repr() failed>"
