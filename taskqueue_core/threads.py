"""ThreadRunner: a worker's plain (non-async) task functions, run in threads.

A plain function runs in a thread pool (``loop.run_in_executor``) inside a copy of the
caller's ``contextvars`` context, so ``set_context``, loggers and whatever the ``pre_run``
hooks set reach it. A thread cannot be interrupted: when the awaiting task is cancelled
(a timeout, an admin's cancel or stop, a shutdown) while the function still runs, the call
is abandoned. Its thread runs on and its late result is discarded; so that such threads
never starve the others, the runner gives its own pool up (new calls go to a fresh pool)
and the old pool's threads end when their functions return. An executor passed in (like
``WorkerPool``'s slot executor) is used as it is and never shut down here: cancelling its
future is how it learns that a call was abandoned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from collections.abc import Callable
from typing import Any

from loguru import logger as _loguru

from taskqueue_core.logging import INTERNAL_KEY

__all__ = ["ThreadCall", "ThreadRunner"]

_log = _loguru.bind(**{INTERNAL_KEY: True})


class ThreadCall:
    """A plain function call made in a worker thread; records whether it is still running."""

    __slots__ = ("args", "finished", "func", "kwargs", "started")

    def __init__(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.started = False
        self.finished = False

    def __call__(self) -> Any:
        self.started = True
        try:
            return self.func(*self.args, **self.kwargs)
        finally:
            self.finished = True


class ThreadRunner:
    """Runs plain functions in threads for one worker (see the module doc).

    ``executor``: an executor to use as it is (never shut down here), or None for a pool of
    the runner's own, as large as the worker's capacity at the time of a call and named
    after ``thread_name_prefix``.
    """

    def __init__(
        self, executor: concurrent.futures.Executor | None, *, thread_name_prefix: str
    ) -> None:
        self._external = executor
        self._own: concurrent.futures.Executor | None = None
        self._own_size = 0
        self._prefix = thread_name_prefix

    async def call(
        self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], capacity: int
    ) -> Any:
        """``func(*args, **kwargs)`` in a thread, in a copy of this context; its result.

        A callable that returns an awaitable (a partial of a coroutine function) has it
        awaited on the loop. Cancelled while the function runs: the call is abandoned."""
        call = ThreadCall(func, args, kwargs)
        future = asyncio.get_running_loop().run_in_executor(
            self._executor(capacity), contextvars.copy_context().run, call
        )
        try:
            result = await future
        except BaseException:
            # Interrupted (timeout, control, shutdown): the thread cannot be, so leave it.
            self._abandon(call)
            raise
        if inspect.isawaitable(result):
            result = await result
        return result

    def shutdown(self) -> None:
        """Let the runner's own pool go (its threads end when their functions return)."""
        if self._own is not None:
            self._own.shutdown(wait=False)
            self._own = None

    def _executor(self, capacity: int) -> concurrent.futures.Executor:
        if self._external is not None:
            return self._external
        if self._own is None or self._own_size < capacity:
            if self._own is not None:
                self._own.shutdown(wait=False)
            self._own = concurrent.futures.ThreadPoolExecutor(
                max_workers=capacity, thread_name_prefix=self._prefix
            )
            self._own_size = capacity
        return self._own

    def _abandon(self, call: ThreadCall) -> None:
        if self._external is not None or not call.started or call.finished:
            return  # not running (never started, or done): nothing is left behind
        _log.warning(
            "taskqueue worker: a plain task function is still running in its thread after its "
            "task ended (timeout or interruption); new calls go to a fresh thread pool"
        )
        self.shutdown()
