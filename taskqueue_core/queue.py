"""TaskQueue: create tasks (batched or at once), control them, wait for them, read them.

Creation has two paths:

- ``add_task(...)`` validates its input at once (raising on anything wrong) and returns a
  ``TaskRef`` without waiting for the database. The task joins a pending list that ONE
  background flusher writes with a single ``create_tasks`` call per round: every
  ``add_task`` of one event-loop tick (and those made while the previous round was being
  written) go in one INSERT. ``flush()`` waits for everything added so far; ``close()``
  flushes before closing, so nothing added is lost.
- ``await enqueue(...)`` / ``await enqueue_many([...])`` write at once, optionally inside
  the caller's database transaction, and raise the repository's error directly.

A failed background write surfaces on the refs it concerns (``get_task_id()`` / ``wait()``
raise it) and is logged. A batch is all or nothing in the repository, so when one task of a
batch is refused the flusher isolates it instead of failing its neighbours: a missing parent
id is found with one ``get_states`` read and only the tasks naming it fail; any other error
is bisected (the halves are written separately, recursively) until the culprit is alone.
Children of a task whose creation failed fail with ``UnknownParent`` naming that parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import inspect
import math
import sys
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeAlias

from loguru import logger

from taskqueue_core.backends import repository_from_config
from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import (
    ArgumentNotSerializable,
    FunctionNotSerializable,
    InvalidTaskError,
    QueueClosed,
    RepositoryError,
    UnknownParent,
    UnknownTask,
)
from taskqueue_core.functions import FunctionCodec, function_name
from taskqueue_core.hooks import HookRegistry, Moment, default_hooks
from taskqueue_core.models import (
    FunctionRef,
    LogRecord,
    NewTask,
    ServerInfo,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskTree,
)
from taskqueue_core.ref import EndWatcher, TaskRef
from taskqueue_core.repository import TaskRepository

__all__ = ["MAX_BATCH_SIZE", "RESERVED_OPTIONS", "Parent", "TaskCall", "TaskQueue"]

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

MAX_BATCH_SIZE = 2000
"""Most tasks one background ``create_tasks`` call writes; more pending tasks take more calls.

Measured on PostgreSQL: 10,000 tasks are written fastest in batches of about 2,000 (bigger
single INSERTs cost more than proportionally)."""

_INT32 = 2**31 - 1
_NAME_MAX = 255
_CHANNEL_MAX = 64


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


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class _Prepared:
    """A validated task, its parents still unresolved (refs may be pending)."""

    task: NewTask
    parents: tuple[TaskRef | int, ...]


@dataclass(slots=True, eq=False)
class _Pending:
    """An ``add_task`` waiting for the flusher."""

    prepared: _Prepared
    ref: TaskRef
    future: asyncio.Future[int]
    context: contextvars.Context
    hooked: bool = False
    """pre_create hooks ran (a batch retried after a split must not run them again)."""
    parent_ids: tuple[int, ...] = ()
    """The existing parents of the last attempt (to find which one is missing)."""


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
        self._pending: list[_Pending] = []
        self._inflight: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._controls: set[asyncio.Task[list[int]]] = set()
        self._watcher: EndWatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signatures: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature | None]
        self._signatures = weakref.WeakKeyDictionary()
        self._paths: weakref.WeakKeyDictionary[Callable[..., Any], FunctionRef]
        self._paths = weakref.WeakKeyDictionary()

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
                await self._drain()
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
        call = _as_call(
            func, args, kwargs, parent, name, channel, priority, delay, eta, max_retries, timeout
        )
        prepared = self._prepare(call)
        future: asyncio.Future[int] = loop.create_future()
        ref = TaskRef(self, creation=future, name=prepared.task.name)
        item = _Pending(prepared, ref, future, contextvars.copy_context())
        if _running_loop() is loop:
            self._accept(item)
        else:
            # Another thread (a sync FastAPI endpoint runs in a thread pool): hand the task
            # to the queue's loop. FIFO: it is pending before anything the thread schedules
            # after this call, such as the completion of the endpoint.
            loop.call_soon_threadsafe(self._accept, item)
        return ref

    def _accept(self, item: _Pending) -> None:
        """Put ``item`` in the pending list and make sure a flusher runs (in the loop)."""
        if self._state is _State.CLOSED or self._state is _State.NEW:
            _fail(item, QueueClosed("the task was not created: the queue closed first"))
            return
        self._pending.append(item)
        if self._flusher is None:
            loop = asyncio.get_running_loop()
            self._flusher = loop.create_task(self._flush_loop(), name="taskqueue-creation-flusher")
            self._flusher.add_done_callback(self._flusher_done)

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
        call = _as_call(
            func, args, kwargs, parent, name, channel, priority, delay, eta, max_retries, timeout
        )
        [ref] = await self._create_now([self._prepare(call)], transaction)
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
        prepared: list[_Prepared] = []
        for position, call in enumerate(calls):
            if not isinstance(call, TaskCall):
                raise InvalidTaskError(
                    f"enqueue_many: item {position} is a {type(call).__name__}, not a TaskCall"
                )
            try:
                prepared.append(self._prepare(call))
            except InvalidTaskError as exc:
                raise type(exc)(f"enqueue_many: item {position}: {exc.message}") from exc
        if not prepared:
            return []
        return await self._create_now(prepared, transaction)

    async def flush(self) -> None:
        """Wait until every ``add_task`` made so far is written (or has failed on its ref)."""
        futures = [item.future for item in (*self._inflight, *self._pending)]
        if futures:
            await asyncio.wait(futures)

    @property
    def pending_count(self) -> int:
        """How many ``add_task`` creations are not settled yet."""
        return sum(1 for item in (*self._inflight, *self._pending) if not item.future.done())

    def ref(self, task_id: int) -> TaskRef:
        """A ref to the existing task ``task_id`` (not checked until used)."""
        return TaskRef(self, task_id=_task_id(task_id, "task_id"))

    # -- control -------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> Task:
        """The stored task. Raises ``UnknownTask``."""
        self._check_open()
        tasks = await self.repository.get_tasks([_task_id(task_id, "task_id")])
        if not tasks:
            raise UnknownTask(f"no task has id {task_id}")
        return tasks[0]

    async def cancel(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or running tasks and their waiting descendants.

        Returns the ids that changed (descendants included); ended tasks are left alone.
        """
        self._check_open()
        return await self.repository.cancel_tasks(_task_ids(task_ids))

    async def stop(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or running tasks (descendants keep waiting).

        Returns the ids that changed."""
        self._check_open()
        return await self.repository.stop_tasks(_task_ids(task_ids))

    async def retry(self, task_ids: Sequence[int]) -> list[int]:
        """Put failed, cancelled or stopped tasks back in the queue; return the ids changed."""
        self._check_open()
        return await self.repository.retry_tasks(_task_ids(task_ids))

    async def clear(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all); return how many."""
        self._check_open()
        if channel is not None:
            _check_channel(channel)
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
        return await self.repository.get_tree(_task_id(task_id, "task_id"))

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """The task's log rows, oldest first, after ``after_id``."""
        self._check_open()
        return await self.repository.get_logs(
            _task_id(task_id, "task_id"), after_id=after_id, limit=limit
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

    # -- validation ----------------------------------------------------------------------

    def _prepare(self, call: TaskCall | _Call) -> _Prepared:
        func = call.func
        if isinstance(func, TaskCall):
            raise InvalidTaskError("TaskCall.func is itself a TaskCall; pass the function")
        if inspect.iscoroutine(func):
            func.close()  # it will never run: close it so Python does not warn twice
            raise FunctionNotSerializable(
                "got a coroutine object, not a function: pass the function and its "
                "arguments, e.g. add_task(send_email, to) instead of add_task(send_email(to))"
            )
        if not callable(func):
            raise FunctionNotSerializable(
                f"the task function must be callable, got {_type_name(func)}"
            )
        label = getattr(func, "__qualname__", None) or _type_name(func)
        options = _check_options(call, self.config, label)
        raw_args, raw_kwargs = call.args, call.kwargs
        if type(raw_args) is not tuple and (
            isinstance(raw_args, str | bytes) or not isinstance(raw_args, Sequence)
        ):
            raise InvalidTaskError(
                f"{label}: args must be a list or tuple, got {_type_name(raw_args)}"
            )
        if type(raw_kwargs) is not dict and not isinstance(raw_kwargs, Mapping):
            raise InvalidTaskError(f"{label}: kwargs must be a dict, got {_type_name(raw_kwargs)}")
        args = [_to_json(value, label, i) for i, value in enumerate(raw_args)]
        kwargs: dict[str, Any] = {}
        for key, value in raw_kwargs.items():
            if type(key) is not str:
                raise ArgumentNotSerializable(
                    f"{label}: keyword names must be strings, got {_type_name(key)} {key!r}"
                )
            kwargs[key] = _to_json(value, label, key)
        ref = self._function_ref(func)
        self._check_binds(func, label, args, kwargs)
        name = call.name
        if name is None:
            name = _clean_text(function_name(func))[:_NAME_MAX]
        task = NewTask(
            name=name,
            function=ref,
            args=args,
            kwargs=kwargs,
            context={},
            channel=options.channel,
            priority=options.priority,
            max_retries=options.max_retries,
            timeout=options.timeout,
            date_scheduled=options.date_scheduled,
        )
        return _Prepared(task, _check_parents(call.parent, label))

    def _function_ref(self, func: Callable[..., Any]) -> FunctionRef:
        """``codec.dump(func)``, cached for functions stored by import path.

        A cached path is used only while it still resolves to this very function (checked
        through ``sys.modules``, which is cheap), so a module attribute replaced since — a
        monkeypatch — is dumped again, like the codec itself would.
        """
        try:
            cached = self._paths.get(func)
        except TypeError:
            cached = None  # not weak-referenceable
        if cached is not None and _resolves_to(cached, func):
            return cached
        ref = self.codec.dump(func)
        if ref.module_name is not None:
            with contextlib.suppress(TypeError):
                self._paths[func] = ref
        return ref

    def _check_binds(
        self, func: Callable[..., Any], label: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Refuse arguments the function cannot accept, now rather than in the worker."""
        try:
            signature = self._signatures[func]
        except (KeyError, TypeError):
            try:
                signature = inspect.signature(func)
            except (TypeError, ValueError):
                signature = None  # builtins without a signature: the worker will tell
            with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
                self._signatures[func] = signature
        if signature is None:
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            empty = inspect.Parameter.empty
            bare = signature.replace(
                parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
                return_annotation=inspect.Signature.empty,
            )
            raise InvalidTaskError(f"{label}{bare}: {exc}") from None

    # -- immediate creation --------------------------------------------------------------

    async def _create_now(self, prepared: list[_Prepared], transaction: Any) -> list[TaskRef]:
        tasks: list[NewTask] = []
        for item in prepared:
            parent_ids = [await _parent_id(parent) for parent in item.parents]
            tasks.append(dataclasses.replace(item.task, parent_ids=_unique(parent_ids)))
        if self.hooks.has(Moment.PRE_CREATE):
            for task in tasks:
                await self.hooks.run_pre_create(task)
                _clean_context(task)
        self._check_open()
        ids = await self.repository.create_tasks(tasks, transaction=transaction)
        if self.hooks.has(Moment.POST_CREATE):
            for task, task_id in zip(tasks, ids, strict=True):
                await self.hooks.run_post_create(task, task_id)
        return [
            TaskRef(self, task_id=task_id, name=task.name)
            for task, task_id in zip(tasks, ids, strict=True)
        ]

    # -- background creation -------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            if not self._pending:
                # No await between this check and the reset: add_task sees None and starts
                # a new flusher, so a task added now is never left behind.
                self._flusher = None
                return
            batch = self._pending[:MAX_BATCH_SIZE]
            del self._pending[:MAX_BATCH_SIZE]
            self._inflight = batch
            await self._write_batch(batch)
            # Not in a `finally`: if the write is cancelled or crashes, _flusher_done still
            # finds the batch here and fails the refs that did not settle.
            self._inflight = []

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        if self._flusher is task:
            self._flusher = None
        error: BaseException
        if task.cancelled():
            error = QueueClosed("the task was not created: the creation flusher was cancelled")
        elif (exc := task.exception()) is not None:
            logger.opt(exception=exc).critical("taskqueue: the creation flusher crashed")
            error = RepositoryError(f"the task was not created: {type(exc).__name__}: {exc}")
        else:
            return
        # _write_batch catches every error of a write, so this is a bug or a loop shutdown:
        # fail what is left rather than let get_task_id() hang.
        for item in (*self._inflight, *self._pending):
            _fail(item, error)
        self._inflight = []
        self._pending = []

    async def _write_batch(self, batch: list[_Pending]) -> None:
        await self._run_pre_create(batch)
        # A parent ref of another queue may still be pending: wait for it (ours are either
        # earlier in this batch or already settled, since a ref exists before its children).
        foreign = {
            p._creation
            for item in batch
            for p in item.prepared.parents
            if isinstance(p, TaskRef) and p._creation is not None and not p._creation.done()
        }
        in_batch = {item.future for item in batch}
        foreign = {fut for fut in foreign if fut not in in_batch}
        if foreign:
            await asyncio.wait(foreign)
        await self._write_group(batch)

    async def _run_pre_create(self, items: list[_Pending]) -> None:
        todo = [item for item in items if not item.hooked]
        for item in todo:
            item.hooked = True
        if not todo or not self.hooks.has(Moment.PRE_CREATE):
            return
        # Each task's hooks run in the contextvars captured by its add_task call.
        await _run_in_contexts(
            [(item.context, self.hooks.run_pre_create(item.prepared.task)) for item in todo]
        )
        for item in todo:
            _clean_context(item.prepared.task)

    async def _write_group(self, items: list[_Pending]) -> None:
        """Write ``items`` in one call; on failure isolate the culprits (never raises)."""
        positions: dict[int, int] = {}  # id(ref) -> position in `tasks`
        tasks: list[NewTask] = []
        written: list[_Pending] = []
        for item in items:
            parent_ids: list[int] = []
            batch_parents: list[int] = []
            broken: TaskRef | None = None
            for parent in item.prepared.parents:
                if isinstance(parent, int):
                    parent_ids.append(parent)
                elif id(parent) in positions:
                    batch_parents.append(positions[id(parent)])
                elif parent.task_id is not None:
                    parent_ids.append(parent.task_id)
                else:
                    broken = parent
                    break
            if broken is not None:
                reason = broken.creation_error()
                _fail(
                    item,
                    UnknownParent(
                        f"parent {broken!r} was not created"
                        + (f": {type(reason).__name__}: {reason}" if reason else "")
                    ),
                )
                continue
            item.parent_ids = _unique(parent_ids)
            positions[id(item.ref)] = len(tasks)
            tasks.append(
                dataclasses.replace(
                    item.prepared.task,
                    parent_ids=item.parent_ids,
                    batch_parents=_unique(batch_parents),
                )
            )
            written.append(item)
        if not tasks:
            return
        try:
            ids = await self.repository.create_tasks(tasks)
        except Exception as exc:
            await self._isolate(written, exc)
            return
        if self.hooks.has(Moment.POST_CREATE):
            await _run_in_contexts(
                [
                    (item.context, self.hooks.run_post_create(task, task_id))
                    for item, task, task_id in zip(written, tasks, ids, strict=True)
                ]
            )
        for item, task_id in zip(written, ids, strict=True):
            item.ref._id = task_id
            if not item.future.done():
                item.future.set_result(task_id)

    async def _isolate(self, items: list[_Pending], exc: Exception) -> None:
        """``items`` failed together with ``exc``: fail only the tasks that caused it."""
        if isinstance(exc, UnknownParent):
            wanted = {pid for item in items for pid in item.parent_ids}
            try:
                existing = await self.repository.get_states(list(wanted)) if wanted else {}
            except Exception:
                existing = None
            if existing is not None:
                missing = wanted - existing.keys()
                culprits = [i for i in items if missing.intersection(i.parent_ids)]
                if culprits:
                    for item in culprits:
                        gone = sorted(missing.intersection(item.parent_ids))
                        _fail(item, UnknownParent(f"parent task {gone[0]} does not exist"))
                    await self._write_group([i for i in items if not i.future.done()])
                    return
        if len(items) == 1:
            _fail(items[0], exc)
            return
        if isinstance(exc, RepositoryError) or not isinstance(exc, InvalidTaskError):
            # Tell a down database from a refused row before bisecting a batch: a cheap
            # read that fails too means every half would fail the same way.
            try:
                await self.repository.get_states([0])
            except Exception:
                for item in items:
                    _fail(item, exc)
                return
        middle = len(items) // 2
        # The first half goes first: its ids are known when the second half's children,
        # which may point at it, are resolved.
        await self._write_group(items[:middle])
        await self._write_group([i for i in items[middle:] if not i.future.done()])

    async def _drain(self) -> None:
        while self._flusher is not None:
            await asyncio.wait([self._flusher])


# -- helpers ----------------------------------------------------------------------------


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _fail(item: _Pending, error: BaseException) -> None:
    if item.future.done():
        return
    logger.error(
        "taskqueue: task {!r} was not created: {}: {}",
        item.prepared.task.name,
        type(error).__name__,
        error,
    )
    item.future.set_exception(error)
    item.future.exception()  # retrieved: it was logged, an unread ref must not warn again


async def _run_in_contexts(
    jobs: list[tuple[contextvars.Context, Coroutine[Any, Any, None]]],
) -> None:
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(job, context=context, name="taskqueue-creation-hooks")
        for context, job in jobs
    ]
    # The hook runners never raise (HookRegistry.run logs hook errors).
    await asyncio.gather(*tasks)


async def _parent_id(parent: TaskRef | int) -> int:
    if isinstance(parent, int):
        return parent
    try:
        return await parent.get_task_id()
    except InvalidTaskError as exc:
        raise UnknownParent(f"parent {parent!r} was not created: {exc}") from exc
    except QueueClosed as exc:
        raise UnknownParent(f"parent {parent!r} was not created: {exc}") from exc


class _Call:
    """What ``_prepare`` reads: a ``TaskCall``, or this lighter twin that ``add_task`` builds
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


def _as_call(
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
) -> TaskCall | _Call:
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
    return _Call(
        func, args, kwargs, parent, name, channel, priority, delay, eta, max_retries, timeout
    )


@dataclass(frozen=True, slots=True)
class _Options:
    channel: str
    priority: int
    max_retries: int
    timeout: float | None
    date_scheduled: datetime | None


def _check_options(call: TaskCall | _Call, config: QueueConfig, label: str) -> _Options:
    def bad(option: str, expected: str, value: Any) -> InvalidTaskError:
        return InvalidTaskError(f"{label}: {option} must be {expected}, got {value!r}")

    if call.name is not None:
        if not isinstance(call.name, str) or not call.name.strip():
            raise bad("name", "a non-empty string", call.name)
        if len(call.name) > _NAME_MAX or "\x00" in call.name:
            raise bad("name", f"at most {_NAME_MAX} characters, without NUL", call.name)
    channel = _check_channel(call.channel, label)
    priority = call.priority
    if type(priority) is not int or not -_INT32 - 1 <= priority <= _INT32:
        raise bad("priority", "a whole number (higher runs first)", priority)
    max_retries = config.max_retries if call.max_retries is None else call.max_retries
    if type(max_retries) is not int or not 0 <= max_retries <= _INT32:
        raise bad("max_retries", "a whole number, 0 or more", call.max_retries)
    timeout = call.timeout
    if timeout is not None:
        if not _is_number(timeout) or not 0 < timeout < math.inf:
            raise bad("timeout", "a number of seconds greater than 0", timeout)
        timeout = float(timeout)
    if call.delay is not None and call.eta is not None:
        raise InvalidTaskError(f"{label}: give delay or eta, not both")
    date_scheduled: datetime | None = None
    if call.delay is not None:
        delay = call.delay
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif _is_number(delay):
            seconds = float(delay)
        else:
            raise bad("delay", "a number of seconds or a timedelta", delay)
        if not 0 <= seconds < math.inf:
            raise bad("delay", "0 or more seconds", delay)
        date_scheduled = datetime.now(UTC) + timedelta(seconds=seconds)
    elif call.eta is not None:
        if not isinstance(call.eta, datetime):
            raise bad("eta", "a datetime", call.eta)
        if call.eta.tzinfo is None or call.eta.utcoffset() is None:
            raise bad("eta", "a timezone-aware datetime (e.g. datetime.now(UTC))", call.eta)
        date_scheduled = call.eta.astimezone(UTC)
    return _Options(channel, priority, max_retries, timeout, date_scheduled)


def _check_channel(channel: Any, label: str | None = None) -> str:
    if (
        not isinstance(channel, str)
        or not channel.strip()
        or len(channel) > _CHANNEL_MAX
        or "\x00" in channel
    ):
        prefix = f"{label}: " if label else ""
        raise InvalidTaskError(
            f"{prefix}channel must be a non-empty string of at most {_CHANNEL_MAX} "
            f"characters, got {channel!r}"
        )
    return channel


def _check_parents(parent: Parent, label: str) -> tuple[TaskRef | int, ...]:
    if parent is None:
        return ()
    items: Sequence[Any] = [parent] if isinstance(parent, TaskRef | int) else parent
    if isinstance(parent, str | bytes) or not isinstance(items, Sequence):
        raise InvalidTaskError(
            f"{label}: parent must be a TaskRef, a task id or a list of them, "
            f"got {_type_name(parent)}"
        )
    parents: list[TaskRef | int] = []
    for item in items:
        if isinstance(item, TaskRef) or (type(item) is int and item > 0):
            if item not in parents:
                parents.append(item)
        else:
            raise InvalidTaskError(
                f"{label}: parent must be a TaskRef, a task id (an int > 0) or a list of "
                f"them, got {_type_name(item)} {item!r}"
            )
    return tuple(parents)


def _task_id(value: Any, what: str) -> int:
    if type(value) is not int or value <= 0:
        raise TypeError(f"{what} must be a task id (an int > 0), got {_type_name(value)} {value!r}")
    return value


def _task_ids(values: Sequence[int]) -> list[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
        raise TypeError(f"task_ids must be a list of task ids, got {_type_name(values)} {values!r}")
    return [_task_id(v, "every task id") for v in values]


def _resolves_to(ref: FunctionRef, func: Callable[..., Any]) -> bool:
    target: Any = sys.modules.get(ref.module_name or "")
    for part in (ref.function_name or "").split("."):
        target = getattr(target, part, None)
    return target is func


def _unique(values: list[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _clean_text(text: str) -> str:
    return text.replace("\x00", "")


_JSON_HINT = "use str, int, float, bool, None, and lists and dicts of them with str keys"


def _to_json(value: Any, label: str, argument: int | str) -> Any:
    """A copy of ``value`` as plain JSON types; raises ``ArgumentNotSerializable`` naming
    the argument (a position or a keyword), the path inside it and the offending type.

    Copying (rather than checking) also snapshots the arguments: changing a list after
    ``add_task`` returned does not change the task that is written a moment later.
    """
    try:
        return _walk(value)
    except _NotJson as exc:
        name = _argument_name(argument)
        where = f"{name} at {''.join(exc.path)}" if exc.path else name
        raise ArgumentNotSerializable(f"{label}: {where} {exc.problem}; {_JSON_HINT}") from None
    except RecursionError:
        raise ArgumentNotSerializable(
            f"{label}: {_argument_name(argument)} is nested too deeply (or contains itself)"
        ) from None


def _argument_name(argument: int | str) -> str:
    if isinstance(argument, int):
        return f"positional argument {argument}"
    return f"keyword argument {argument!r}"


class _NotJson(Exception):
    """Raised deep in ``_walk``; each level on the way up prepends its key to ``path``."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.path: list[str] = []
        self.problem = problem


def _walk(value: Any) -> Any:
    cls = type(value)
    if value is None or cls is bool or cls is int:
        return value
    if cls is str:
        if "\x00" in value:
            raise _NotJson("is a string containing a NUL character, which is not storable")
        return value
    if cls is float:
        if not math.isfinite(value):
            raise _NotJson(f"is {value!r}, which is not JSON")
        return value
    if cls is list or cls is tuple:
        return _walk_list(value)
    if cls is dict:
        return _walk_dict(value)
    # Subclasses (enums, OrderedDict, NamedTuple, ...) are stored as their JSON base value.
    if isinstance(value, list | tuple):
        return _walk_list(value)
    if isinstance(value, dict):
        return _walk_dict(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, str):
        return _walk(str.__str__(value))
    if isinstance(value, float):
        return _walk(float.__float__(value))
    raise _NotJson(f"is of type {_type_name(value)}, which is not JSON")


def _walk_list(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    index = 0
    try:
        for index, item in enumerate(value):  # noqa: B007 (the except clause reads it)
            out.append(_walk(item))
    except _NotJson as exc:
        exc.path.insert(0, f"[{index}]")
        raise
    return out


def _walk_dict(value: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    key: Any = None
    try:
        for key, item in value.items():
            if type(key) is not str:
                raise _NotJson(f"has a key {key!r} of type {_type_name(key)} (JSON keys are str)")
            out[key] = _walk(item)
    except _NotJson as exc:
        if not exc.path and exc.problem.startswith("has a key"):
            raise  # the key itself is at fault: the path is this dict
        exc.path.insert(0, f"[{key!r}]")
        raise
    return out


def _clean_context(task: NewTask) -> None:
    """Drop context values a pre_create hook set that cannot be stored (the task goes on)."""
    for key in list(task.context):
        value = task.context[key]
        try:
            if type(key) is not str:
                raise _NotJson(f"has a key of type {_type_name(key)}")
            task.context[key] = _walk(value)
        except (_NotJson, RecursionError) as exc:
            del task.context[key]
            logger.error(
                "taskqueue: dropped context[{!r}] of task {!r}: a pre_create hook set a "
                "value that is not JSON ({})",
                key,
                task.name,
                exc,
            )
