"""What the storage columns hold: the limits the backends and the queue check alike.

The table layout (``taskqueue_core/tortoise/models.py``) is public contract, and so are the
sizes of its columns:

- ``name``, ``module_name``, ``function_name``: at most ``NAME_MAX`` (255) characters;
- ``channel``: 1 to ``CHANNEL_MAX`` (64) characters;
- ``signature``: at most ``SIGNATURE_MAX`` (64) characters;
- ``priority``: an int from ``PRIORITY_MIN`` to ``PRIORITY_MAX`` (``integer``, but the claim
  index negates it);
- ``max_retries``: an int from 0 to ``INT32_MAX``;
- JSON values (args, kwargs, context, result, log info): no NUL character in a string or a
  key (PostgreSQL's jsonb refuses it), ints of at most ``JSON_INT_DIGITS_MAX`` digits;
- log rows: ``type`` and ``name`` are cut to ``LOG_TYPE_MAX`` (16) and ``NAME_MAX``, and so
  is a task's error name (``exception_name``) to ``NAME_MAX`` (``storable_name``);
- no text column holds a NUL character either: what a task produces rather than what a
  caller gives (its error, its log lines and their ``extra`` fields) is made storable with
  ``storable_text`` and ``storable_json`` (each NUL becomes U+FFFD) instead of being refused.

A repository refuses a task that breaks one of them with ``InvalidTaskError``
(``ArgumentNotSerializable`` for JSON) before anything is written; ``check_columns`` and
``json_text`` (with ``json_has_nul``) are those checks. ``TaskQueue`` applies the same limits when
``add_task``/``enqueue`` is called (``taskqueue_core.validation``), so a bad value is named at
the call instead of failing a background write a moment later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, overload

from taskqueue_core.exceptions import ArgumentNotSerializable, InvalidTaskError
from taskqueue_core.models import NewTask

__all__ = [
    "CHANNEL_MAX",
    "INT32_MAX",
    "INT32_MIN",
    "JSON_INT_DIGITS_MAX",
    "LOG_TYPE_MAX",
    "NAME_MAX",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "SHORT_INT_BITS",
    "SIGNATURE_MAX",
    "check_columns",
    "check_new_task",
    "fits_int32",
    "json_has_nul",
    "json_text",
    "log_text",
    "storable_json",
    "storable_name",
    "storable_text",
    "task_parents",
    "unique",
    "utc",
]

NAME_MAX = 255
"""Longest task name, module name and function name (``varchar(255)``)."""

CHANNEL_MAX = 64
"""Longest channel name (``varchar(64)``); a channel is never empty."""

SIGNATURE_MAX = 64
"""Longest function signature (``varchar(64)``: an HMAC-SHA256 hex digest)."""

LOG_TYPE_MAX = 16
"""Longest log row ``type`` (``varchar(16)``); log fields are cut, never refused."""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
"""The range of PostgreSQL's ``integer`` (``priority``, ``max_retries``)."""

PRIORITY_MIN = INT32_MIN + 1
PRIORITY_MAX = INT32_MAX
"""The range of ``priority``: one narrower than ``integer`` at the bottom, because the claim
index orders by ``-priority`` and ``-INT32_MIN`` is out of range (PostgreSQL refuses the row)."""

JSON_INT_DIGITS_MAX = 131072
"""Most digits of an int in a JSON value (jsonb stores numbers as ``numeric``). Python itself
refuses to write ints longer than ``sys.get_int_max_str_digits()`` (4300 by default)."""

SHORT_INT_BITS = 3 * 640
"""Ints of at most this many bits (under 640 digits) are written as JSON by any Python, and
fit ``JSON_INT_DIGITS_MAX``: they need no look. (``sys.get_int_max_str_digits()`` is never
below 640.)"""

# A JSON escape of NUL is backslash-u0000 where that backslash is not itself escaped, i.e.
# preceded by an even number (pairs) of backslashes: "\\u0000" in JSON is a backslash
# followed by the text "u0000", which is fine.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def fits_int32(value: object) -> bool:
    """True when ``value`` is an int (not a bool) that a signed 32-bit column holds."""
    return (
        isinstance(value, int) and not isinstance(value, bool) and INT32_MIN <= value <= INT32_MAX
    )


def json_has_nul(text: str) -> bool:
    """True when the JSON text ``text`` (from ``json.dumps``) encodes a NUL character."""
    return "\\u0000" in text and _NUL_ESCAPE.search(text) is not None


def utc(value: datetime) -> datetime:
    """``value`` as a timestamp column holds it: aware, in UTC (a naive value is taken as UTC,
    as asyncpg takes it)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def unique(values: Iterable[int]) -> list[int]:
    """``values`` without repeats, first occurrence kept (a parent counts once)."""
    return list(dict.fromkeys(values))


JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""The encoder of ``json_text`` (compact, no NaN), built once: ``json.dumps`` with options
builds one per call, which costs as much as encoding a small value."""


def json_text(value: Any, what: str) -> str:
    """``value`` as compact JSON text for a JSON column; ``ArgumentNotSerializable`` naming
    ``what`` when it is not JSON (a set, NaN, lists nested deeper than Python's recursion
    limit) or holds a NUL character in a string or a key
    (PostgreSQL's jsonb refuses it, so every backend refuses it alike)."""
    try:
        text = JSON_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentNotSerializable(f"{what} is not JSON-serializable: {exc}") from exc
    except RecursionError:
        raise ArgumentNotSerializable(
            f"{what} is nested too deeply to be written as JSON"
        ) from None
    if json_has_nul(text):
        raise ArgumentNotSerializable(f"{what} contains a NUL character, which cannot be stored")
    return text


@overload
def storable_text(text: str) -> str: ...


@overload
def storable_text(text: None) -> None: ...


def storable_text(text: str | None) -> str | None:
    """``text`` with each NUL character replaced by U+FFFD (the replacement character); None
    stays None.

    For text a task produces, which is stored whatever it holds: the repositories pass a
    task's error (name, message, traceback) and its log lines through it. PostgreSQL refuses
    NUL in ``text`` and in jsonb strings, and a refused write would hold back every other
    outcome and line of the worker behind it."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def storable_name(text: str | None) -> str | None:
    """``storable_text`` cut to ``NAME_MAX``: a task's error name as ``exception_name`` holds
    it (an exception class may have a longer name, and a refused write would hold back every
    other outcome of the worker behind it)."""
    text = storable_text(text)
    return text if text is None else text[:NAME_MAX]


def log_text(value: str, limit: int | None = None) -> str:
    """A field of a log row as it is stored: ``storable_text``, cut to ``limit`` characters
    (``LOG_TYPE_MAX``, ``NAME_MAX``; None for the message)."""
    value = storable_text(str(value))
    return value if limit is None else value[:limit]


def storable_json(value: Any) -> Any:
    """A copy of ``value`` (plain JSON: dicts, lists, scalars) with ``storable_text``
    applied to every string and key."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value


def check_columns(task: NewTask, what: str) -> None:
    """Refuse a task whose fields its columns cannot hold.

    ``what`` names the task in the message (e.g. ``"task 3 ('send')"``). Checks the text
    columns, the function reference's shape and the integer columns; the JSON fields are
    checked where they are encoded (``json_text``).

    Raises ``InvalidTaskError`` naming the field.
    """
    ref = task.function
    for label, value, limit in (
        ("name", task.name, NAME_MAX),
        ("channel", task.channel, CHANNEL_MAX),
        ("module_name", ref.module_name, NAME_MAX),
        ("function_name", ref.function_name, NAME_MAX),
        ("signature", ref.signature, SIGNATURE_MAX),
    ):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise InvalidTaskError(
                f"{what}: {label} must be a string of at most {limit} characters"
            )
    if not task.channel:
        raise InvalidTaskError(f"{what}: channel must not be empty")
    by_path = ref.module_name is not None and ref.function_name is not None
    if by_path == (ref.serialized_function is not None):
        raise InvalidTaskError(
            f"{what}: the function must be either an import path or a serialized blob"
        )
    for label, number, low, high in (
        ("priority", task.priority, PRIORITY_MIN, PRIORITY_MAX),
        ("max_retries", task.max_retries, INT32_MIN, INT32_MAX),
    ):
        if isinstance(number, bool) or not isinstance(number, int):
            raise InvalidTaskError(f"{what}: {label} must be an int, got {number!r}")
        if not low <= number <= high:
            raise InvalidTaskError(f"{what}: {label} is out of range: {number}")
    if task.max_retries < 0:
        raise InvalidTaskError(f"{what}: max_retries must be 0 or more")


def check_new_task(task: NewTask, position: int, what: str) -> tuple[list[int], list[int]]:
    """Refuse task ``position`` of a ``create_tasks`` batch if a repository cannot store it;
    return its parent ids and batch parents, each without repeats (a parent named twice
    counts once).

    ``check_columns``, plus the shape of the other fields: ``args`` a list or tuple,
    ``kwargs`` and ``context`` dicts, ``timeout`` None or a number a float holds, parent ids
    ints, batch parents earlier positions of the same batch. (Whether the parents exist, and
    the JSON values, are checked by the repository as it writes: ``json_text``.)

    Raises ``InvalidTaskError`` naming the task (``what``) and the field.
    """
    check_columns(task, what)
    if not isinstance(task.args, list | tuple):
        raise InvalidTaskError(f"{what}: args must be a list, got {type(task.args).__name__}")
    for label, value in (("kwargs", task.kwargs), ("context", task.context)):
        if not isinstance(value, dict):
            raise InvalidTaskError(f"{what}: {label} must be a dict, got {type(value).__name__}")
    timeout = task.timeout
    if timeout is not None and not _holds_float(timeout):
        raise InvalidTaskError(f"{what}: timeout must be a number, got {timeout!r}")
    return task_parents(task, position, what)


def task_parents(task: NewTask, position: int, what: str) -> tuple[list[int], list[int]]:
    """Task ``position``'s parent ids and batch parents, each without repeats; checked (see
    ``check_new_task``)."""
    parent_ids = unique(task.parent_ids)
    for parent_id in parent_ids:
        if isinstance(parent_id, bool) or not isinstance(parent_id, int):
            raise InvalidTaskError(f"{what}: parent id {parent_id!r} is not an int")
    batch_parents = unique(task.batch_parents)
    for index in batch_parents:
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidTaskError(f"{what}: batch_parents entry {index!r} is not an int")
        if not 0 <= index < position:
            raise InvalidTaskError(
                f"{what}: batch_parents entry {index} is not an earlier position in the same batch"
            )
    return parent_ids, batch_parents


def _holds_float(value: object) -> bool:
    """True for an int or float (not a bool) that a ``float8`` column holds."""
    if type(value) is not float and type(value) is not int:
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True
