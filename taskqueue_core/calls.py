"""TaskCall: one task to create, as the caller describes it (function, arguments, options).

``TaskQueue.add_task``/``enqueue`` take the function, its arguments and the options as
their own parameters (or one ``TaskCall``); ``enqueue_many`` takes a list of ``TaskCall``.
Nothing in this module checks a value (``check_alone`` only refuses a ``TaskCall`` given
with more): see ``taskqueue_core.validation``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from taskqueue_core.exceptions import InvalidTaskError
from taskqueue_core.ref import TaskRef

__all__ = ["RESERVED_OPTIONS", "Parent", "TaskCall", "check_alone"]

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


@dataclass(slots=True)
class TaskCall:
    """One task to create: the function, its arguments and the creation options.

    Accepted by ``enqueue_many``, and by ``add_task``/``enqueue`` in place of a function (the
    way to pass keyword arguments named like an option, see ``RESERVED_OPTIONS``). Options
    mean the same as ``add_task``'s. The queue reads a call once, when it is given one: a
    call changed afterwards (or given again) describes a new task and changes no task
    already created.
    """

    # Not frozen: a frozen dataclass sets each of its eleven fields through
    # ``object.__setattr__``, which makes building one about five times slower, and a bulk
    # ``enqueue_many`` builds one per task.

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


def check_alone(
    call: TaskCall,
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
) -> None:
    """Refuse a ``TaskCall`` given to ``add_task``/``enqueue`` with arguments or options of
    its own (``InvalidTaskError``): the call carries them all."""
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
