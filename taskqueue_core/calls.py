"""TaskCall: one task to create, as the caller describes it (function, arguments, options).

``TaskQueue.add_task``/``enqueue`` take the function, its arguments and the options as
their own parameters; ``enqueue_many`` takes a list of ``TaskCall``. Both end up here, as a
``TaskCall`` or as its lighter twin ``CallSpec``, which is what validation reads. Nothing in
this module checks a value: see ``taskqueue_core.validation``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from taskqueue_core.exceptions import InvalidTaskError
from taskqueue_core.ref import TaskRef

__all__ = ["RESERVED_OPTIONS", "CallSpec", "Parent", "TaskCall", "as_call"]

Parent: TypeAlias = TaskRef | int | Sequence[TaskRef | int] | None
"""What ``parent=`` accepts: a TaskRef, a task id, or a list of them (fan-in), or None."""

RESERVED_OPTIONS = (
    "parent",
    "name",
    "channel",
    "priority",
    "delay",
    "eta",
    "max_retries",
    "timeout",
)
"""Keyword names ``add_task``/``enqueue`` take as options, not as task keyword arguments
(``enqueue`` also reserves ``transaction``). To pass a keyword argument with one of these
names to the task function, use a ``TaskCall``: ``add_task(TaskCall(f, kwargs={"name": x}))``."""


@dataclass(frozen=True, slots=True)
class TaskCall:
    """One task to create: the function, its arguments and the creation options.

    Accepted by ``enqueue_many``, and by ``add_task``/``enqueue`` in place of a function (the
    way to pass keyword arguments named like an option, see ``RESERVED_OPTIONS``). Options
    mean the same as ``add_task``'s.
    """

    func: Callable[..., Any]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    parent: Parent = None
    name: str | None = None
    channel: str = "default"
    priority: int = 0
    delay: float | timedelta | None = None
    eta: datetime | None = None
    max_retries: int | None = None
    timeout: float | None = None


class CallSpec:
    """What validation reads: a ``TaskCall``, or this lighter twin that ``add_task`` builds
    (a frozen dataclass costs microseconds to build, and add_task is called in loops)."""

    __slots__ = (
        "args",
        "channel",
        "delay",
        "eta",
        "func",
        "kwargs",
        "max_retries",
        "name",
        "parent",
        "priority",
        "timeout",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        parent: Parent,
        name: str | None,
        channel: str,
        priority: int,
        delay: float | timedelta | None,
        eta: datetime | None,
        max_retries: int | None,
        timeout: float | None,
    ) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.parent = parent
        self.name = name
        self.channel = channel
        self.priority = priority
        self.delay = delay
        self.eta = eta
        self.max_retries = max_retries
        self.timeout = timeout


def as_call(
    func: Callable[..., Any] | TaskCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Parent,
    name: str | None,
    channel: str,
    priority: int,
    delay: float | timedelta | None,
    eta: datetime | None,
    max_retries: int | None,
    timeout: float | None,
) -> TaskCall | CallSpec:
    """The parameters of ``add_task``/``enqueue`` as one call.

    ``func`` may be a ``TaskCall``, then alone. Raises ``InvalidTaskError`` when a
    ``TaskCall`` comes with arguments or options of its own.
    """
    if isinstance(func, TaskCall):
        given = (
            args
            or kwargs
            or parent is not None
            or name is not None
            or channel != "default"
            or priority != 0
            or delay is not None
            or eta is not None
            or max_retries is not None
            or timeout is not None
        )
        if given:
            raise InvalidTaskError(
                "pass either a TaskCall alone, or a function with its arguments and options"
            )
        return func
    return CallSpec(
        func, args, kwargs, parent, name, channel, priority, delay, eta, max_retries, timeout
    )
