"""Live task context: a JSON dict per running task, readable and writable from the task's code.

Inside a running task (coroutine or plain function run in a thread)::

    set_context("progress.done", 40)            # {"progress": {"done": 40}}
    get_context("progress.done", 0)             # 40
    get_full_context()                          # a copy of the whole dict
    save_context()                              # write now (await it to wait for the write)
    current_task_id()                           # the running task's id

The context lives in a ``contextvars.ContextVar``, so it follows the task into the threads
the worker runs plain functions in (the worker copies the context into the thread), and two
tasks running side by side never see each other's context.

Commits are coalesced: ``set_context`` only changes the dict in memory and marks it dirty;
the worker's writer saves every dirty context in one ``update_contexts`` call at most every
~0.2 s, and the final context rides in the task's outcome when it ends. A thousand
``set_context`` calls in a tight loop therefore make a handful of writes, and the stored value
is always the last one. ``auto_commit=False`` changes the dict without marking it dirty: the
change is saved by the next ``save_context()``, by a later auto-committed change (the whole
dict is written), or at the end of the task.

Outside a task ``get_context`` returns its default, ``get_full_context`` returns ``{}`` and
``current_task_id`` returns None, so helpers shared with non-task code can read safely;
``set_context`` and ``save_context`` raise ``NoTaskContext``, because a value set there could
never be stored.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Awaitable, Generator
from typing import Any, Protocol

from taskqueue_core.arguments import plain_scalar
from taskqueue_core.exceptions import ArgumentNotSerializable, TaskQueueError
from taskqueue_core.limits import json_text
from taskqueue_core.models import NewLogRecord

__all__ = [
    "ContextWriter",
    "NoTaskContext",
    "TaskContext",
    "copy_json",
    "current_context",
    "current_task_id",
    "get_context",
    "get_full_context",
    "save_context",
    "set_context",
]


class NoTaskContext(TaskQueueError, RuntimeError):
    """set_context() and save_context() work only inside a running task."""


class ContextWriter(Protocol):
    """Where a running task's context changes and log lines go (the worker's batched writer)."""

    def commit_soon(self) -> None:
        """Ask for the dirty contexts to be written without waiting for the next period.

        Safe to call from any thread."""
        ...

    def flush(self) -> Awaitable[None]:
        """Wait until everything buffered when called is written (event loop thread only)."""
        ...

    def add_log(self, record: NewLogRecord) -> None:
        """Buffer a log line of a task; never blocks. Safe to call from any thread."""
        ...


class TaskContext:
    """The context of one running task: its data, a dirty flag, and where it is written.

    Thread-safe: a plain function in a worker thread and the worker's writer in the event
    loop may touch it at the same time, so every access to ``data`` holds ``lock``.
    ``version`` counts changes (0: unchanged since the task started); ``dirty`` says an
    auto-committed change is not yet written. After ``close`` changes are refused.
    """

    __slots__ = ("closed", "data", "dirty", "lock", "task_id", "version", "writer")

    def __init__(self, task_id: int, data: dict[str, Any], writer: ContextWriter) -> None:
        self.task_id = task_id
        self.data = data
        self.writer = writer
        self.lock = threading.Lock()
        self.dirty = False
        self.version = 0
        self.closed = False

    def set(self, path: str, value: Any, *, auto_commit: bool) -> None:
        """Store ``value`` (already a JSON copy) at the dot ``path``, creating nested dicts.

        A non-dict value on the way is replaced by a dict: the last write wins.
        """
        keys = _split(path)
        with self.lock:
            if self.closed:
                raise NoTaskContext(
                    f"task {self.task_id} has ended; set_context({path!r}) can no longer be saved"
                )
            node = self.data
            for key in keys[:-1]:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
            node[keys[-1]] = value
            self.version += 1
            if auto_commit:
                self.dirty = True

    def get(self, path: str, default: Any) -> Any:
        """The value at the dot ``path`` (a copy, for dicts and lists), or ``default``."""
        keys = _split(path)
        with self.lock:
            node: Any = self.data
            for key in keys:
                if not isinstance(node, dict) or key not in node:
                    return default
                node = node[key]
            return copy_json(node)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the data; clears ``dirty`` (the caller is about to write it)."""
        with self.lock:
            self.dirty = False
            return copy_json(self.data)  # type: ignore[no-any-return]

    def request_commit(self) -> None:
        """Mark the context dirty (even if unchanged) and wake the writer."""
        with self.lock:
            if self.closed:
                raise NoTaskContext(f"task {self.task_id} has ended; its context is already saved")
            self.dirty = True
        self.writer.commit_soon()

    def close(self, *, copy: bool = True) -> dict[str, Any] | None:
        """End the task's context; return its final data if it ever changed, else None.

        Once closed, nothing here changes ``data`` again, so with ``copy=False`` it is returned
        itself: for a caller that knows no one else holds it (the worker, unless a hook was
        given the live context)."""
        with self.lock:
            self.closed = True
            self.dirty = False
            if not self.version:
                return None
            return copy_json(self.data) if copy else self.data


class SaveRequest:
    """What ``save_context()`` returns: the write is already scheduled; awaiting this (in the
    event loop) waits until it is done. Leaving it un-awaited is fine."""

    __slots__ = ("_writer",)

    def __init__(self, writer: ContextWriter) -> None:
        self._writer = writer

    def __await__(self) -> Generator[Any, None, None]:
        return self._writer.flush().__await__()


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "taskqueue_task_context", default=None
)


def current_context() -> TaskContext | None:
    """The running task's ``TaskContext``, or None outside a task."""
    return _current.get()


def activate(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    """Make ``context`` the current one (used by the worker inside each task's own context)."""
    return _current.set(context)


def current_task_id() -> int | None:
    """The id of the running task, or None outside a task."""
    ctx = _current.get()
    return None if ctx is None else ctx.task_id


def set_context(path: str, value: Any, auto_commit: bool = True) -> None:
    """Set the context value at the dot ``path`` (``"a.b"`` -> ``{"a": {"b": value}}``).

    ``value`` must be JSON (dicts, lists, str, int, float, bool, None); it is copied, so
    changing the caller's object afterwards does not change the context. With
    ``auto_commit`` the change is written within ~0.2 s (coalesced with other changes);
    without, it is written by ``save_context()`` or when the task ends.

    Raises ``NoTaskContext`` outside a task, ``ArgumentNotSerializable`` when ``value`` is
    not JSON, and ``ValueError`` for an empty path or an empty path segment.
    """
    ctx = _current.get()
    if ctx is None:
        raise NoTaskContext(
            f"set_context({path!r}) was called outside a running task; there is no task "
            "context to store it in"
        )
    ctx.set(path, _json_copy(path, value), auto_commit=auto_commit)


def get_context(path: str, default: Any = None) -> Any:
    """The context value at the dot ``path``, or ``default`` if absent or outside a task.

    Dicts and lists are returned as copies: change them with ``set_context``."""
    ctx = _current.get()
    if ctx is None:
        _split(path)
        return default
    return ctx.get(path, default)


def get_full_context() -> dict[str, Any]:
    """A copy of the running task's whole context (``{}`` outside a task)."""
    ctx = _current.get()
    if ctx is None:
        return {}
    with ctx.lock:
        return copy_json(ctx.data)  # type: ignore[no-any-return]


def save_context() -> SaveRequest:
    """Write the running task's context now, including ``auto_commit=False`` changes.

    The write is scheduled at once; ``await save_context()`` (in a coroutine task) also
    waits until it is stored. From a plain function running in a thread, call it without
    awaiting. Raises ``NoTaskContext`` outside a task.
    """
    ctx = _current.get()
    if ctx is None:
        raise NoTaskContext("save_context() was called outside a running task")
    ctx.request_commit()
    return SaveRequest(ctx.writer)


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (faster than ``copy.deepcopy`` for plain data)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def _json_copy(path: str, value: Any) -> Any:
    # Plain scalars (the common case: progress counters, step names) are stored as they are.
    if plain_scalar(value):
        return value
    if type(value) is float:
        raise ArgumentNotSerializable(
            f"set_context({path!r}): {value!r} is not a JSON number (NaN and infinities are not)"
        )
    # Refused here, not when the worker writes the context: what json_text refuses, every
    # repository refuses (not JSON, a NUL character, which jsonb cannot hold, too deep).
    return json.loads(json_text(value, f"set_context({path!r}): the value"))


def _split(path: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise ValueError(f"a context path must be a non-empty string, got {path!r}")
    keys = path.split(".")
    if "" in keys:
        raise ValueError(f"context path {path!r} has an empty segment")
    if "\x00" in path:
        raise ValueError(f"context path {path!r} contains a NUL character")
    return keys
