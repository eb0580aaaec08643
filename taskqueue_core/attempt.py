"""Attempt: one run of a claimed task inside a worker, and the outcome it ends with.

The worker creates an ``Attempt`` when it starts a task and turns the attempt's end (a
result, an exception, an interruption) into the ``Outcome`` it writes. The functions here
are the pure part of that: what a failure, a result that is not JSON or a traceback looks
like in the task's record.
"""

from __future__ import annotations

import asyncio
import enum
import traceback
from collections.abc import Callable
from typing import Any

from taskqueue_core.arguments import plain_scalar
from taskqueue_core.context import TaskContext
from taskqueue_core.exceptions import ArgumentNotSerializable
from taskqueue_core.limits import json_text
from taskqueue_core.models import Outcome, Task, TaskState, slot_builder

__all__ = [
    "Attempt",
    "Interrupt",
    "callable_name",
    "done_outcome",
    "failed",
    "result_problem",
    "trace",
]


class Interrupt(enum.Enum):
    """Why a running attempt was cut short."""

    CONTROL = "control"  # cancelled or stopped by an admin: the state is already final
    SHUTDOWN = "shutdown"  # the worker is stopping: hand the task back
    TIMEOUT = "timeout"  # past its deadline: a failure (TimeoutError)


class Attempt:
    """One task running in a worker.

    ``started`` is the event loop time the attempt started (its timeout counts from there);
    ``hooks`` says whether any ``pre_run`` / ``post_run`` hook was registered when the task
    was claimed; ``job`` is the asyncio task running it; ``interrupt`` and ``timeout`` are
    set once, by whoever interrupts it.
    """

    __slots__ = (
        "context",
        "func",
        "hooks",
        "interrupt",
        "is_async",
        "job",
        "started",
        "task",
        "timeout",
    )

    def __init__(
        self,
        task: Task,
        func: Callable[..., Any],
        is_async: bool,
        context: TaskContext,
        started: float,
        hooks: tuple[bool, bool],
    ) -> None:
        self.task = task
        self.hooks = hooks
        self.func = func
        self.is_async = is_async
        self.context = context
        self.started = started
        self.interrupt: Interrupt | None = None
        self.timeout = 0.0  # the limit that expired, once interrupted for it
        self.job: asyncio.Task[None] | None = None

    def deadline(self, default_timeout: float) -> float:
        """Loop time past which the attempt is interrupted (its own timeout, else the default)."""
        limit = self.task.timeout
        return self.started + (default_timeout if limit is None else limit)


def failed(
    task: Task,
    name: str,
    message: str,
    info: str | None,
    elapsed: float | None = None,
    context: dict[str, Any] | None = None,
) -> Outcome:
    """The outcome of a task that failed for good (no retry)."""
    return Outcome(
        task.id,
        TaskState.FAILED,
        error_name=name,
        error_message=message,
        error_info=info,
        execution_time=elapsed,
        context=context,
    )


_build_outcome = slot_builder(Outcome)


def done_outcome(
    task_id: int, result: Any, elapsed: float, context: dict[str, Any] | None
) -> Outcome:
    """``Outcome(task_id, DONE, result=result, execution_time=elapsed, context=context)``:
    the outcome of nearly every task, so it is built through ``Outcome``'s twin
    (``models.slot_builder``)."""
    return _build_outcome(
        task_id, TaskState.DONE, result, None, None, None, None, True, elapsed, context
    )


def trace(error: BaseException) -> str:
    """The formatted traceback of ``error``, as stored in ``exception_info``."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def error_text(error: BaseException) -> str:
    """``str(error)``, as stored in ``exception_message``; a description of ``error`` when its
    ``__str__`` raises. Never raises: the message is read where a failure is recorded or
    reported, and a task's outcome must not be lost to its exception's own bug."""
    try:
        return str(error)
    except Exception as problem:
        return f"<{type(error).__name__} whose str() raised {type(problem).__name__}>"


def callable_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, for messages."""
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


def result_problem(value: Any, task_id: int) -> str | None:
    """None if ``value`` can be stored as the result of task ``task_id``, else why not: what
    ``limits.json_text``, which the repositories run to write it, says (not JSON, naming the
    type; or holding what no JSON column holds, a NUL character or an int too long to write).
    Plain values are stored as they are and need no look."""
    if plain_scalar(value):
        return None
    what = f"the result of task {task_id}"
    if type(value) is float:
        # (json's own message does not name the value.)
        return f"{what} is not JSON: {value!r} is not a JSON number"
    try:
        json_text(value, what)
    except ArgumentNotSerializable as exc:
        return exc.message
    return None
