"""Values between Python and the task tables: rows to the core's dataclasses, values to text.

``task`` and ``server`` read, by position, rows selected with the task and server columns of
``statements``. (Datetimes become aware UTC values through ``limits.utc``, and values JSON
text for the jsonb columns through ``limits.json_text``, as on every backend.)
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from taskqueue_core.models import FunctionRef, ServerInfo, Task, TaskState, slot_builder


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


_build_task = slot_builder(Task)
"""Builds a ``Task`` from all its fields, in declaration order, through its twin
(``models.slot_builder``): a quarter of the time its ``__init__`` takes."""


def task(r: asyncpg.Record) -> Task:
    """A ``Task`` from a row of ``_TASK_COLUMNS`` (by position: the hot path reads many).

    ``Task``'s fields follow the columns: the function takes four columns (2 to 5), and from
    ``parent_task`` on, field ``i`` is column ``i + 3``."""
    return _build_task(
        r[0],
        r[1],
        _function(r[2], r[3], r[4], r[5]),
        _STATES[r[6]],
        _json(r[7]),
        _json(r[8]),
        _json(r[9]),
        None if r[10] is None else json.loads(r[10]),
        # By index, not a slice: unpacking a slice of the row costs a tenth of the build.
        r[11],
        r[12],
        r[13],
        r[14],
        r[15],
        r[16],
        r[17],
        r[18],
        r[19],
        r[20],
        r[21],
        r[22],
        r[23],
        r[24],
        r[25],
        r[26],
        r[27],
        r[28],
        r[29],
        r[30],
    )


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
