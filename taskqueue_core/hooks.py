"""Task lifecycle hooks: functions called around the creation and the run of every task.

Four moments, each with the arguments its hooks receive:

- ``pre_create(task: NewTask)``: before the task is written. The hook may update
  ``task.context`` in place (``task.context.update({...})``); the other fields are frozen.
  Hooks of a task added with ``add_task`` run in a copy of the caller's ``contextvars``
  taken when ``add_task`` was called, so they see the request's context even though the
  write happens a moment later in the background.
- ``post_create(task: NewTask, task_id: int)``: after the task is written; ``task_id`` is its
  new id. With ``enqueue(..., transaction=...)`` this runs once the row is written in the
  caller's transaction, before the caller commits.
- ``pre_run(task: Task)``: in the worker, before the task's function is called, in the
  context the function will run in.
- ``post_run(task: Task, result, error)``: in the worker, after the function returned
  (``result``) or raised (``error``, the exception), whether it succeeded or not.

Hooks may be plain functions or coroutine functions; a plain function runs inline in the
event loop, so it should be quick. Hooks of one moment run one after the other, in the order
they were registered. A hook that raises is logged (with its traceback, through loguru) and
the remaining hooks still run: a broken hook never loses or fails the task.

The module-level decorators register in ``default_hooks``, the registry every ``TaskQueue``
uses unless it is given its own; registration happens when the decorated module is imported
(workers import the modules listed in ``QUEUE_IMPORTS``)::

    @on_pre_create
    async def capture_workspace(task: NewTask) -> None:
        task.context.update({"workspace_id": current_workspace_id.get()})
"""

from __future__ import annotations

import enum
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from loguru import logger

from taskqueue_core.attempt import error_text
from taskqueue_core.models import NewTask, Task

__all__ = [
    "Hook",
    "HookRegistry",
    "Moment",
    "default_hooks",
    "on_post_create",
    "on_post_run",
    "on_pre_create",
    "on_pre_run",
]

Hook = Callable[..., Any]
"""A hook: a function or coroutine function taking the arguments of its moment."""

H = TypeVar("H", bound=Hook)


class Moment(enum.StrEnum):
    """When a hook is called."""

    PRE_CREATE = "pre_create"
    POST_CREATE = "post_create"
    PRE_RUN = "pre_run"
    POST_RUN = "post_run"


class HookRegistry:
    """The hooks of each moment, in registration order.

    Registration is thread-safe (modules may be imported from worker threads); running
    takes a snapshot, so a hook registered while others run is used from the next run on.
    """

    def __init__(self) -> None:
        self._hooks: dict[Moment, tuple[Hook, ...]] = {moment: () for moment in Moment}
        self._lock = threading.Lock()

    # -- registration --------------------------------------------------------------------

    def register(self, moment: Moment | str, hook: H) -> H:
        """Add ``hook`` to ``moment`` and return it unchanged (so it can decorate).

        Registering the same function twice for a moment keeps one registration (importing a
        module twice does not double its hooks). Raises ``ValueError`` for an unknown moment
        and ``TypeError`` when ``hook`` is not callable.
        """
        key = _moment(moment)
        if not callable(hook):
            raise TypeError(f"a {key.value} hook must be callable, got {hook!r}")
        with self._lock:
            if hook not in self._hooks[key]:
                self._hooks[key] = (*self._hooks[key], hook)
        return hook

    def unregister(self, moment: Moment | str, hook: Hook) -> bool:
        """Remove ``hook`` from ``moment``; return False if it was not registered."""
        key = _moment(moment)
        with self._lock:
            current = self._hooks[key]
            if hook not in current:
                return False
            self._hooks[key] = tuple(h for h in current if h != hook)
            return True

    def hooks(self, moment: Moment | str) -> tuple[Hook, ...]:
        """The hooks of ``moment``, in the order they run."""
        return self._hooks[_moment(moment)]

    def has(self, moment: Moment | str) -> bool:
        """True when at least one hook is registered for ``moment``."""
        return bool(self._hooks[_moment(moment)])

    def clear(self) -> None:
        """Remove every hook of every moment."""
        with self._lock:
            self._hooks = {moment: () for moment in Moment}

    def on_pre_create(self, hook: H) -> H:
        """Decorator: register ``hook`` for ``pre_create`` in this registry."""
        return self.register(Moment.PRE_CREATE, hook)

    def on_post_create(self, hook: H) -> H:
        """Decorator: register ``hook`` for ``post_create`` in this registry."""
        return self.register(Moment.POST_CREATE, hook)

    def on_pre_run(self, hook: H) -> H:
        """Decorator: register ``hook`` for ``pre_run`` in this registry."""
        return self.register(Moment.PRE_RUN, hook)

    def on_post_run(self, hook: H) -> H:
        """Decorator: register ``hook`` for ``post_run`` in this registry."""
        return self.register(Moment.POST_RUN, hook)

    # -- running -------------------------------------------------------------------------

    async def run(self, moment: Moment | str, *args: Any) -> int:
        """Call every hook of ``moment`` with ``args``, in order; return how many raised.

        Never raises for a hook's error (it is logged with its traceback). Cancellation of
        the calling task is not swallowed.
        """
        key = _moment(moment)
        failures = 0
        for hook in self._hooks[key]:
            try:
                outcome = hook(*args)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                failures += 1
                logger.opt(exception=exc).error(
                    "taskqueue {} hook {} raised {}: {} (the task goes on)",
                    key.value,
                    _hook_name(hook),
                    type(exc).__name__,
                    error_text(exc),
                )
        return failures

    async def run_pre_create(self, task: NewTask) -> None:
        """Run the ``pre_create`` hooks on ``task``; never raises."""
        await self.run(Moment.PRE_CREATE, task)

    async def run_post_create(self, task: NewTask, task_id: int) -> None:
        """Run the ``post_create`` hooks for ``task``, now stored as ``task_id``; never raises."""
        await self.run(Moment.POST_CREATE, task, task_id)

    async def run_pre_run(self, task: Task) -> None:
        """Run the ``pre_run`` hooks before ``task`` executes; never raises."""
        await self.run(Moment.PRE_RUN, task)

    async def run_post_run(
        self, task: Task, result: Any = None, error: BaseException | None = None
    ) -> None:
        """Run the ``post_run`` hooks after ``task`` executed; never raises.

        Hooks are called positionally as ``hook(task, result, error)``, which matches the
        usual ``def hook(task, result=None, error=None)``.
        """
        await self.run(Moment.POST_RUN, task, result, error)

    def __repr__(self) -> str:
        counts = ", ".join(f"{m.value}={len(h)}" for m, h in self._hooks.items())
        return f"<HookRegistry {counts}>"


def _moment(moment: Moment | str) -> Moment:
    try:
        return Moment(moment)
    except ValueError:
        names = ", ".join(m.value for m in Moment)
        raise ValueError(f"unknown hook moment {moment!r}; expected one of {names}") from None


def _hook_name(hook: Hook) -> str:
    module = getattr(hook, "__module__", None)
    qualname = getattr(hook, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(hook)


default_hooks = HookRegistry()
"""The registry the module-level decorators fill, and every ``TaskQueue`` uses by default."""


def on_pre_create(hook: H) -> H:
    """Register ``hook(task: NewTask)`` to run before each task is written (``default_hooks``)."""
    return default_hooks.register(Moment.PRE_CREATE, hook)


def on_post_create(hook: H) -> H:
    """Register ``hook(task: NewTask, task_id: int)`` to run after each task is written."""
    return default_hooks.register(Moment.POST_CREATE, hook)


def on_pre_run(hook: H) -> H:
    """Register ``hook(task: Task)`` to run in the worker before each task executes."""
    return default_hooks.register(Moment.PRE_RUN, hook)


def on_post_run(hook: H) -> H:
    """Register ``hook(task: Task, result, error)`` to run in the worker after each task."""
    return default_hooks.register(Moment.POST_RUN, hook)
