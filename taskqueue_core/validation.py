"""Checking a task call before anything is written, and building the ``NewTask`` it becomes.

``Validator.prepare`` is the one gate every creation passes (``add_task``, ``enqueue``,
``enqueue_many``): it checks the function (storable, not a coroutine object, accepts the
arguments), the options and the parents, copies the arguments to plain JSON, and returns a
``Prepared`` task whose parents may still be pending refs. Anything wrong raises at once,
naming the function and what is wrong: ``FunctionNotSerializable``,
``ArgumentNotSerializable`` or ``InvalidTaskError``. A prepared task fits the storage
columns (``taskqueue_core.limits``), so the background writer never meets a refusable value.

``check_task_id``, ``check_task_ids`` and ``check_channel`` check the arguments of the other verbs.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from taskqueue_core.arguments import to_json, type_name
from taskqueue_core.calls import CallSpec, Parent, TaskCall
from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import (
    ArgumentNotSerializable,
    FunctionNotSerializable,
    InvalidTaskError,
)
from taskqueue_core.functions import FunctionCodec, function_name
from taskqueue_core.limits import (
    CHANNEL_MAX,
    INT32_MAX,
    NAME_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    fits_int32,
)
from taskqueue_core.models import FunctionRef, NewTask
from taskqueue_core.ref import TaskRef

__all__ = ["Prepared", "Validator", "check_channel", "check_task_id", "check_task_ids"]


@dataclass(slots=True)
class Prepared:
    """A validated task, its parents still unresolved (refs may be pending)."""

    task: NewTask
    parents: tuple[TaskRef | int, ...]


class Validator:
    """Prepares task calls; caches per function what does not change between calls.

    The caches (the function's signature, its import-path reference) are weak: they never
    keep a function alive.
    """

    def __init__(self) -> None:
        self._signatures: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature | None]
        self._signatures = weakref.WeakKeyDictionary()
        self._paths: weakref.WeakKeyDictionary[Callable[..., Any], FunctionRef]
        self._paths = weakref.WeakKeyDictionary()

    def prepare(
        self, call: TaskCall | CallSpec, config: QueueConfig, codec: FunctionCodec
    ) -> Prepared:
        """Check ``call`` and build its task (defaults from ``config``, function by ``codec``).

        Raises ``FunctionNotSerializable``, ``ArgumentNotSerializable`` or
        ``InvalidTaskError``, naming the function and the argument or option at fault.
        """
        func = call.func
        if isinstance(func, TaskCall):
            raise InvalidTaskError("TaskCall.func is itself a TaskCall; pass the function")
        if inspect.iscoroutine(func):
            func.close()  # it will never run: close it so Python does not warn twice
            raise FunctionNotSerializable(
                "got a coroutine object, not a function: pass the function and its "
                "arguments, e.g. add_task(send_email, to) instead of add_task(send_email(to))"
            )
        if not callable(func):
            raise FunctionNotSerializable(
                f"the task function must be callable, got {type_name(func)}"
            )
        label = getattr(func, "__qualname__", None) or type_name(func)
        options = _check_options(call, config, label)
        raw_args, raw_kwargs = call.args, call.kwargs
        if type(raw_args) is not tuple and (
            isinstance(raw_args, str | bytes) or not isinstance(raw_args, Sequence)
        ):
            raise InvalidTaskError(
                f"{label}: args must be a list or tuple, got {type_name(raw_args)}"
            )
        if type(raw_kwargs) is not dict and not isinstance(raw_kwargs, Mapping):
            raise InvalidTaskError(f"{label}: kwargs must be a dict, got {type_name(raw_kwargs)}")
        args = [to_json(value, label, i) for i, value in enumerate(raw_args)]
        kwargs: dict[str, Any] = {}
        for key, value in raw_kwargs.items():
            if type(key) is not str:
                raise ArgumentNotSerializable(
                    f"{label}: keyword names must be strings, got {type_name(key)} {key!r}"
                )
            if "\x00" in key:
                raise ArgumentNotSerializable(
                    f"{label}: keyword name {key!r} contains a NUL character, not storable"
                )
            kwargs[key] = to_json(value, label, key)
        ref = self._function_ref(func, codec)
        self._check_binds(func, label, args, kwargs)
        name = call.name
        if name is None:
            name = function_name(func).replace("\x00", "")[:NAME_MAX]
        task = NewTask(
            name=name,
            function=ref,
            args=args,
            kwargs=kwargs,
            context={},
            channel=options.channel,
            priority=options.priority,
            max_retries=options.max_retries,
            timeout=options.timeout,
            date_scheduled=options.date_scheduled,
        )
        return Prepared(task, _check_parents(call.parent, label))

    def _function_ref(self, func: Callable[..., Any], codec: FunctionCodec) -> FunctionRef:
        """``codec.dump(func)``, cached for functions stored by import path.

        A cached path is used only while it still resolves to this very function (checked
        through ``sys.modules``, which is cheap), so a module attribute replaced since — a
        monkeypatch — is dumped again, like the codec itself would.
        """
        try:
            cached = self._paths.get(func)
        except TypeError:
            cached = None  # not weak-referenceable
        if cached is not None and _resolves_to(cached, func):
            return cached
        ref = codec.dump(func)
        if ref.module_name is not None:
            # The path is stored in two varchar columns: a longer one could not be written.
            for part, value in (("module", ref.module_name), ("name", ref.function_name)):
                if value is not None and len(value) > NAME_MAX:
                    raise FunctionNotSerializable(
                        f"{function_name(func)[:80]}...: its {part} is longer than "
                        f"{NAME_MAX} characters ({len(value)}), the most a stored import "
                        "path holds"
                    )
            with contextlib.suppress(TypeError):
                self._paths[func] = ref
        return ref

    def _check_binds(
        self, func: Callable[..., Any], label: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Refuse arguments the function cannot accept, now rather than in the worker."""
        try:
            signature = self._signatures[func]
        except (KeyError, TypeError):
            try:
                signature = inspect.signature(func)
            except (TypeError, ValueError):
                signature = None  # builtins without a signature: the worker will tell
            with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
                self._signatures[func] = signature
        if signature is None:
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            empty = inspect.Parameter.empty
            bare = signature.replace(
                parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
                return_annotation=inspect.Signature.empty,
            )
            raise InvalidTaskError(f"{label}{bare}: {exc}") from None


def check_task_id(value: Any, what: str) -> int:
    """``value`` if it is a task id (an int > 0); else ``TypeError`` naming ``what``."""
    if type(value) is not int or value <= 0:
        raise TypeError(f"{what} must be a task id (an int > 0), got {type_name(value)} {value!r}")
    return value


def check_task_ids(values: Sequence[int]) -> list[int]:
    """``values`` as a list of task ids; ``TypeError`` for anything else."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
        raise TypeError(f"task_ids must be a list of task ids, got {type_name(values)} {values!r}")
    return [check_task_id(v, "every task id") for v in values]


def check_channel(channel: Any, label: str | None = None) -> str:
    """``channel`` if its column holds it (1 to ``CHANNEL_MAX`` characters, no NUL, not blank).

    Raises ``InvalidTaskError``, prefixed with ``label`` when given.
    """
    if (
        not isinstance(channel, str)
        or not channel.strip()
        or len(channel) > CHANNEL_MAX
        or "\x00" in channel
    ):
        prefix = f"{label}: " if label else ""
        raise InvalidTaskError(
            f"{prefix}channel must be a non-empty string of at most {CHANNEL_MAX} "
            f"characters, got {channel!r}"
        )
    return channel


@dataclass(frozen=True, slots=True)
class _Options:
    channel: str
    priority: int
    max_retries: int
    timeout: float | None
    date_scheduled: datetime | None


def _check_options(call: TaskCall | CallSpec, config: QueueConfig, label: str) -> _Options:
    def bad(option: str, expected: str, value: Any) -> InvalidTaskError:
        return InvalidTaskError(f"{label}: {option} must be {expected}, got {value!r}")

    if call.name is not None:
        if not isinstance(call.name, str) or not call.name.strip():
            raise bad("name", "a non-empty string", call.name)
        if len(call.name) > NAME_MAX or "\x00" in call.name:
            raise bad("name", f"at most {NAME_MAX} characters, without NUL", call.name)
    channel = check_channel(call.channel, label)
    priority = call.priority
    if type(priority) is not int:
        raise bad("priority", "a whole number (higher runs first)", priority)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise bad("priority", f"a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}", priority)
    option, max_retries = "max_retries", call.max_retries
    if max_retries is None:
        option, max_retries = "config.max_retries", config.max_retries
    if type(max_retries) is not int or max_retries < 0:
        raise bad(option, "a whole number, 0 or more", max_retries)
    if not fits_int32(max_retries):
        raise bad(option, f"a whole number of at most {INT32_MAX}", max_retries)
    timeout: float | None = None
    if call.timeout is not None:
        timeout = _seconds(call.timeout)
        if timeout is None or not 0 < timeout < math.inf:
            raise bad("timeout", "a number of seconds greater than 0", call.timeout)
    if call.delay is not None and call.eta is not None:
        raise InvalidTaskError(f"{label}: give delay or eta, not both")
    date_scheduled: datetime | None = None
    if call.delay is not None:
        delay = call.delay
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else _seconds(delay)
        if seconds is None:
            raise bad("delay", "a number of seconds or a timedelta", delay)
        if not seconds >= 0:  # NaN too
            raise bad("delay", "0 or more seconds", delay)
        try:
            date_scheduled = datetime.now(UTC) + timedelta(seconds=seconds)
        except OverflowError:  # infinity too
            raise bad("delay", "short enough to end before the year 10000", delay) from None
    elif call.eta is not None:
        if not isinstance(call.eta, datetime):
            raise bad("eta", "a datetime", call.eta)
        if call.eta.tzinfo is None or call.eta.utcoffset() is None:
            raise bad("eta", "a timezone-aware datetime (e.g. datetime.now(UTC))", call.eta)
        try:
            date_scheduled = call.eta.astimezone(UTC)
        except OverflowError:
            raise bad("eta", "a datetime within the years 1 to 9999 in UTC", call.eta) from None
    return _Options(channel, priority, max_retries, timeout, date_scheduled)


def _check_parents(parent: Parent, label: str) -> tuple[TaskRef | int, ...]:
    if parent is None:
        return ()
    items: Sequence[Any] = [parent] if isinstance(parent, TaskRef | int) else parent
    if isinstance(parent, str | bytes) or not isinstance(items, Sequence):
        raise InvalidTaskError(
            f"{label}: parent must be a TaskRef, a task id or a list of them, "
            f"got {type_name(parent)}"
        )
    parents: list[TaskRef | int] = []
    for item in items:
        if isinstance(item, TaskRef) or (type(item) is int and item > 0):
            if item not in parents:
                parents.append(item)
        else:
            raise InvalidTaskError(
                f"{label}: parent must be a TaskRef, a task id (an int > 0) or a list of "
                f"them, got {type_name(item)} {item!r}"
            )
    return tuple(parents)


def _resolves_to(ref: FunctionRef, func: Callable[..., Any]) -> bool:
    target: Any = sys.modules.get(ref.module_name or "")
    for part in (ref.function_name or "").split("."):
        target = getattr(target, part, None)
    return target is func


def _seconds(value: Any) -> float | None:
    """``value`` as a float if it is a number (not a bool), an int too large to be one as
    infinity; None if it is no number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf
