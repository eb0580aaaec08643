"""TaskRef, the handle ``add_task`` returns, and the watcher that wakes its ``wait()``.

A ``TaskRef`` may exist before its task does: ``add_task`` returns one at once and the
row is written a moment later by the queue's background flusher. Everything that needs the
id (``get_task_id``, ``get_state``, ``cancel``, ``stop``, ``wait``) first waits for that
creation, and raises its error if it failed.

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
from typing import TYPE_CHECKING, Any

from loguru import logger

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import QueueClosed, TaskFailed, TaskTimeout, UnknownTask
from taskqueue_core.models import Event, Task, TaskState
from taskqueue_core.repository import Subscription, TaskRepository

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = ["EndWatcher", "TaskRef", "task_outcome"]


class TaskRef:
    """A reference to a task of a ``TaskQueue``, created or still being created.

    Obtained from ``add_task`` (creation pending), ``enqueue`` or ``queue.ref(id)`` (id known).
    Refs can be passed as ``parent=`` to other tasks before their own creation finished.
    """

    __slots__ = ("_creation", "_id", "_name", "_queue")

    def __init__(
        self,
        queue: TaskQueue,
        *,
        task_id: int | None = None,
        creation: asyncio.Future[int] | None = None,
        name: str | None = None,
    ) -> None:
        if (task_id is None) == (creation is None):
            raise ValueError("a TaskRef needs exactly one of task_id or creation")
        self._queue = queue
        self._id = task_id
        self._creation = creation
        self._name = name

    # -- identity ------------------------------------------------------------------------

    @property
    def queue(self) -> TaskQueue:
        """The queue this task belongs to."""
        return self._queue

    @property
    def name(self) -> str | None:
        """The task's name, when the ref was made by ``add_task``/``enqueue``."""
        return self._name

    @property
    def task_id(self) -> int | None:
        """The id if it is already known (no waiting), else None."""
        return self._id

    @property
    def created(self) -> bool:
        """True once creation settled with an id (False while pending or if it failed)."""
        return self._id is not None

    def creation_error(self) -> BaseException | None:
        """The error that prevented creation, or None (created, or still pending)."""
        fut = self._creation
        if self._id is not None or fut is None or not fut.done():
            return None
        if fut.cancelled():
            return QueueClosed("the task was not created: its creation was cancelled")
        return fut.exception()

    def _settled(self) -> bool:
        return self._id is not None or self._creation is None or self._creation.done()

    def __repr__(self) -> str:
        if self._id is not None:
            state = f"id={self._id}"
        elif self.creation_error() is not None:
            state = "creation failed"
        else:
            state = "pending"
        name = f" {self._name!r}" if self._name else ""
        return f"<TaskRef {state}{name}>"

    # -- reads ---------------------------------------------------------------------------

    async def get_task_id(self) -> int:
        """The task's id, once it is created.

        Raises the creation's error: ``InvalidTaskError`` and its subclasses
        (``UnknownParent`` when a parent does not exist or failed to be created),
        ``RepositoryError``, or ``QueueClosed`` if the queue was closed before the write.
        """
        if self._id is not None:
            return self._id
        assert self._creation is not None
        # shield: cancelling this caller must not cancel the creation others wait on.
        task_id = await asyncio.shield(self._creation)
        self._id = task_id
        return task_id

    async def get_state(self) -> TaskState:
        """The task's current state. Raises ``UnknownTask`` if it was deleted meanwhile."""
        task_id = await self.get_task_id()
        self._queue._check_open()
        states = await self._queue.repository.get_states([task_id])
        if task_id not in states:
            raise UnknownTask(f"no task has id {task_id}")
        return states[task_id]

    async def get_task(self) -> Task:
        """The stored task. Raises ``UnknownTask`` if it was deleted meanwhile."""
        return await self._queue.get_task(await self.get_task_id())

    # -- control -------------------------------------------------------------------------

    def cancel(self) -> asyncio.Task[list[int]]:
        """Cancel the task (and its waiting descendants), whether or not this is awaited.

        The write starts at once in a background task that the queue watches (its error is
        logged) and waits for on ``close()``; awaiting the returned task gives the ids that
        were cancelled ([] when the task had already ended) or raises the error. Must be
        called from the queue's event loop. Raises ``QueueClosed`` at once on a closed queue.
        """
        return self._queue._spawn_control("cancel", self)

    def stop(self) -> asyncio.Task[list[int]]:
        """Stop the task, whether or not this is awaited; descendants keep waiting.

        A stopped task can be put back with ``queue.retry``. Same mechanics as ``cancel``.
        """
        return self._queue._spawn_control("stop", self)

    # -- waiting -------------------------------------------------------------------------

    async def wait(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait until the task ends and return its result.

        Raises ``TaskFailed`` (carrying the remote ``exception_name``, ``exception_message``
        and ``exception_info``) if it failed, ``asyncio.CancelledError`` if it was
        cancelled or stopped (the message says which), ``TaskTimeout`` if ``timeout``
        seconds pass first (creation included; the task itself is left alone), the
        creation's error if it could not be created, ``UnknownTask`` if it was deleted,
        and ``QueueClosed`` if the queue closes meanwhile.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be 0 or more seconds, got {timeout!r}")
        self._queue._check_open()
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                task_id = await self.get_task_id()
                task = await self._queue._end_watcher().wait_ended(task_id)
        except TimeoutError:
            if not scope.expired():
                raise
            which = f"task {self._id}" if self._id is not None else f"{self!r}"
            raise TaskTimeout(f"{which} did not end within {timeout} s") from None
        return task_outcome(task)


def task_outcome(task: Task) -> Any:
    """The result of a finished task, or the exception its end means (see ``TaskRef.wait``)."""
    if task.state is TaskState.DONE:
        return task.result
    if task.state is TaskState.FAILED:
        raise TaskFailed(task.id, task.exception_name, task.exception_message, task.exception_info)
    if task.state in (TaskState.CANCELLED, TaskState.STOPPED):
        raise asyncio.CancelledError(f"task {task.id} was {task.state.value}")
    raise ValueError(f"task {task.id} has not ended (state {task.state.value})")


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
