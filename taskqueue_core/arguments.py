"""Task arguments and context as stored JSON: copied to plain JSON types, or refused by name.

``to_json`` is what ``add_task``/``enqueue`` run on every argument: it returns a copy made of
``str``, ``int``, ``float``, ``bool``, ``None``, ``list`` and ``dict`` with ``str`` keys, and
raises ``ArgumentNotSerializable`` naming the argument, the path inside it and the offending
type otherwise. It also refuses what a JSON column cannot hold although Python's ``json``
writes it (``taskqueue_core.limits``): a NUL character in a string or a key, an int too long
to write. Copying (rather than checking) also snapshots the arguments: changing a list
after ``add_task`` returned does not change the task written a moment later.

``clean_context`` does the same for the context a ``pre_create`` hook filled, but drops (and
logs) a value it cannot store instead of refusing the task: the caller did nothing wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from loguru import logger

from taskqueue_core.exceptions import ArgumentNotSerializable
from taskqueue_core.limits import JSON_INT_DIGITS_MAX, SHORT_INT_BITS
from taskqueue_core.models import NewTask

__all__ = [
    "clean_context",
    "plain_scalar",
    "to_json",
    "to_json_args",
    "to_json_kwargs",
    "type_name",
]

_JSON_HINT = "use str, int, float, bool, None, and lists and dicts of them with str keys"


def type_name(value: Any) -> str:
    """The name of ``value``'s type for messages: ``int``, ``datetime.datetime``."""
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def to_json(value: Any, label: str, argument: int | str) -> Any:
    """A copy of ``value`` as plain JSON types.

    ``label`` names the task function and ``argument`` the argument (a position or a
    keyword) in the message. Raises ``ArgumentNotSerializable``.
    """
    try:
        return _walk(value)
    except _NotJson as exc:
        name = _argument_name(argument)
        where = f"{name} at {''.join(exc.path)}" if exc.path else name
        raise ArgumentNotSerializable(f"{label}: {where} {exc.problem}; {_JSON_HINT}") from None
    except RecursionError:
        raise ArgumentNotSerializable(
            f"{label}: {_argument_name(argument)} is nested too deeply (or contains itself)"
        ) from None


def to_json_args(values: Iterable[Any], label: str) -> list[Any]:
    """``[to_json(value, label, i) for i, value in enumerate(values)]``.

    Plain scalars (most arguments: ``str``, ``int``, ``float``, ``bool``, ``None``) are
    checked in place here, without a call per value. Raises ``ArgumentNotSerializable``.
    """
    out = list(values)
    for index, value in enumerate(out):
        if not plain_scalar(value):
            out[index] = to_json(value, label, index)
    return out


def to_json_kwargs(values: Mapping[Any, Any], label: str) -> dict[str, Any]:
    """``values`` (keyword arguments) copied as ``to_json`` does each value.

    Raises ``ArgumentNotSerializable``, also for a keyword name that is not a string or
    contains a NUL character.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if type(key) is not str:
            raise ArgumentNotSerializable(
                f"{label}: keyword names must be strings, got {type_name(key)} {key!r}"
            )
        if "\x00" in key:
            raise ArgumentNotSerializable(
                f"{label}: keyword name {key!r} contains a NUL character, not storable"
            )
        out[key] = value if plain_scalar(value) else to_json(value, label, key)
    return out


def plain_scalar(value: Any) -> bool:
    """True when ``value`` is stored as it is: a str without NUL, a short int, a finite
    float, a bool or None (exact types: subclasses go through ``_walk``)."""
    cls = type(value)
    if cls is str:
        return "\x00" not in value
    if cls is int:
        return bool(value.bit_length() <= SHORT_INT_BITS)
    if cls is float:
        return math.isfinite(value)
    return value is None or cls is bool


def clean_context(task: NewTask) -> None:
    """Drop context values a pre_create hook set that cannot be stored (the task goes on).

    The values kept are replaced by their plain JSON copies, in place.
    """
    for key in list(task.context):
        value = task.context[key]
        try:
            if type(key) is not str:
                raise _NotJson(f"has a key of type {type_name(key)}")
            if "\x00" in key:
                raise _NotJson("has a key containing a NUL character")
            task.context[key] = _walk(value)
        except (_NotJson, RecursionError) as exc:
            del task.context[key]
            logger.error(
                "taskqueue: dropped context[{!r}] of task {!r}: a pre_create hook set a "
                "value that is not JSON ({})",
                key,
                task.name,
                exc,
            )


def _argument_name(argument: int | str) -> str:
    if isinstance(argument, int):
        return f"positional argument {argument}"
    return f"keyword argument {argument!r}"


class _NotJson(Exception):
    """Raised deep in ``_walk``; each level on the way up prepends its key to ``path``."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.path: list[str] = []
        self.problem = problem


def _walk(value: Any) -> Any:
    cls = type(value)
    if value is None or cls is bool:
        return value
    if cls is int:
        return _walk_int(value)
    if cls is str:
        if "\x00" in value:
            raise _NotJson("is a string containing a NUL character, which is not storable")
        return value
    if cls is float:
        if not math.isfinite(value):
            raise _NotJson(f"is {value!r}, which is not JSON")
        return value
    if cls is list or cls is tuple:
        return _walk_list(value)
    if cls is dict:
        return _walk_dict(value)
    # Subclasses (enums, OrderedDict, NamedTuple, ...) are stored as their JSON base value.
    # (bool cannot be subclassed: `cls is bool` above caught every bool.)
    if isinstance(value, list | tuple):
        return _walk_list(value)
    if isinstance(value, dict):
        return _walk_dict(value)
    if isinstance(value, int):
        return _walk_int(int.__index__(value))
    if isinstance(value, str):
        return _walk(str.__str__(value))
    if isinstance(value, float):
        return _walk(float.__float__(value))
    raise _NotJson(f"is of type {type_name(value)}, which is not JSON")


def _walk_int(value: int) -> int:
    if value.bit_length() > SHORT_INT_BITS:
        try:
            digits = len(str(abs(value)))
        except ValueError:
            raise _NotJson("is an int too long to write as JSON") from None
        if digits > JSON_INT_DIGITS_MAX:
            raise _NotJson(f"is an int of more than {JSON_INT_DIGITS_MAX} digits")
    return value


def _walk_list(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    index = 0
    try:
        for index, item in enumerate(value):  # noqa: B007 (the except clause reads it)
            out.append(_walk(item))
    except _NotJson as exc:
        exc.path.insert(0, f"[{index}]")
        raise
    return out


def _walk_dict(value: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        # A bad key is this dict's fault: the path ends here, not at the key.
        if type(key) is not str:
            raise _NotJson(f"has a key {key!r} of type {type_name(key)} (JSON keys are str)")
        if "\x00" in key:
            raise _NotJson(f"has a key {key!r} containing a NUL character, not storable")
        try:
            out[key] = _walk(item)
        except _NotJson as exc:
            exc.path.insert(0, f"[{key!r}]")
            raise
    return out
