"""TaskQueue: create tasks (batched or at once), control them, wait for them, read them.

The public facade of the core. Creation has two paths:

- ``add_task(...)`` validates its input at once (raising on anything wrong) and returns a
  ``TaskRef`` without waiting for the database; a background flusher writes the tasks of
  one event-loop tick together (one INSERT, or two at once on PostgreSQL for a big tick:
  ``taskqueue_core.creation``). ``flush()`` waits for everything added so far; ``close()``
  flushes before closing, so nothing added is lost. A failed background write surfaces on
  the refs it concerns and is logged.
- ``await enqueue(...)`` / ``await enqueue_many([...])`` write at once, optionally inside
  the caller's database transaction, and raise the repository's error directly.

Every creation is checked first by ``taskqueue_core.validation`` (function, arguments,
options, parents; the storage column limits of ``taskqueue_core.limits``): bad input raises
at the call and nothing is written. Control verbs and reads pass through to the repository.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from loguru import logger

from taskqueue_core.backends import repository_from_config
from taskqueue_core.calls import RESERVED_OPTIONS, Parent, TaskCall, check_alone
from taskqueue_core.config import QueueConfig
from taskqueue_core.creation import MAX_BATCH_SIZE, CreationWriter, PendingCreation
from taskqueue_core.exceptions import InvalidTaskError, QueueClosed, UnknownTask
from taskqueue_core.functions import FunctionCodec
from taskqueue_core.hooks import HookRegistry, default_hooks
from taskqueue_core.models import (
    LogRecord,
    NewTask,
    ServerInfo,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskTree,
)
from taskqueue_core.ref import TaskRef
from taskqueue_core.repository import TaskRepository
from taskqueue_core.validation import (
    Validator,
    check_channel,
    check_task_id,
    check_task_ids,
)
from taskqueue_core.watcher import EndWatcher

__all__ = ["MAX_BATCH_SIZE", "RESERVED_OPTIONS", "Parent", "TaskCall", "TaskQueue"]


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class TaskQueue:
    """The entry point: create, control, wait for and read tasks.

    ``config`` None reads ``QueueConfig.from_env()``; ``repository`` None builds the one
    ``config.database_url`` names; ``hooks`` None uses ``default_hooks`` (the registry the
    ``@on_*`` decorators fill). The queue owns its repository's lifecycle: ``open()`` opens
    it and ``close()`` closes it. Use it from one event loop: ``async with TaskQueue() as q``.
    """

    def __init__(
        self,
        config: QueueConfig | None = None,
        *,
        repository: TaskRepository | None = None,
        hooks: HookRegistry | None = None,
    ) -> None:
        self.config: QueueConfig = config if config is not None else QueueConfig.from_env()
        self.repository: TaskRepository = (
            repository if repository is not None else repository_from_config(self.config)
        )
        self.codec: FunctionCodec = FunctionCodec(self.config.secret_key)
        self.hooks: HookRegistry = hooks if hooks is not None else default_hooks
        self._state = _State.NEW
        self._open_lock = asyncio.Lock()
        self._writer = CreationWriter(self)
        self._validator = Validator()
        self._controls: set[asyncio.Task[list[int]]] = set()
        self._watcher: EndWatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_context: contextvars.Context | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between ``open()`` and the start of ``close()``."""
        return self._state is _State.OPEN

    async def open(self) -> None:
        """Open the repository. Idempotent; a closed queue can be opened again."""
        async with self._open_lock:
            if self._state is _State.OPEN:
                return
            await self.repository.open()
            self._loop = asyncio.get_running_loop()
            self._watcher = EndWatcher(self.repository, self.config)
            self._state = _State.OPEN

    async def close(self) -> None:
        """Write every pending ``add_task``, finish control writes, end waits, close storage.

        Idempotent. From its start, new calls raise ``QueueClosed``; pending ``wait()``
        calls raise ``QueueClosed``.
        """
        async with self._open_lock:
            if self._state is not _State.OPEN:
                return
            self._state = _State.CLOSING
            try:
                await self._writer.drain()
                # From here a task handed over by another thread is refused, not stranded.
                self._state = _State.CLOSED
                if self._controls:
                    await asyncio.wait(set(self._controls))
                if self._watcher is not None:
                    await self._watcher.close()
            finally:
                self._watcher = None
                self._state = _State.CLOSED
                await self.repository.close()

    async def __aenter__(self) -> TaskQueue:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            state = "not open yet" if self._state is _State.NEW else "closed"
            raise QueueClosed(f"the task queue is {state}")

    # -- creation ------------------------------------------------------------------------

    def add_task(
        self,
        func: Callable[..., Any] | TaskCall,
        *args: Any,
        parent: Parent = None,
        name: str | None = None,
        channel: str = "default",
        priority: int = 0,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> TaskRef:
        """Validate a task and schedule its creation; return its ref at once.

        ``func``: a module-level function (stored by import path) or a local function,
        closure or lambda (stored with dill), sync or async; or a ``TaskCall``.
        ``args``/``kwargs``: JSON values (tuples become lists). Options: ``parent`` (a
        TaskRef, an id, or a list of them: the task waits until all are done), ``name``
        (default: the function's ``module.qualname``), ``channel``, ``priority`` (higher
        first), ``delay`` (seconds or timedelta) or ``eta`` (aware datetime) to run later,
        ``max_retries`` (default ``config.max_retries``), ``timeout`` in seconds (default
        ``config.task_timeout``, read when the task runs).

        Raises at once, writing nothing: ``FunctionNotSerializable``,
        ``ArgumentNotSerializable``, ``InvalidTaskError`` (a bad option, or arguments the
        function's signature does not accept), ``QueueClosed``. Errors of the write itself
        surface on the ref. May be called from another thread than the queue's event loop
        (a sync endpoint): the task is handed to the loop, which writes it as usual.
        """
        self._check_open()
        loop = self._loop
        assert loop is not None
        task = self._prepare_one(
            func, args, kwargs, parent, name, channel, priority, delay, eta, max_retries, timeout
        )
        if isinstance(func, TaskCall):
            parent = func.parent
        parents = () if parent is None else Validator.parents(parent)
        context = contextvars.copy_context()
        if context == self._last_context:
            # Nothing set since the previous call (a burst): keep its snapshot alive rather
            # than one more per task (see PendingCreation.context).
            context = self._last_context
        else:
            self._last_context = context
        item = PendingCreation(loop, task, parents, context)
        ref = TaskRef(self, creation=item, name=task.name)
        if _running_loop() is loop:
            self._accept(item)
        else:
            # Another thread (a sync FastAPI endpoint runs in a thread pool): hand the task
            # to the queue's loop. FIFO: it is pending before anything the thread schedules
            # after this call, such as the completion of the endpoint.
            loop.call_soon_threadsafe(self._accept, item)
        return ref

    def _accept(self, item: PendingCreation) -> None:
        """Put ``item`` in the pending list and make sure a flusher runs (in the loop)."""
        if self._state is _State.CLOSED or self._state is _State.NEW:
            item.fail(QueueClosed("the task was not created: the queue closed first"))
            return
        self._writer.submit(item)

    async def enqueue(
        self,
        func: Callable[..., Any] | TaskCall,
        *args: Any,
        parent: Parent = None,
        name: str | None = None,
        channel: str = "default",
        priority: int = 0,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the task's run-time limit)
        transaction: Any = None,
        **kwargs: Any,
    ) -> TaskRef:
        """Create a task now and return its ref (id known).

        Same arguments as ``add_task``, plus ``transaction``: a backend connection already
        inside a transaction (Tortoise: the client of ``in_transaction()``) to write
        through; the task exists only if the caller commits. Raises what ``add_task``
        raises, and the repository's errors (``UnknownParent``, ``RepositoryError``).
        """
        self._check_open()
        task = self._prepare_one(
            func, args, kwargs, parent, name, channel, priority, delay, eta, max_retries, timeout
        )
        if isinstance(func, TaskCall):
            parent = func.parent
        parents = None if parent is None else [Validator.parents(parent)]
        [ref] = await self._create_now([task], parents, transaction)
        return ref

    async def enqueue_many(
        self, calls: Sequence[TaskCall], *, transaction: Any = None
    ) -> list[TaskRef]:
        """Create many tasks now in one write, all or nothing; return their refs in order.

        Every call is validated before anything is written (the error names its position).
        Parents must be existing tasks or refs of earlier creations.
        """
        self._check_open()
        if isinstance(calls, TaskCall) or not isinstance(calls, Sequence):
            raise InvalidTaskError(
                f"enqueue_many takes a list of TaskCall, got {type(calls).__name__}"
            )
        tasks = self._validator.prepare_many(calls, self.config, self.codec, "enqueue_many")
        parents: list[tuple[TaskRef | int, ...]] | None = None  # None while no call has any
        for position, call in enumerate(calls):
            if call.parent is not None:
                if parents is None:
                    parents = [()] * position
                parents.append(Validator.parents(call.parent))
            elif parents is not None:
                parents.append(())
        if not tasks:
            return []
        return await self._create_now(tasks, parents, transaction)

    async def flush(self) -> None:
        """Wait until every ``add_task`` made so far is written (or has failed on its ref)."""
        await self._writer.flush()

    @property
    def pending_count(self) -> int:
        """How many ``add_task`` creations are not settled yet."""
        return self._writer.pending_count

    def ref(self, task_id: int) -> TaskRef:
        """A ref to the existing task ``task_id`` (not checked until used)."""
        return TaskRef(self, task_id=check_task_id(task_id, "task_id"))

    # -- control -------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> Task:
        """The stored task. Raises ``UnknownTask``."""
        self._check_open()
        tasks = await self.repository.get_tasks([check_task_id(task_id, "task_id")])
        if not tasks:
            raise UnknownTask(f"no task has id {task_id}")
        return tasks[0]

    async def cancel(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or running tasks and their waiting descendants.

        Returns the ids that changed (descendants included); ended tasks are left alone.
        """
        self._check_open()
        return await self.repository.cancel_tasks(check_task_ids(task_ids))

    async def stop(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or running tasks (descendants keep waiting).

        Returns the ids that changed."""
        self._check_open()
        return await self.repository.stop_tasks(check_task_ids(task_ids))

    async def retry(self, task_ids: Sequence[int]) -> list[int]:
        """Put failed, cancelled or stopped tasks back in the queue; return the ids changed."""
        self._check_open()
        return await self.repository.retry_tasks(check_task_ids(task_ids))

    async def clear(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all), and the waiting tasks of
        any channel that depend on them (they could never start); return how many."""
        self._check_open()
        if channel is not None:
            check_channel(channel)
        return await self.repository.delete_pending(channel)

    async def wait_for(self, task_id: int, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """``self.ref(task_id).wait(timeout)``: the result, or ``TaskFailed``,
        ``asyncio.CancelledError``, ``TaskTimeout``, ``UnknownTask``."""
        return await self.ref(task_id).wait(timeout)

    # -- reads (pass-through) ------------------------------------------------------------

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, newest first, and the total that match."""
        self._check_open()
        return await self.repository.list_tasks(filter, limit=limit, offset=offset)

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and all its descendants, with edges. Raises ``UnknownTask``."""
        self._check_open()
        return await self.repository.get_tree(check_task_id(task_id, "task_id"))

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """The task's log rows, oldest first, after ``after_id``."""
        self._check_open()
        return await self.repository.get_logs(
            check_task_id(task_id, "task_id"), after_id=after_id, limit=limit
        )

    async def stats(self) -> Stats:
        """Counts by state and channel, recent throughput, worker totals."""
        self._check_open()
        return await self.repository.stats()

    async def servers(self) -> list[ServerInfo]:
        """Every registered worker server."""
        self._check_open()
        return await self.repository.list_servers()

    # -- internals used by TaskRef -------------------------------------------------------

    def _end_watcher(self) -> EndWatcher:
        self._check_open()
        assert self._watcher is not None
        return self._watcher

    def _spawn_control(self, verb: str, ref: TaskRef) -> asyncio.Task[list[int]]:
        self._check_open()
        loop = asyncio.get_running_loop()
        write = self.repository.cancel_tasks if verb == "cancel" else self.repository.stop_tasks

        async def control() -> list[int]:
            return await write([await ref.get_task_id()])

        task = loop.create_task(control(), name=f"taskqueue-{verb}-{ref!r}")
        self._controls.add(task)
        task.add_done_callback(self._control_done)
        return task

    def _control_done(self, task: asyncio.Task[list[int]]) -> None:
        self._controls.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved for an un-awaited call
        if exc is not None:
            logger.warning("taskqueue: {} failed: {}: {}", task.get_name(), type(exc).__name__, exc)

    # -- creation internals --------------------------------------------------------------

    def _prepare(self, call: TaskCall) -> NewTask:
        return self._validator.prepare(call, self.config, self.codec)

    def _prepare_one(
        self,
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
    ) -> NewTask:
        """The task of an ``add_task``/``enqueue`` call; ``func`` may be a ``TaskCall`` (then
        alone). The fields go to validation as they are: no object per call to build."""
        if isinstance(func, TaskCall):
            check_alone(
                func,
                args,
                kwargs,
                parent,
                name,
                channel,
                priority,
                delay,
                eta,
                max_retries,
                timeout,
            )
            return self._prepare(func)
        return self._validator.prepare_fields(
            func,
            args,
            kwargs,
            parent,
            name,
            channel,
            priority,
            delay,
            eta,
            max_retries,
            timeout,
            self.config,
            self.codec,
        )

    async def _create_now(
        self,
        tasks: list[NewTask],
        parents: list[tuple[TaskRef | int, ...]] | None,
        transaction: Any,
    ) -> list[TaskRef]:
        ids = await self._writer.create_now(tasks, parents, transaction, self._check_open)
        return [
            TaskRef(self, task_id=task_id, name=task.name)
            for task, task_id in zip(tasks, ids, strict=True)
        ]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
