"""Values between Python and the task tables: rows to the core's dataclasses, values to text.

``task`` and ``server`` read, by position, rows selected with the task and server columns of
``statements``. (Datetimes become aware UTC values through ``limits.utc``, and values JSON
text for the jsonb columns through ``limits.json_text``, as on every backend.)
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from taskqueue_core.models import FunctionRef, ServerInfo, Task, TaskState, slot_twin


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

_TASK_TWIN = slot_twin(Task, _TASK_FIELDS)


def task(r: asyncpg.Record) -> Task:
    """A ``Task`` from a row of ``_TASK_COLUMNS`` (by position: the hot path reads many).

    Built through ``Task``'s twin (``models.slot_twin``), a quarter of the time its
    ``__init__`` takes; through the ``__init__``, by field name, if ``Task`` changed shape."""
    twin = _TASK_TWIN
    if twin is None:
        values = (
            r[0],
            r[1],
            _function(r[2], r[3], r[4], r[5]),
            _STATES[r[6]],
            _json(r[7]),
            _json(r[8]),
            _json(r[9]),
            decode(r[10]),
            *r[11:31],
        )
        return Task(**dict(zip(_TASK_FIELDS, values, strict=True)))
    t: Any = object.__new__(twin)
    t.id = r[0]
    t.name = r[1]
    t.function = _function(r[2], r[3], r[4], r[5])
    t.state = _STATES[r[6]]
    t.args = _json(r[7])
    t.kwargs = _json(r[8])
    t.context = _json(r[9])
    t.result = None if r[10] is None else json.loads(r[10])
    t.parent_task = r[11]
    t.pending_parents = r[12]
    t.channel = r[13]
    t.priority = r[14]
    t.retry_count = r[15]
    t.max_retries = r[16]
    t.timeout = r[17]
    t.date_enqueued = r[18]
    t.date_scheduled = r[19]
    t.date_started = r[20]
    t.date_done = r[21]
    t.date_failed = r[22]
    t.date_cancelled = r[23]
    t.date_stopped = r[24]
    t.date_ended = r[25]
    t.execution_time = r[26]
    t.claimed_by = r[27]
    t.exception_name = r[28]
    t.exception_message = r[29]
    t.exception_info = r[30]
    t.__class__ = Task
    built: Task = t
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
