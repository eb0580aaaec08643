"""EndWatcher: wakes the ``wait()`` calls of a queue when their tasks end.

``wait()`` does not poll the row. The queue keeps ONE repository subscription (opened on the
first wait) and a map of task id -> waiting futures; an ``ended`` event for an id wakes its
waiters, which then read the row once. Polling is only a fallback, and only for the ids being
waited on: every ``polling_interval`` while the repository cannot notify other processes or
its subscription is unhealthy, and every ``fallback_polling_interval`` otherwise (a safety
net for a notification lost while the listener reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib

from loguru import logger

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import QueueClosed, UnknownTask
from taskqueue_core.models import Event, Task
from taskqueue_core.repository import Subscription, TaskRepository

__all__ = ["EndWatcher"]


class EndWatcher:
    """Wakes waiters when their tasks end: one subscription, a map of waiters, poll fallback.

    Used by ``TaskRef.wait``; a ``TaskQueue`` owns one. ``wait_ended`` registers its future
    *before* reading the row, so an event arriving between the read and the wait is not lost.
    """

    def __init__(self, repository: TaskRepository, config: QueueConfig) -> None:
        self._repository = repository
        self._config = config
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._subscription: Subscription | None = None
        self._subscribe_lock = asyncio.Lock()
        self._subscribe_failed = False
        self._poller: asyncio.Task[None] | None = None
        self._closed = False
        self.polls = 0
        """How many fallback polls ran (observability, and tests)."""

    @property
    def waiting(self) -> frozenset[int]:
        """The ids currently waited on."""
        return frozenset(self._waiters)

    @property
    def degraded(self) -> bool:
        """True when events may not arrive, so waited ids are polled every polling_interval."""
        sub = self._subscription
        return not self._repository.supports_notify or sub is None or not sub.healthy

    async def wait_ended(self, task_id: int) -> Task:
        """Return the task once it is in a finished state.

        Raises ``UnknownTask`` if there is no such task, ``QueueClosed`` on ``close()``.
        """
        if self._closed:
            raise QueueClosed("the task queue is closed")
        await self._ensure_subscribed()
        while True:
            future = self._register(task_id)
            try:
                tasks = await self._repository.get_tasks([task_id])
                if not tasks:
                    raise UnknownTask(f"no task has id {task_id}")
                if tasks[0].state.is_finished:
                    return tasks[0]
                await future
            finally:
                self._unregister(task_id, future)

    async def close(self) -> None:
        """Stop polling, close the subscription, fail pending waits with ``QueueClosed``."""
        if self._closed:
            return
        self._closed = True
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(QueueClosed("the task queue was closed while waiting"))
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.close()

    # -- internals -----------------------------------------------------------------------

    async def _ensure_subscribed(self) -> None:
        if self._subscription is not None:
            return
        async with self._subscribe_lock:
            if self._subscription is not None or self._closed:
                return
            try:
                self._subscription = await self._repository.subscribe(self._on_event)
            except Exception as exc:
                # Waiting still works, by polling: the poller retries the subscription.
                if not self._subscribe_failed:
                    logger.warning(
                        "taskqueue: cannot subscribe to task events ({}: {}); waiting by "
                        "polling until it works",
                        type(exc).__name__,
                        exc,
                    )
                self._subscribe_failed = True
                return
            if self._subscribe_failed:
                logger.info("taskqueue: subscribed to task events again")
                self._subscribe_failed = False

    def _on_event(self, event: Event) -> None:
        if event.kind != "ended":
            return
        for task_id in event.task_ids:
            self._wake(task_id)

    def _wake(self, task_id: int) -> None:
        for future in self._waiters.get(task_id, ()):
            if not future.done():
                future.set_result(None)

    def _register(self, task_id: int) -> asyncio.Future[None]:
        if self._closed:
            raise QueueClosed("the task queue was closed while waiting")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(future)
        if self._poller is None and not self._closed:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="taskqueue-wait-poller"
            )
            self._poller.add_done_callback(self._poller_done)
        return future

    def _unregister(self, task_id: int, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(task_id)
        if futures is None:
            return
        futures.discard(future)
        if not futures:
            del self._waiters[task_id]

    async def _poll(self) -> None:
        """Poll the waited ids while there are any; exits (and is restarted) when none are."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            if not self._waiters or self._closed:
                # No await between this check and the reset: _register sees None and restarts.
                self._poller = None
                return
            await asyncio.sleep(self._config.polling_interval)
            if not self._waiters:
                continue
            if self._subscription is None:
                await self._ensure_subscribed()
            if not self.degraded and loop.time() - last < self._config.fallback_polling_interval:
                continue
            last = loop.time()
            ids = list(self._waiters)
            try:
                states = await self._repository.get_states(ids)
            except Exception as exc:
                logger.warning(
                    "taskqueue: polling waited tasks failed: {}: {}", type(exc).__name__, exc
                )
                continue
            self.polls += 1
            for task_id in ids:
                state = states.get(task_id)
                # A missing id wakes its waiter too: it reads the row and raises UnknownTask.
                if state is None or state.is_finished:
                    self._wake(task_id)

    def _poller_done(self, task: asyncio.Task[None]) -> None:
        if self._poller is task:
            self._poller = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.opt(exception=exc).error("taskqueue: the wait poller crashed")
            # Waiters would otherwise sleep until an event: wake them to re-read and re-arm.
            for task_id in list(self._waiters):
                self._wake(task_id)
