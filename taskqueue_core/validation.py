"""Checking a task call before anything is written, and building the ``NewTask`` it becomes.

``Validator.prepare`` is the one gate every creation passes (``add_task``, ``enqueue``, and
``enqueue_many`` through ``prepare_many``): it checks the function (storable, not a coroutine
object, accepts the arguments), the options and the parents, copies the arguments to plain
JSON, and returns the ``NewTask`` (without parents: ``Validator.parents`` gives them, refs
possibly still pending). Anything wrong raises at once, naming the function and what is
wrong: ``FunctionNotSerializable``, ``ArgumentNotSerializable`` or ``InvalidTaskError``. A
prepared task fits the storage columns (``taskqueue_core.limits``), so the background writer
never meets a refusable value.

``check_task_id``, ``check_task_ids`` and ``check_channel`` check the arguments of the other verbs.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from taskqueue_core.arguments import to_json_args, to_json_kwargs, type_name
from taskqueue_core.calls import Parent, TaskCall
from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import (
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
)
from taskqueue_core.models import FunctionRef, NewTask, slot_builder
from taskqueue_core.ref import TaskRef

__all__ = ["Validator", "check_channel", "check_task_id", "check_task_ids"]


class Validator:
    """Prepares task calls; remembers per function what does not change between calls.

    What it remembers of a function (its stored reference when that is an import path, its
    signature, its default name) is kept weakly: it never keeps a function alive. A
    remembered import path is used only while it still leads to the very same function
    (checked at every call through ``sys.modules``, which is cheap), so a module attribute
    replaced since (a monkeypatch) is dumped again, as the codec itself would.
    """

    def __init__(self) -> None:
        self._functions: dict[int, tuple[weakref.ref[Any], _Function]] = {}

    def prepare(self, call: TaskCall, config: QueueConfig, codec: FunctionCodec) -> NewTask:
        """Check ``call`` and build its task (defaults from ``config``, function by ``codec``).

        The task has no parents yet: ``parents(call.parent)`` gives them (checked here).
        Raises ``FunctionNotSerializable``, ``ArgumentNotSerializable`` or
        ``InvalidTaskError``, naming the function and the argument or option at fault.
        """
        return self.prepare_fields(
            call.func,
            call.args,
            call.kwargs,
            call.parent,
            call.name,
            call.channel,
            call.priority,
            call.delay,
            call.eta,
            call.max_retries,
            call.timeout,
            config,
            codec,
        )

    def prepare_fields(
        self,
        func: Callable[..., Any],
        raw_args: Sequence[Any],
        raw_kwargs: Mapping[str, Any],
        parent: Parent,
        name: str | None,
        channel: str,
        priority: int,
        delay: float | timedelta | None,
        eta: datetime | None,
        max_retries: int | None,
        timeout: float | None,
        config: QueueConfig,
        codec: FunctionCodec,
    ) -> NewTask:
        """``prepare`` of the call these fields describe (``add_task`` passes its own
        parameters: no ``TaskCall`` to build per call)."""
        info = self._known(func)
        if info is None:
            _check_callable(func)
            label = getattr(func, "__qualname__", None) or type_name(func)
        else:
            label = info.label
        checked = _check_options(
            name, channel, priority, max_retries, timeout, delay, eta, config, label
        )
        args, kwargs = _arguments(raw_args, raw_kwargs, label)
        if info is not None and info.ref is not None and info.resolves(func):
            ref = info.ref
        else:
            ref = _dump(func, codec)
            info = self._remember(func, label, ref, info)
        return _built(info, ref, checked, name, priority, args, kwargs, parent)

    def prepare_many(
        self, calls: Sequence[Any], config: QueueConfig, codec: FunctionCodec, verb: str
    ) -> list[NewTask]:
        """``prepare`` of each of ``calls``, in order, for the method ``verb``.

        Consecutive calls of one function with the very same option objects share what
        depends on those alone (the function's reference and signature, the checked
        options): each of them is checked for its arguments and parents only. That is
        ``prepare``'s answer too, since nothing replaces a function in its module while this
        loop runs. Raises as ``prepare``, the message starting with ``{verb}: item N: ``
        (N the call's position); ``InvalidTaskError`` for an item that is not a ``TaskCall``.
        """
        tasks: list[NewTask] = []
        run: _Run | None = None
        for position, call in enumerate(calls):
            if not isinstance(call, TaskCall):
                raise InvalidTaskError(
                    f"{verb}: item {position} is a {type(call).__name__}, not a TaskCall"
                )
            try:
                if run is not None and run.covers(call):
                    tasks.append(run.task(call))
                    continue
                tasks.append(self.prepare(call, config, codec))
            except InvalidTaskError as exc:
                raise type(exc)(f"{verb}: item {position}: {exc.message}") from exc
            run = self._run(call, config)
        return tasks

    def _run(self, call: TaskCall, config: QueueConfig) -> _Run | None:
        """What the calls after ``call`` (just prepared) share with it, or None when they
        must each be prepared in full: a function not remembered by import path (a
        closure is dumped at every call, what it captured may change)."""
        info = self._known(call.func)
        if info is None or info.ref is None:
            return None
        options = _check_options(
            call.name,
            call.channel,
            call.priority,
            call.max_retries,
            call.timeout,
            call.delay,
            call.eta,
            config,
            info.label,
        )
        return _Run(call, info, info.ref, options)

    @staticmethod
    def parents(parent: Parent) -> tuple[TaskRef | int, ...]:
        """The parents ``parent=`` names, each once (``prepare`` checked them)."""
        return () if parent is None else _check_parents(parent, "")

    def _known(self, func: Any) -> _Function | None:
        entry = self._functions.get(id(func))
        if entry is not None and entry[0]() is func:
            return entry[1]
        return None

    def _remember(
        self,
        func: Callable[..., Any],
        label: str,
        ref: FunctionRef,
        known: _Function | None,
    ) -> _Function:
        """The ``_Function`` of ``func`` with its new reference, kept for the next calls."""
        info = _Function(func, label, ref, known)
        key = id(func)
        try:
            watch = weakref.ref(func, functools.partial(self._forget, key))
        except TypeError:
            return info  # not weak-referenceable: looked at anew at every call
        self._functions[key] = (watch, info)
        return info

    def _forget(self, key: int, watch: weakref.ref[Any]) -> None:
        # The function is gone. Its id may be reused only after this runs, but a newer
        # entry could have replaced ours in the meantime: drop ours only.
        entry = self._functions.get(key)
        if entry is not None and entry[0] is watch:
            del self._functions[key]


class _Run:
    """The function and options that consecutive calls of ``prepare_many`` share, checked
    once: ``covers`` a call made with the very same objects, and ``task`` builds its task."""

    __slots__ = (
        "channel",
        "checked",
        "delay",
        "eta",
        "func",
        "info",
        "max_retries",
        "name",
        "priority",
        "ref",
        "timeout",
    )

    def __init__(
        self,
        call: TaskCall,
        info: _Function,
        ref: FunctionRef,
        checked: tuple[str, int, float | None, datetime | None],
    ) -> None:
        self.func = call.func
        self.name = call.name
        self.channel = call.channel
        self.priority = call.priority
        self.delay = call.delay
        self.eta = call.eta
        self.max_retries = call.max_retries
        self.timeout = call.timeout
        self.info = info
        self.ref = ref
        self.checked = checked

    def covers(self, call: TaskCall) -> bool:
        """True when ``call`` has the function and options of this run (the same objects)."""
        return (
            call.func is self.func
            and call.name is self.name
            and call.channel is self.channel
            and call.priority is self.priority
            and call.delay is self.delay
            and call.eta is self.eta
            and call.max_retries is self.max_retries
            and call.timeout is self.timeout
        )

    def task(self, call: TaskCall) -> NewTask:
        """``prepare(call)`` for a call this run ``covers``: its arguments and parents are
        checked, the rest is the run's."""
        info = self.info
        args, kwargs = _arguments(call.args, call.kwargs, info.label)
        return _built(
            info, self.ref, self.checked, self.name, self.priority, args, kwargs, call.parent
        )


class _Function:
    """What validation keeps about one task function between calls."""

    __slots__ = (
        "by_keyword",
        "fewest",
        "label",
        "module",
        "most",
        "name",
        "needs_keyword",
        "parts",
        "position",
        "ref",
        "required",
        "signature",
        "var_keyword",
    )

    def __init__(
        self, func: Callable[..., Any], label: str, ref: FunctionRef, known: _Function | None
    ) -> None:
        self.label = label
        # Only an import path is kept: a serialized function (a closure) is dumped at every
        # call, since what it captured may have changed.
        self.ref: FunctionRef | None = ref if ref.module_name is not None else None
        self.module = ref.module_name or ""
        self.parts = tuple((ref.function_name or "").split("."))
        self.name: str
        self.signature: inspect.Signature | None
        self.most: float = math.inf
        self.fewest = 0
        self.needs_keyword = False
        self.by_keyword = False
        self.var_keyword = False
        self.position: dict[str, int] = {}
        self.required: tuple[str, ...] = ()
        if known is not None:
            self.name, self.signature = known.name, known.signature
            self.most, self.fewest = known.most, known.fewest
            self.needs_keyword, self.by_keyword = known.needs_keyword, known.by_keyword
            self.var_keyword = known.var_keyword
            self.position, self.required = known.position, known.required
            return
        self.name = function_name(func).replace("\x00", "")[:NAME_MAX]
        try:
            self.signature = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None  # builtins without a signature: the worker will tell
        if self.signature is not None:
            self._read(self.signature)

    def _read(self, signature: inspect.Signature) -> None:
        """The parameters as ``accepts`` reads them."""
        most, fewest = 0, 0
        position: dict[str, int] = {}
        required: list[str] = []
        var_positional = False
        self.by_keyword = True
        for parameter in signature.parameters.values():
            kind, empty = parameter.kind, parameter.default is parameter.empty
            if kind is parameter.POSITIONAL_ONLY:
                self.by_keyword = False
                most, fewest = most + 1, fewest + empty
            elif kind is parameter.POSITIONAL_OR_KEYWORD:
                position[parameter.name] = most
                most, fewest = most + 1, fewest + empty
                if empty:
                    required.append(parameter.name)
            elif kind is parameter.VAR_POSITIONAL:
                var_positional = True
            elif kind is parameter.KEYWORD_ONLY:
                position[parameter.name] = sys.maxsize  # never filled by position
                if empty:
                    required.append(parameter.name)
                    self.needs_keyword = True
            else:
                self.var_keyword = True
        self.most = math.inf if var_positional else most
        self.fewest = fewest
        self.position = position
        self.required = tuple(required)

    def resolves(self, func: Callable[..., Any]) -> bool:
        """True while the remembered import path still leads to ``func``."""
        target: Any = sys.modules.get(self.module)
        for part in self.parts:
            target = getattr(target, part, None)
        return target is func

    def accepts(self, count: int, kwargs: dict[str, Any]) -> bool:
        """True when ``count`` positional arguments and ``kwargs`` surely bind to the
        parameters; False when ``bind`` must tell (it raises, or finds them fine).

        As ``inspect.Signature.bind``: positional arguments fill the positional parameters
        in order (the rest go to ``*args``); a keyword fills a parameter not filled by
        position, or goes to ``**kwargs``; a parameter without default must be filled.
        With positional-only parameters, a call with keywords is left to ``bind``.
        """
        if count > self.most:
            return False
        if not kwargs:
            return count >= self.fewest and not self.needs_keyword
        if not self.by_keyword:
            return self.signature is None
        position = self.position
        for key in kwargs:
            at = position.get(key)
            if at is None:
                if not self.var_keyword:
                    return False
            elif at < count:
                return False  # given twice
        return all(name in kwargs or position[name] < count for name in self.required)

    def bind(self, label: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Refuse arguments the function cannot accept, now rather than in the worker."""
        signature = self.signature
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


_build_new_task = slot_builder(NewTask)
"""Builds a ``NewTask`` from all its fields, through its twin (``models.slot_builder``): the
largest single cost of a creation was its ``__init__``."""


def _built(
    info: _Function,
    ref: FunctionRef,
    checked: tuple[str, int, float | None, datetime | None],
    name: str | None,
    priority: int,
    args: list[Any],
    kwargs: dict[str, Any],
    parent: Parent,
) -> NewTask:
    """The task of a call whose function (``info``, ``ref``) and options (``checked`` by
    ``_check_options``) passed, with its arguments copied: the arguments are checked against
    the signature, then the parents."""
    label = info.label
    if not info.accepts(len(args), kwargs):
        info.bind(label, args, kwargs)
    channel, max_retries, timeout, scheduled = checked
    # Every field of NewTask, in order: an empty context and no parents.
    task: NewTask = _build_new_task(
        info.name if name is None else name,
        ref,
        args,
        kwargs,
        {},
        (),
        (),
        channel,
        priority,
        max_retries,
        timeout,
        scheduled,
    )
    if parent is not None:
        _check_parents(parent, label)
    return task


def _arguments(
    raw_args: Sequence[Any], raw_kwargs: Mapping[str, Any], label: str
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of a call, checked and copied to plain JSON."""
    if type(raw_args) is not tuple and (
        isinstance(raw_args, str | bytes) or not isinstance(raw_args, Sequence)
    ):
        raise InvalidTaskError(f"{label}: args must be a list or tuple, got {type_name(raw_args)}")
    if type(raw_kwargs) is not dict and not isinstance(raw_kwargs, Mapping):
        raise InvalidTaskError(f"{label}: kwargs must be a dict, got {type_name(raw_kwargs)}")
    args = to_json_args(raw_args, label)
    kwargs = to_json_kwargs(raw_kwargs, label) if raw_kwargs else {}
    return args, kwargs


def _check_callable(func: Any) -> None:
    """Refuse what cannot be a task function (before any other check, naming the mistake)."""
    if isinstance(func, TaskCall):
        raise InvalidTaskError("TaskCall.func is itself a TaskCall; pass the function")
    if inspect.iscoroutine(func):
        func.close()  # it will never run: close it so Python does not warn twice
        raise FunctionNotSerializable(
            "got a coroutine object, not a function: pass the function and its "
            "arguments, e.g. add_task(send_email, to) instead of add_task(send_email(to))"
        )
    if not callable(func):
        raise FunctionNotSerializable(f"the task function must be callable, got {type_name(func)}")


def _dump(func: Callable[..., Any], codec: FunctionCodec) -> FunctionRef:
    """``codec.dump(func)``, refusing an import path longer than its columns."""
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
    return ref


def _bad(label: str, option: str, expected: str, value: Any) -> InvalidTaskError:
    return InvalidTaskError(f"{label}: {option} must be {expected}, got {value!r}")


def _check_options(
    name: str | None,
    channel: str,
    priority: int,
    max_retries: int | None,
    timeout: float | None,
    delay: float | timedelta | None,
    eta: datetime | None,
    config: QueueConfig,
    label: str,
) -> tuple[str, int, float | None, datetime | None]:
    """The checked options: channel, max_retries (the default applied), timeout in seconds,
    date_scheduled. Raises ``InvalidTaskError`` naming the option."""
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise _bad(label, "name", "a non-empty string", name)
        if len(name) > NAME_MAX or "\x00" in name:
            raise _bad(label, "name", f"at most {NAME_MAX} characters, without NUL", name)
    if type(channel) is not str or channel != "default":  # the default needs no look
        check_channel(channel, label)
    if type(priority) is not int:
        raise _bad(label, "priority", "a whole number (higher runs first)", priority)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise _bad(
            label, "priority", f"a whole number from {PRIORITY_MIN} to {PRIORITY_MAX}", priority
        )
    option = "max_retries"
    if max_retries is None:
        option, max_retries = "config.max_retries", config.max_retries
    if type(max_retries) is not int or max_retries < 0:
        raise _bad(label, option, "a whole number, 0 or more", max_retries)
    if max_retries > INT32_MAX:
        raise _bad(label, option, f"a whole number of at most {INT32_MAX}", max_retries)
    seconds: float | None = None
    if timeout is not None:
        seconds = _seconds(timeout)
        if seconds is None or not 0 < seconds < math.inf:
            raise _bad(label, "timeout", "a number of seconds greater than 0", timeout)
    if delay is None and eta is None:
        return channel, max_retries, seconds, None
    if delay is not None and eta is not None:
        raise InvalidTaskError(f"{label}: give delay or eta, not both")
    date_scheduled: datetime
    if delay is not None:
        wait = delay.total_seconds() if isinstance(delay, timedelta) else _seconds(delay)
        if wait is None:
            raise _bad(label, "delay", "a number of seconds or a timedelta", delay)
        if not wait >= 0:  # NaN too
            raise _bad(label, "delay", "0 or more seconds", delay)
        try:
            date_scheduled = datetime.now(UTC) + timedelta(seconds=wait)
        except OverflowError:  # infinity too
            raise _bad(label, "delay", "short enough to end before the year 10000", delay) from None
    else:
        if not isinstance(eta, datetime):
            raise _bad(label, "eta", "a datetime", eta)
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise _bad(label, "eta", "a timezone-aware datetime (e.g. datetime.now(UTC))", eta)
        try:
            date_scheduled = eta.astimezone(UTC)
        except OverflowError:
            raise _bad(label, "eta", "a datetime within the years 1 to 9999 in UTC", eta) from None
    return channel, max_retries, seconds, date_scheduled


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


def _seconds(value: Any) -> float | None:
    """``value`` as a float if it is a number (not a bool), an int too large to be one as
    infinity; None if it is no number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf
