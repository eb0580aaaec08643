"""Formatting shared by the ``taskq`` commands: safe URLs, ages, dates, JSON views of tasks.

Everything here is pure (no I/O), so the commands stay thin and these rules are tested once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from taskqueue_core.limits import utc
from taskqueue_core.models import FunctionRef, LogRecord, ServerInfo, Task

__all__ = [
    "format_age",
    "format_datetime",
    "format_duration",
    "function_label",
    "log_to_dict",
    "plural",
    "safe_url",
    "server_to_dict",
    "task_to_dict",
    "to_json",
]


def plural(count: int, word: str, plural_word: str | None = None) -> str:
    """``1 task``, ``2 tasks`` (``plural_word`` for irregular plurals)."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {plural_word or word + 's'}"


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print and log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def format_duration(seconds: float) -> str:
    """A short human duration: ``850ms``, ``12s``, ``3m 05s``, ``2h 10m``, ``4d 3h``."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def format_age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, as ``3s ago``; ``never`` when it is None."""
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    return f"{format_duration((now - moment).total_seconds())} ago"


def format_datetime(moment: datetime | None) -> str:
    """``moment`` in UTC as ``2024-05-01 12:00:03Z``; empty when None."""
    if moment is None:
        return ""
    return utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return utc(moment).isoformat()


def function_label(function: FunctionRef) -> str:
    """``module:qualname`` of an import-path reference, ``<serialized>`` for a dill blob."""
    if function.module_name and function.function_name:
        return f"{function.module_name}:{function.function_name}"
    return "<serialized>"


def task_to_dict(task: Task) -> dict[str, Any]:
    """Every field of ``task`` as JSON values (dates ISO 8601 UTC, the function described)."""
    return {
        "id": task.id,
        "name": task.name,
        "state": str(task.state),
        "function": {
            "module_name": task.function.module_name,
            "function_name": task.function.function_name,
            "serialized": task.function.serialized_function is not None,
            "signed": task.function.signature is not None,
        },
        "args": task.args,
        "kwargs": task.kwargs,
        "context": task.context,
        "result": task.result,
        "parent_task": task.parent_task,
        "pending_parents": task.pending_parents,
        "channel": task.channel,
        "priority": task.priority,
        "retry_count": task.retry_count,
        "max_retries": task.max_retries,
        "timeout": task.timeout,
        "date_enqueued": _iso(task.date_enqueued),
        "date_scheduled": _iso(task.date_scheduled),
        "date_started": _iso(task.date_started),
        "date_done": _iso(task.date_done),
        "date_failed": _iso(task.date_failed),
        "date_cancelled": _iso(task.date_cancelled),
        "date_stopped": _iso(task.date_stopped),
        "date_ended": _iso(task.date_ended),
        "execution_time": task.execution_time,
        "claimed_by": task.claimed_by,
        "exception_name": task.exception_name,
        "exception_message": task.exception_message,
        "exception_info": task.exception_info,
    }


def log_to_dict(record: LogRecord) -> dict[str, Any]:
    """A log row as JSON values."""
    return {
        "id": record.id,
        "task_id": record.task_id,
        "type": record.type,
        "name": record.name,
        "message": record.message,
        "info": record.info,
        "date_created": _iso(record.date_created),
    }


def server_to_dict(
    server: ServerInfo, *, now: datetime | None = None, stale_after: float | None = None
) -> dict[str, Any]:
    """A server row as JSON values, with ``heartbeat_age`` (seconds) and ``alive``.

    ``alive`` is False when the server is not running or its heartbeat is older than
    ``stale_after`` seconds (when given): the reaper will soon rescue its tasks.
    """
    now = now or datetime.now(UTC)
    age = (
        None
        if server.last_heartbeat is None
        else max(0.0, (now - server.last_heartbeat).total_seconds())
    )
    alive = server.is_running and (stale_after is None or (age is not None and age <= stale_after))
    return {
        "server_name": server.server_name,
        "hostname": server.hostname,
        "pid": server.pid,
        "max_workers": server.max_workers,
        "active_workers": server.active_workers,
        "idle_workers": server.idle_workers,
        "is_running": server.is_running,
        "alive": alive,
        "last_heartbeat": _iso(server.last_heartbeat),
        "heartbeat_age": None if age is None else round(age, 3),
        "started_at": _iso(server.started_at),
        "version": server.version,
    }


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Mapping[str, Any] | list[Any], *, indent: int | None = 2) -> str:
    """``value`` as JSON text (datetimes ISO 8601, bytes hex); keys keep their order."""
    return json.dumps(value, indent=indent, default=_default, ensure_ascii=False)
