"""Values as the SQLite tables store them, and rows back as the core's dataclasses.

JSON columns hold JSON text; datetimes are UTC text of one fixed width, so that comparing
the strings compares the instants (values become JSON text through ``limits.json_text``, as
on every backend); ``distinct_ids`` raises ``TypeError`` for anything but integers.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from taskqueue_core.limits import json_text, utc
from taskqueue_core.models import FunctionRef, Task, TaskState

__all__ = [
    "distinct_ids",
    "dt",
    "dump_result",
    "load",
    "task_from_row",
    "ts",
    "utc_now",
]

_INT64 = (-(2**63), 2**63 - 1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def ts(value: datetime) -> str:
    """A datetime as stored: UTC, fixed width (naive values are taken as UTC)."""
    return utc(value).isoformat(sep=" ", timespec="microseconds")


def dt(value: Any) -> datetime | None:
    """A stored datetime back as an aware UTC datetime (tolerates other ISO spellings)."""
    if value is None:
        return None
    return utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def dump_result(value: Any, what: str) -> str | bytes | None:
    """A result as bound to the ``result`` column.

    The JSON columns have NUMERIC affinity in SQLite: the text ``1.0`` would be stored as
    the integer 1 and a 20-digit integer as a lossy float. A top-level float, or an integer
    outside 64 bits, is therefore bound as a BLOB of the same JSON text, which SQLite keeps
    untouched (``load`` and Tortoise's JSONField both read bytes back as JSON).
    """
    if value is None:
        return None
    text = json_text(value, what)
    if isinstance(value, float) or (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _INT64[0] <= value <= _INT64[1]
    ):
        return text.encode()
    return text


def load(value: Any) -> Any:
    """A JSON column back as a Python value."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value  # a number that NUMERIC affinity stored as one


def distinct_ids(task_ids: Iterable[Any]) -> list[int]:
    """Task ids as distinct ints, in first-seen order; ``TypeError`` for anything else."""
    seen: dict[int, None] = {}
    for raw in task_ids:
        if isinstance(raw, bool):
            raise TypeError(f"task ids must be integers, got {raw!r}")
        try:
            seen[operator.index(raw)] = None
        except TypeError:
            raise TypeError(f"task ids must be integers, got {raw!r}") from None
    return list(seen)


def task_from_row(row: Sequence[Any]) -> Task:
    (
        id_, name, module_name, function_name, serialized, signature, state, args, kwargs,
        context, result, parent_task, pending_parents, channel, priority, retry_count,
        max_retries, timeout, date_enqueued, date_scheduled, date_started, date_done,
        date_failed, date_cancelled, date_stopped, date_ended, execution_time, claimed_by,
        exception_name, exception_message, exception_info,
    ) = row  # fmt: skip
    enqueued = dt(date_enqueued)
    assert enqueued is not None  # NOT NULL column
    return Task(
        id=id_,
        name=name,
        function=FunctionRef(
            module_name=module_name,
            function_name=function_name,
            serialized_function=bytes(serialized) if serialized is not None else None,
            signature=signature,
        ),
        state=TaskState(state),
        args=load(args),
        kwargs=load(kwargs),
        context=load(context),
        result=load(result),
        parent_task=parent_task,
        pending_parents=pending_parents,
        channel=channel,
        priority=priority,
        retry_count=retry_count,
        max_retries=max_retries,
        timeout=timeout,
        date_enqueued=enqueued,
        date_scheduled=dt(date_scheduled),
        date_started=dt(date_started),
        date_done=dt(date_done),
        date_failed=dt(date_failed),
        date_cancelled=dt(date_cancelled),
        date_stopped=dt(date_stopped),
        date_ended=dt(date_ended),
        execution_time=execution_time,
        claimed_by=claimed_by,
        exception_name=exception_name,
        exception_message=exception_message,
        exception_info=exception_info,
    )
