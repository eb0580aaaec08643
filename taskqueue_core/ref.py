"""TaskRef, the handle ``add_task`` returns.

A ``TaskRef`` may exist before its task does: ``add_task`` returns one at once and the
row is written a moment later by the queue's background flusher. Everything that needs the
id (``get_task_id``, ``get_state``, ``cancel``, ``stop``, ``wait``) first waits for that
creation, and raises its error if it failed. ``wait()`` sleeps on the queue's
``EndWatcher`` (``taskqueue_core.watcher``), not on the row.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from taskqueue_core.exceptions import TaskFailed, TaskTimeout, UnknownTask
from taskqueue_core.models import Task, TaskState

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = ["Creation", "TaskRef", "task_outcome"]


class Creation:
    """The creation of a task written in the background: settles once, with an id or an error.

    Lighter than an ``asyncio.Future``, which a burst of ``add_task`` calls would make one of
    per task (and keep alive until written): the future a waiter needs is made only when
    someone awaits the creation before it settled. Settled and awaited in ``loop``'s thread.
    """

    __slots__ = ("_error", "_id", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._id: int | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[int] | None = None

    @property
    def task_id(self) -> int | None:
        """The id once written, else None."""
        return self._id

    @property
    def error(self) -> BaseException | None:
        """Why the task was not created, once that is known; else None."""
        return self._error

    def done(self) -> bool:
        """True once settled (written or failed)."""
        return self._id is not None or self._error is not None

    def settle(self, task_id: int) -> None:
        """Record the written task's id and wake the waiters (no-op if already settled)."""
        if self.done():
            return
        self._id = task_id
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(task_id)

    def refuse(self, error: BaseException) -> None:
        """Record that the task was not created and wake the waiters (no-op if settled)."""
        if self.done():
            return
        self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # retrieved: the error is the ref's to raise, not the loop's

    def waiter(self) -> asyncio.Future[int]:
        """A future of ``loop`` that settles with the creation (made on first use)."""
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = self._loop.create_future()
            if self._id is not None:
                waiter.set_result(self._id)
            elif self._error is not None:
                waiter.set_exception(self._error)
                waiter.exception()
        return waiter


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
        creation: Creation | None = None,
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
        creation = self._creation
        if self._id is None and creation is not None and creation.task_id is not None:
            # Written: the pending creation (with the task's arguments) is no longer needed.
            self._id = creation.task_id
            self._creation = None
        return self._id

    @property
    def created(self) -> bool:
        """True once creation settled with an id (False while pending or if it failed)."""
        return self.task_id is not None

    def creation_error(self) -> BaseException | None:
        """The error that prevented creation, or None (created, or still pending)."""
        creation = self._creation
        return None if creation is None else creation.error

    def __repr__(self) -> str:
        task_id = self.task_id
        if task_id is not None:
            state = f"id={task_id}"
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
        task_id = self.task_id
        if task_id is not None:
            return task_id
        creation = self._creation
        assert creation is not None
        if creation.error is not None:
            raise creation.error
        # shield: cancelling this caller must not cancel the creation others wait on.
        task_id = await asyncio.shield(creation.waiter())
        self._id = task_id
        self._creation = None
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
