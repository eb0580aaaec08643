"""Values between Python and the task tables: rows to the core's dataclasses, values to text.

``task`` and ``server`` read, by position, rows selected with the task and server columns of
``statements``. (Datetimes become aware UTC values through ``limits.utc``, and values JSON
text for the jsonb columns through ``limits.json_text``, as on every backend.)
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from taskqueue_core.models import FunctionRef, ServerInfo, Task, TaskState, slot_setters


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_STATES = {state.value: state for state in TaskState}
_FUNCTIONS: dict[tuple[str | None, str | None, str | None], FunctionRef] = {}


def _json(text: str) -> Any:
    # Most tasks carry empty arguments and context: skip the parser for those.
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def _function(
    module: str | None, name: str | None, blob: bytes | None, sig: str | None
) -> FunctionRef:
    """The ``FunctionRef`` of a row; import-path references are shared (they repeat a lot)."""
    if blob is not None:
        return FunctionRef(module, name, blob, sig)
    key = (module, name, sig)
    ref = _FUNCTIONS.get(key)
    if ref is None:
        if len(_FUNCTIONS) > 4096:
            _FUNCTIONS.clear()
        ref = _FUNCTIONS[key] = FunctionRef(module_name=module, function_name=name, signature=sig)
    return ref


_TASK_FIELDS = (
    "id",
    "name",
    "function",
    "state",
    "args",
    "kwargs",
    "context",
    "result",
    "parent_task",
    "pending_parents",
    "channel",
    "priority",
    "retry_count",
    "max_retries",
    "timeout",
    "date_enqueued",
    "date_scheduled",
    "date_started",
    "date_done",
    "date_failed",
    "date_cancelled",
    "date_stopped",
    "date_ended",
    "execution_time",
    "claimed_by",
    "exception_name",
    "exception_message",
    "exception_info",
)
"""``Task``'s fields, in the order of the columns they come from: from ``parent_task`` on,
field ``i`` is column ``i + 3`` (the function takes four columns)."""

_TASK_SETTERS = slot_setters(Task, _TASK_FIELDS)


def task(r: asyncpg.Record) -> Task:
    """A ``Task`` from a row of ``_TASK_COLUMNS`` (by position: the hot path reads many).

    Built through ``Task``'s slots (``models.slot_setters``), which takes 4.5 us a task
    against 7 us through its ``__init__``; through the ``__init__``, by field name, if
    ``Task`` changed shape."""
    values = (
        r[0],
        r[1],
        _function(r[2], r[3], r[4], r[5]),
        _STATES[r[6]],
        _json(r[7]),
        _json(r[8]),
        _json(r[9]),
        None if r[10] is None else json.loads(r[10]),
        *r[11:31],
    )
    if _TASK_SETTERS is None:
        return Task(**dict(zip(_TASK_FIELDS, values, strict=True)))
    built: Task = object.__new__(Task)
    for setter, value in zip(_TASK_SETTERS, values, strict=True):
        setter(built, value)
    return built


def server(r: asyncpg.Record) -> ServerInfo:
    return ServerInfo(
        server_name=r[0],
        hostname=r[1],
        pid=r[2],
        max_workers=r[3],
        active_workers=r[4],
        idle_workers=r[5],
        is_running=r[6],
        last_heartbeat=r[7],
        started_at=r[8],
        version=r[9],
    )
