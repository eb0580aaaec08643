"""The ``WHERE`` clause of ``list_tasks``, built from a ``TaskFilter``."""

from __future__ import annotations

from typing import Any

from taskqueue_core.limits import utc
from taskqueue_core.models import TaskFilter, TaskState


def filter_sql(filter: TaskFilter) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or "") and its arguments for ``list_tasks``."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filter.states is not None:
        clauses.append(f"state = ANY({arg([TaskState(s).value for s in filter.states])}::text[])")
    if filter.name is not None:
        pattern = filter.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"name ILIKE {arg('%' + pattern + '%')}")
    if filter.channel is not None:
        clauses.append(f"channel = {arg(filter.channel)}")
    if filter.parent_task is not None:
        clauses.append(f"parent_task = {arg(filter.parent_task)}")
    if filter.enqueued_after is not None:
        clauses.append(f"date_enqueued >= {arg(utc(filter.enqueued_after))}")
    if filter.enqueued_before is not None:
        clauses.append(f"date_enqueued < {arg(utc(filter.enqueued_before))}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
