"""Runnables: the functions a worker runs, loaded and checked once per reference and shape.

A task names its function by a ``FunctionRef`` (an import path, or a signed dill blob) and
calls it with JSON arguments. Before a task starts, the worker needs the function, whether it
is a coroutine function, and the certainty that the arguments fit its parameters. All three
are pure functions of their key, and the same few functions run thousands of times, so each
is worked out once: import-path references by (module, function, signature), signatures by
function, argument shapes by (function, number of positional arguments, keyword names).
Every cache is bounded (cleared when full). Dill blobs are loaded each time: the blob is the
key, and it can be large.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from taskqueue_core.attempt import callable_name, error_text, failed, trace
from taskqueue_core.exceptions import FunctionRefused
from taskqueue_core.functions import FunctionCodec
from taskqueue_core.models import Outcome, Task

__all__ = ["CACHE_SIZE", "Runnables"]

CACHE_SIZE = 1_024
"""Entries each cache holds before it is cleared."""


class Runnables:
    """The functions of tasks, as a worker runs them (see the module doc)."""

    def __init__(self, codec: FunctionCodec) -> None:
        self._codec = codec
        self._loaded: dict[tuple[str, str, str | None], Callable[..., Any]] = {}
        self._signatures: dict[Callable[..., Any], tuple[inspect.Signature | None, bool]] = {}
        self._fitting: set[tuple[Callable[..., Any], int, tuple[str, ...]]] = set()

    def of(self, task: Task) -> tuple[Callable[..., Any], bool] | Outcome:
        """The task's function and whether it is async; or, when the task cannot run (its
        reference is refused or does not load, its arguments do not fit), the outcome that
        fails it at once (no retry would help)."""
        ref = task.function
        key = (ref.module_name or "", ref.function_name or "", ref.signature)
        try:
            found = self._loaded.get(key) if ref.serialized_function is None else None
            if found is None:
                found = self._codec.load(ref)
                if ref.serialized_function is None:
                    if len(self._loaded) >= CACHE_SIZE:
                        self._loaded.clear()
                    self._loaded[key] = found
            func = found
        except FunctionRefused as exc:
            return failed(task, "FunctionRefused", exc.message, None)
        except Exception as exc:
            message = f"the function of task {task.id} could not be loaded: {error_text(exc)}"
            return failed(task, type(exc).__name__, message, trace(exc))
        signature, is_async = self._describe(func)
        shape = (func, len(task.args), tuple(task.kwargs))
        if signature is not None and shape not in self._fitting:
            try:
                signature.bind(*task.args, **task.kwargs)
            except TypeError as exc:
                message = (
                    f"the arguments of task {task.id} do not match "
                    f"{callable_name(func)}{signature}: {exc}"
                )
                return failed(task, "TypeError", message, None)
            if len(self._fitting) >= CACHE_SIZE:
                self._fitting.clear()
            self._fitting.add(shape)
        return func, is_async

    def _describe(self, func: Callable[..., Any]) -> tuple[inspect.Signature | None, bool]:
        """The function's signature (None if it has none) and whether it is async; cached."""
        found = self._signatures.get(func)
        if found is not None:
            return found
        try:
            signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            signature = None
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            type(func).__call__  # objects with an async __call__
        )
        if len(self._signatures) >= CACHE_SIZE:
            self._signatures.clear()
        self._signatures[func] = (signature, is_async)
        return signature, is_async
