"""Worker: claims, runs and completes tasks for one process.

The hot path, and how it stays cheap:

- **Claims** take as many ready tasks as there are free slots in ONE ``claim_tasks`` call.
  The claim loop claims again when a slot frees only if more work may be ready (the last
  claim filled every free slot, a ``created`` event arrived, or a poll is due), so a quiet
  queue costs no query per finished task.
- **Runs**: a coroutine function runs as a named asyncio task; a plain function runs in a
  thread pool (``loop.run_in_executor``) inside a copy of the task's
  ``contextvars`` context, so ``set_context``, loggers and whatever the ``pre_run`` hooks set
  reach it. Functions come from ``queue.codec.load``; a refused reference fails the task
  before any of its code runs.
- **Completions, context changes and log lines** are buffered and written by one writer
  task (``_Writer``): an outcome is written as soon as the writer is free (a few ms), and
  everything that piles up while a write is in flight goes in the next single call, so
  under load one ``complete_tasks`` call carries many outcomes. Each round writes log lines
  first, then contexts, then outcomes: when ``wait()`` returns, the task's logs are stored.

Outcomes: a JSON result -> ``done``; an exception (a timeout included) -> ``enqueued`` again
after ``retry_backoff * 2**retry_count`` seconds (+-20 % jitter, at most
``retry_backoff_max``) while ``retry_count < max_retries``, then ``failed`` with the
exception's name, message and traceback text. A result that is not JSON, a function that no
longer resolves or whose signature does not match, and arguments that do not fit the
function's parameters fail at once, without retries (running again would not help).

Timeouts (``task.timeout``, else ``config.task_timeout`` read live) are enforced by one
watchdog task that looks at the running tasks every ``WATCH_TICK`` seconds and interrupts
those past their deadline (a per-task timer would cost more than a no-op task itself); the
interrupted task fails with ``TimeoutError`` and the traceback of where it was waiting.

Control: ``control`` events (an admin cancelled or stopped a running task) interrupt the
task's asyncio task at once; when events cannot reach this process (no cross-process notify,
or the subscription is unhealthy) the watchdog reads the states of the running tasks every
second instead. The repository already wrote the final state, so the worker writes no
outcome for such a task (only its pending context and log lines).

A plain function cannot be interrupted. When one runs past its timeout (or is cancelled,
stopped, or still running at the end of a shutdown) the task ends without it: its slot is
freed at once, its thread runs on and its late result is discarded. So that such a thread
never starves the others, the worker gives its thread pool up (new calls go to a fresh pool)
and the old pool's threads end when their functions return. (An executor passed in, like
``WorkerPool``'s slot executor, is told instead: cancelling its future abandons the slot.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import inspect
import json
import math
import random
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger as _loguru

from taskqueue_core.context import TaskContext, activate, copy_json
from taskqueue_core.exceptions import FunctionRefused, RepositoryError
from taskqueue_core.hooks import Moment
from taskqueue_core.logging import INTERNAL_KEY, LogBuffer, install_task_sink
from taskqueue_core.models import Event, NewLogRecord, Outcome, Task, TaskState
from taskqueue_core.repository import Subscription

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = ["Worker"]

_log = _loguru.bind(**{INTERNAL_KEY: True})

CONTEXT_PERIOD = 0.2
"""Longest time, in seconds, an auto-committed context change waits before it is written."""

STATE_CHECK_INTERVAL = 1.0
"""Seconds between reads of running tasks' states when control events cannot arrive."""

WATCH_TICK = 0.05
"""Seconds between the watchdog's deadline checks while tasks run (timeout precision)."""

LOG_BATCH = 1_000
"""Log rows per ``append_logs`` call."""

OUTCOME_BATCH = 500
"""Most outcomes per ``complete_tasks`` call: bounded statements keep each write short."""

FINAL_FLUSH_TIMEOUT = 10.0
"""Seconds a stopping worker keeps trying to write its buffers before giving up."""

_SIGNATURE_CACHE_SIZE = 1_024
_JSON_SCALARS = (str, int, bool, type(None))


class _Interrupt(enum.Enum):
    CONTROL = "control"  # cancelled or stopped by an admin: the state is already final
    SHUTDOWN = "shutdown"  # the worker is stopping: hand the task back
    TIMEOUT = "timeout"  # past its deadline: a failure (TimeoutError)


class _Run:
    """One task running in this worker."""

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
        self.hooks = hooks  # (any pre_run hook, any post_run hook), read once per claim
        self.func = func
        self.is_async = is_async
        self.context = context
        self.started = started
        self.interrupt: _Interrupt | None = None
        self.timeout = 0.0  # the limit that expired, once interrupted for it
        self.job: asyncio.Task[None] | None = None


class _ThreadCall:
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


class Worker:
    """Claims, runs and completes tasks for one process.

    ``concurrency``: task slots (None: ``queue.config.max_workers``, read live, so changing
    it at run time takes effect). ``channels``: channels to claim from (None:
    ``queue.config.channels``, None there meaning all). ``server_name``: the ``claimed_by``
    of the tasks it runs (None: ``queue.config.resolved_server_name``). ``executor``: the
    thread pool for plain functions (default: the worker's own, sized to its slots); an
    executor given here is not shut down by the worker.

    The worker does not register a server row or heartbeat (``WorkerPool`` does); the queue
    must be open while it runs. A worker runs once: ``run()`` a second time raises.
    """

    def __init__(
        self,
        queue: TaskQueue,
        *,
        concurrency: int | None = None,
        channels: Sequence[str] | None = None,
        server_name: str | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"Worker concurrency must be a whole number >= 1, got {concurrency!r}")
        if channels is not None:
            if isinstance(channels, str):
                raise TypeError(f"Worker channels must be a list of names, got {channels!r}")
            for channel in channels:
                if not isinstance(channel, str) or not channel:
                    raise ValueError(f"Worker channels must be non-empty strings, got {channel!r}")
        self.queue = queue
        self.server_name: str = server_name or queue.config.resolved_server_name
        self._config = queue.config
        self._repository = queue.repository
        self._concurrency = concurrency
        self._channels = tuple(channels) if channels is not None else None
        self._running: dict[int, _Run] = {}
        self._wakeup = asyncio.Event()
        self._ready_hint = True
        self._next_due = math.inf  # loop time when a retry this worker scheduled is due
        self._stopping = False
        self._stop_grace: float | None = None
        self._hurry = asyncio.Event()  # a later stop() with a shorter grace cuts the wait short
        self._started = False
        self._done = asyncio.Event()
        self._writer: _Writer | None = None
        self._writer_job: asyncio.Task[None] | None = None
        self._watchdog_job: asyncio.Task[None] | None = None
        self._busy = asyncio.Event()  # set while tasks run: wakes the watchdog
        self._subscription: Subscription | None = None
        self._external_executor = executor
        self._executor: concurrent.futures.Executor | None = executor
        self._executor_size = 0
        self._signatures: dict[Callable[..., Any], tuple[inspect.Signature | None, bool]] = {}
        # Import-path references that passed their signature check, and argument shapes that
        # fit their function: both are pure functions of the key, so checking once is enough
        # (the same few functions run thousands of times).
        self._loaded: dict[tuple[str, str, str | None], Callable[..., Any]] = {}
        self._fitting: set[tuple[Callable[..., Any], int, tuple[str, ...]]] = set()

    # -- public state ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Task slots now (``concurrency``, or ``config.max_workers`` read live)."""
        return self._concurrency or self._config.max_workers

    @property
    def active(self) -> int:
        """Tasks running now."""
        return len(self._running)

    @property
    def idle(self) -> int:
        """Free slots now."""
        return max(0, self.capacity - len(self._running))

    @property
    def channels(self) -> tuple[str, ...] | None:
        """The channels claimed from (None: all)."""
        return self._channels if self._channels is not None else self._config.channels

    @property
    def running_task_ids(self) -> list[int]:
        """Ids of the tasks running now."""
        return list(self._running)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, burst: bool = False) -> None:
        """Claim and run tasks until ``stop()`` (or, with ``burst``, until nothing is ready and
        nothing runs: tasks scheduled for later are not waited for).

        On the way out every buffer is written. Cancelling ``run()`` stops at once: running
        tasks are put back ``enqueued`` (the cancellation is then re-raised). A repository
        error is retried with backoff; with ``burst`` a failed claim is raised instead.
        """
        if self._started:
            raise RuntimeError("a Worker runs once; create a new one")
        self._started = True
        try:
            await self._start()
            try:
                await self._claim_loop(burst)
            except BaseException:
                # Shielded: a second cancellation must not leave tasks claimed and unrecorded.
                closing = asyncio.create_task(self._shutdown(0.0), name="taskqueue-worker-abort")
                await asyncio.shield(closing)
                raise
            await self._shutdown(self._stop_grace)
        finally:
            self._done.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; give running tasks ``grace`` seconds (None: ``config.shutdown_grace``)
        to finish, then interrupt the rest and put them back ``enqueued`` (without counting an
        attempt); write every buffer. Returns when ``run()`` has returned. Idempotent."""
        if grace is not None and (not isinstance(grace, int | float) or grace < 0):
            raise ValueError(f"stop() grace must be a number of seconds >= 0, got {grace!r}")
        if not self._started:
            self._stopping = True
            return
        if not self._stopping:
            self._stop_grace = grace
            self._stopping = True
            self._wakeup.set()
        elif grace is not None and grace < (
            self._config.shutdown_grace if self._stop_grace is None else self._stop_grace
        ):
            # Already stopping, now in a hurry (a second SIGTERM): shorten the grace period.
            self._stop_grace = grace
            self._hurry.set()
        await self._done.wait()

    def wake(self) -> None:
        """Look for ready tasks now (for instance after ``config.max_workers`` was raised)."""
        self._ready_hint = True
        self._wakeup.set()

    # -- start and shutdown ----------------------------------------------------------------

    async def _start(self) -> None:
        install_task_sink()
        self._writer = _Writer(self._repository, self.server_name, self._live_contexts)
        self._writer_job = asyncio.create_task(
            self._writer.run(), name=f"taskqueue-worker-writer-{self.server_name}"
        )
        self._writer_job.add_done_callback(self._writer_ended)
        self._watchdog_job = asyncio.create_task(
            self._watchdog(), name=f"taskqueue-worker-watchdog-{self.server_name}"
        )
        self._watchdog_job.add_done_callback(self._watchdog_ended)
        await self._subscribe()

    async def _subscribe(self) -> None:
        try:
            self._subscription = await self._repository.subscribe(self._on_event)
        except Exception as exc:
            # Without events the worker still works: it polls and checks states.
            _log.warning("taskqueue worker could not subscribe to events ({}); polling", exc)
            self._subscription = None

    def _writer_ended(self, job: asyncio.Task[None]) -> None:
        if job.cancelled() or job.exception() is None:
            return
        # The writer never raises by design; if it does, outcomes can no longer be written,
        # so running on would only pile them up: stop claiming.
        _log.opt(exception=job.exception()).critical(
            "taskqueue worker writer crashed; the worker stops claiming"
        )
        self._stopping = True
        self._wakeup.set()

    def _watchdog_ended(self, job: asyncio.Task[None]) -> None:
        if job.cancelled() or job.exception() is None:
            return
        _log.opt(exception=job.exception()).critical(
            "taskqueue worker watchdog crashed; the worker stops claiming"
        )
        self._stopping = True
        self._wakeup.set()

    async def _shutdown(self, grace: float | None) -> None:
        self._stopping = True
        grace = self._config.shutdown_grace if grace is None else grace
        if self._running:
            jobs = {run.job for run in self._running.values() if run.job is not None}
            if grace > 0 and jobs and not self._hurry.is_set():
                finished = asyncio.create_task(asyncio.wait(jobs), name="taskqueue-worker-grace")
                hurried = asyncio.create_task(self._hurry.wait(), name="taskqueue-worker-hurry")
                await asyncio.wait(
                    {finished, hurried}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
                )
                finished.cancel()
                hurried.cancel()
            for run in list(self._running.values()):
                self._interrupt(run, _Interrupt.SHUTDOWN)
            left = {run.job for run in self._running.values() if run.job is not None}
            if left:
                # Interrupted jobs end at their next await (plain functions at once).
                await asyncio.wait(left, timeout=FINAL_FLUSH_TIMEOUT)
        if self._watchdog_job is not None:
            self._watchdog_job.cancel()
            await asyncio.wait({self._watchdog_job})
        if self._writer is not None and self._writer_job is not None:
            await self._writer.close(FINAL_FLUSH_TIMEOUT)
            await asyncio.wait({self._writer_job}, timeout=FINAL_FLUSH_TIMEOUT)
            if not self._writer_job.done():
                self._writer_job.cancel()
        if self._subscription is not None:
            try:
                await self._subscription.close()
            except Exception as exc:
                _log.warning("taskqueue worker could not close its subscription: {}", exc)
            self._subscription = None
        if self._executor is not None and self._external_executor is None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- claiming --------------------------------------------------------------------------

    def _notify_ok(self) -> bool:
        sub = self._subscription
        return sub is not None and sub.healthy and bool(self._repository.supports_notify)

    def _poll_interval(self) -> float:
        if self._notify_ok():
            return self._config.fallback_polling_interval
        return self._config.polling_interval

    async def _claim_loop(self, burst: bool) -> None:
        assert self._writer is not None
        writer = self._writer
        wakeup = self._wakeup
        running = self._running
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self._poll_interval()
        written_at_claim = -1
        failures = 0
        while not self._stopping:
            now = loop.time()
            if now >= self._next_due:
                # A retry this worker scheduled is due: no event announces it.
                self._next_due = math.inf
                self._ready_hint = True
            if now >= next_poll:
                self._ready_hint = True
                if self._subscription is None and not burst:
                    await self._subscribe()
                next_poll = now + self._poll_interval()
            free = self.capacity - len(running)
            if free > 0 and self._ready_hint:
                self._ready_hint = False
                wakeup.clear()
                written_at_claim = writer.outcomes_written
                try:
                    tasks = await self._repository.claim_tasks(
                        self.server_name, free, self.channels
                    )
                except (RepositoryError, OSError) as exc:
                    if burst:
                        raise
                    failures += 1
                    delay = min(0.1 * 2 ** min(failures, 10), 5.0)
                    _log.warning(
                        "taskqueue worker claim failed ({}); retrying in {:.1f}s", exc, delay
                    )
                    self._ready_hint = True
                    await self._wait(delay)
                    continue
                failures = 0
                if tasks:
                    hooks = self.queue.hooks
                    registered = (hooks.has(Moment.PRE_RUN), hooks.has(Moment.POST_RUN))
                    for task in tasks:
                        self._start_task(task, registered)
                if len(tasks) >= free:
                    self._ready_hint = True  # every free slot filled: more may be ready
                continue
            if burst and not running:
                if self._ready_hint:
                    continue
                # Completions may release children: write them, then claim once more.
                await writer.flush()
                if writer.outcomes_written != written_at_claim or self._ready_hint:
                    self._ready_hint = True
                    continue
                return
            await self._wait(min(next_poll, self._next_due) - now)

    async def _wait(self, seconds: float) -> None:
        """Wait for the wake-up event (and consume it), at most ``seconds``.

        The event only says "look again": what changed is in the worker's fields."""
        wakeup = self._wakeup
        if not wakeup.is_set():
            try:
                async with asyncio.timeout(max(seconds, 0.0)):
                    await wakeup.wait()
            except TimeoutError:
                pass
        wakeup.clear()

    def _on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "created":
            channels = self.channels
            if (
                channels is None
                or not event.channels
                or any(channel in channels for channel in event.channels)
            ):
                self._ready_hint = True
                self._wakeup.set()
        elif kind == "control":
            for task_id in event.task_ids:
                run = self._running.get(task_id)
                if run is not None:
                    self._interrupt(run, _Interrupt.CONTROL)

    async def _watchdog(self) -> None:
        """Interrupt tasks past their deadline; read running states when events may be lost."""
        loop = asyncio.get_running_loop()
        running = self._running
        next_check = loop.time() + STATE_CHECK_INTERVAL
        while True:
            if not running:
                self._busy.clear()
                await self._busy.wait()
                next_check = loop.time() + STATE_CHECK_INTERVAL
            await asyncio.sleep(WATCH_TICK)
            now = loop.time()
            default = self._config.task_timeout  # read live
            for run in list(running.values()):
                limit = run.task.timeout if run.task.timeout is not None else default
                if now - run.started >= limit and run.interrupt is None:
                    run.timeout = limit
                    self._interrupt(run, _Interrupt.TIMEOUT)
            if now >= next_check:
                next_check = now + STATE_CHECK_INTERVAL
                if running and not self._notify_ok():
                    await self._check_states()

    async def _check_states(self) -> None:
        ids = list(self._running)
        try:
            states = await self._repository.get_states(ids)
        except Exception as exc:
            _log.warning("taskqueue worker could not read running task states: {}", exc)
            return
        for task_id in ids:
            run = self._running.get(task_id)
            if run is not None and states.get(task_id) is not TaskState.DOING:
                self._interrupt(run, _Interrupt.CONTROL)

    def _interrupt(self, run: _Run, reason: _Interrupt) -> None:
        if run.interrupt is not None or run.job is None or run.job.done():
            return
        run.interrupt = reason
        run.job.cancel()

    # -- running ---------------------------------------------------------------------------

    def _start_task(self, task: Task, hooks: tuple[bool, bool]) -> None:
        """Load the task's function and start it as an asyncio task (or fail it at once)."""
        writer = self._writer
        assert writer is not None
        ref = task.function
        key = (ref.module_name or "", ref.function_name or "", ref.signature)
        try:
            found = self._loaded.get(key) if ref.serialized_function is None else None
            if found is None:
                found = self.queue.codec.load(ref)
                if ref.serialized_function is None:
                    if len(self._loaded) >= _SIGNATURE_CACHE_SIZE:
                        self._loaded.clear()
                    self._loaded[key] = found
            func = found
        except FunctionRefused as exc:
            writer.add_outcome(_failed(task, "FunctionRefused", exc.message, None))
            return
        except Exception as exc:
            message = f"the function of task {task.id} could not be loaded: {exc}"
            writer.add_outcome(_failed(task, type(exc).__name__, message, _trace(exc)))
            return
        signature, is_async = self._describe(func)
        shape = (func, len(task.args), tuple(task.kwargs))
        if signature is not None and shape not in self._fitting:
            try:
                signature.bind(*task.args, **task.kwargs)
            except TypeError as exc:
                message = (
                    f"the arguments of task {task.id} do not match "
                    f"{_callable_name(func)}{signature}: {exc}"
                )
                writer.add_outcome(_failed(task, "TypeError", message, None))
                return
            if len(self._fitting) >= _SIGNATURE_CACHE_SIZE:
                self._fitting.clear()
            self._fitting.add(shape)
        context = TaskContext(task.id, copy_json(task.context), writer)
        run = _Run(task, func, is_async, context, self._loop_time(), hooks)
        if not self._running:
            self._busy.set()
        self._running[task.id] = run
        job = asyncio.create_task(self._execute(run), name=f"taskqueue-task-{task.id}")
        run.job = job
        job.add_done_callback(self._job_done)

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
        if len(self._signatures) >= _SIGNATURE_CACHE_SIZE:
            self._signatures.clear()
        self._signatures[func] = (signature, is_async)
        return signature, is_async

    def _job_done(self, job: asyncio.Task[None]) -> None:
        # _execute handles every error itself; anything escaping it is a bug worth seeing.
        if not job.cancelled() and job.exception() is not None:
            _log.opt(exception=job.exception()).error(
                "taskqueue worker: {} crashed", job.get_name()
            )

    async def _execute(self, run: _Run) -> None:
        """Run one task in its own asyncio task and queue its outcome."""
        task = run.task
        activate(run.context)
        hooks = self.queue.hooks
        result: Any = None
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            if run.hooks[0]:
                # Hooks see the live context through task.context and may change it.
                task = _with_context(task, run.context)
                await hooks.run_pre_run(task)
                run.context.version += 1
            if run.is_async:
                result = await run.func(*task.args, **task.kwargs)
            else:
                result = await self._call_in_thread(run)
        except asyncio.CancelledError as exc:
            error = exc
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()  # handled here: the job goes on to record its end
                if run.interrupt is None:
                    run.interrupt = _Interrupt.SHUTDOWN
        except BaseException as exc:
            error = exc
        elapsed = time.perf_counter() - start
        if run.hooks[1]:
            seen: BaseException | None = error
            if run.interrupt is _Interrupt.TIMEOUT and isinstance(error, asyncio.CancelledError):
                # What the task's record will say, not the mechanism that interrupted it.
                seen = TimeoutError(f"task {task.id} exceeded its timeout of {run.timeout:g} s")
            try:
                await hooks.run_post_run(task, result, seen)
            except asyncio.CancelledError:
                # Interrupted while in the hooks: the task's own end is what counts.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    current.uncancel()
                if run.interrupt is None:
                    run.interrupt = _Interrupt.SHUTDOWN
        self._finish(run, result, error, elapsed)

    async def _call_in_thread(self, run: _Run) -> Any:
        """Run a plain function in the thread pool, in a copy of the task's context."""
        call = _ThreadCall(run.func, run.task.args, run.task.kwargs)
        future = asyncio.get_running_loop().run_in_executor(
            self._thread_pool(), contextvars.copy_context().run, call
        )
        try:
            result = await future
        except BaseException:
            # Interrupted (timeout, control, shutdown): the thread cannot be, so leave it.
            self._abandon(call)
            raise
        if inspect.isawaitable(result):
            # A plain callable that returned an awaitable (e.g. a partial of a coroutine
            # function): finish it on the loop.
            result = await result
        return result

    def _thread_pool(self) -> concurrent.futures.Executor:
        if self._external_executor is not None:
            return self._external_executor
        size = self.capacity
        if self._executor is None or self._executor_size < size:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix=f"taskqueue-worker-{self.server_name}"
            )
            self._executor_size = size
        return self._executor

    def _abandon(self, call: _ThreadCall) -> None:
        if self._external_executor is not None or not call.started or call.finished:
            return  # not running (never started, or done): nothing is left behind
        _log.warning(
            "taskqueue worker: a plain task function is still running in its thread after its "
            "task ended (timeout or interruption); new calls go to a fresh thread pool"
        )
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def _finish(self, run: _Run, result: Any, error: BaseException | None, elapsed: float) -> None:
        task = run.task
        writer = self._writer
        assert writer is not None
        context = run.context.close()
        del self._running[task.id]
        if run.interrupt is _Interrupt.CONTROL:
            # Cancelled or stopped: the repository wrote the final state; keep only its data.
            if context is not None:
                writer.add_context(task.id, context)
        elif run.interrupt is _Interrupt.SHUTDOWN and isinstance(error, asyncio.CancelledError):
            writer.add_outcome(
                Outcome(
                    task.id,
                    TaskState.ENQUEUED,
                    count_attempt=False,
                    execution_time=elapsed,
                    context=context,
                    error_name="WorkerShutdown",
                    error_message="the worker stopped before the task finished; it runs again",
                )
            )
        elif error is None:
            problem = _json_problem(result)
            if problem is None:
                writer.add_outcome(
                    Outcome(
                        task.id,
                        TaskState.DONE,
                        result=result,
                        execution_time=elapsed,
                        context=context,
                    )
                )
            else:
                message = f"the result of task {task.id} is not JSON: {problem}"
                writer.add_outcome(
                    _failed(task, "ArgumentNotSerializable", message, None, elapsed, context)
                )
        elif run.interrupt is _Interrupt.TIMEOUT and isinstance(error, asyncio.CancelledError):
            where = (
                ""
                if run.is_async
                else (
                    "; its function runs in a thread that cannot be interrupted: the thread runs "
                    "on and its result is discarded"
                )
            )
            message = f"task {task.id} exceeded its timeout of {run.timeout:g} s{where}"
            writer.add_outcome(
                self._failure(task, "TimeoutError", message, _trace(error), elapsed, context)
            )
        else:
            writer.add_outcome(
                self._failure(
                    task, type(error).__name__, str(error), _trace(error), elapsed, context
                )
            )
        self._wakeup.set()

    def _failure(
        self,
        task: Task,
        name: str,
        message: str,
        info: str | None,
        elapsed: float,
        context: dict[str, Any] | None,
    ) -> Outcome:
        """Retry later (backoff with jitter) while attempts are left, else fail for good."""
        if task.retry_count < task.max_retries:
            base = self._config.retry_backoff * 2.0 ** min(task.retry_count, 60)
            delay = min(base * random.uniform(0.8, 1.2), self._config.retry_backoff_max)
            # Wake up for it (plus a little for the outcome's write to land).
            self._next_due = min(self._next_due, self._loop_time() + delay + 0.01)
            return Outcome(
                task.id,
                TaskState.ENQUEUED,
                error_name=name,
                error_message=message,
                error_info=info,
                retry_at=datetime.now(UTC) + timedelta(seconds=delay),
                execution_time=elapsed,
                context=context,
            )
        return _failed(task, name, message, info, elapsed, context)

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _live_contexts(self) -> Iterable[TaskContext]:
        return [run.context for run in self._running.values()]


class _Writer:
    """Writes a worker's outcomes, context changes and log lines in batches.

    One asyncio task (``run``) does every write, so at most one write of each kind is in
    flight and whatever arrives meanwhile joins the next call. A round writes log lines,
    then contexts (dirty live ones every ``CONTEXT_PERIOD``, and final ones of interrupted
    tasks), then outcomes. Repository errors are retried with backoff (the data is kept);
    other errors drop the batch with a logged error (retrying could never succeed).
    """

    def __init__(
        self,
        repository: Any,
        server_name: str,
        live_contexts: Callable[[], Iterable[TaskContext]],
    ) -> None:
        self._repository = repository
        self._server_name = server_name
        self._live_contexts = live_contexts
        self._outcomes: list[Outcome] = []
        self._contexts: dict[int, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._ended = False
        self._deadline: float | None = None
        self.logs = LogBuffer(batch_size=LOG_BATCH, on_batch=self.commit_soon)
        self.outcomes_written = 0
        """Outcomes handed to ``complete_tasks`` so far (a change means children may be ready)."""

    # -- producers (ContextWriter protocol and the worker) -------------------------------

    def add_outcome(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._wake.set()

    def add_context(self, task_id: int, context: dict[str, Any]) -> None:
        self._contexts[task_id] = context
        self._wake.set()

    def add_log(self, record: NewLogRecord) -> None:
        self.logs.add(record)

    def commit_soon(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def flush(self) -> None:
        """Wait until everything buffered now is written (or given up at close). Returns at
        once if the writer has ended."""
        if self._ended:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._wake.set()
        await waiter

    async def close(self, give_up_after: float) -> None:
        """Write everything still buffered (giving up after ``give_up_after`` seconds of
        failing writes) and end ``run``."""
        self._closing = True
        self._deadline = self._loop.time() + give_up_after
        await self.flush()

    # -- the writing task ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Nobody may wait forever on a writer that is gone.
            self._ended = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _run(self) -> None:
        wake = self._wake
        while True:
            if not wake.is_set():
                try:
                    async with asyncio.timeout(CONTEXT_PERIOD):
                        await wake.wait()
                except TimeoutError:
                    pass
            wake.clear()
            waiters, self._waiters = self._waiters, []
            try:
                await self._write_round()
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            if self._closing and not self._pending():
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                return

    def _pending(self) -> bool:
        return bool(self._outcomes or self._contexts or len(self.logs))

    async def _write_round(self) -> None:
        count = len(self.logs)
        while count > 0:
            batch = self.logs.drain(min(count, LOG_BATCH))
            count -= LOG_BATCH
            if batch:
                await self._call("append_logs", self._repository.append_logs, batch)
        contexts = self._contexts
        for ctx in self._live_contexts():
            if ctx.dirty:
                contexts[ctx.task_id] = ctx.snapshot()
        if contexts:
            self._contexts = {}
            await self._call("update_contexts", self._repository.update_contexts, contexts)
        while self._outcomes:
            outcomes = self._outcomes[:OUTCOME_BATCH]
            del self._outcomes[:OUTCOME_BATCH]
            self.outcomes_written += len(outcomes)
            await self._call(
                "complete_tasks", self._repository.complete_tasks, self._server_name, outcomes
            )

    async def _call(self, what: str, method: Callable[..., Any], *args: Any) -> None:
        failures = 0
        while True:
            try:
                await method(*args)
                return
            except (RepositoryError, OSError) as exc:
                failures += 1
                delay = min(0.05 * 2 ** min(failures, 10), 5.0)
                if self._deadline is not None and self._loop.time() + delay > self._deadline:
                    _log.error(
                        "taskqueue worker gave up writing {} on shutdown: {} (running tasks "
                        "are rescued by the reaper)",
                        what,
                        exc,
                    )
                    return
                _log.warning(
                    "taskqueue worker: {} failed ({}); retrying in {:.2f}s", what, exc, delay
                )
                await asyncio.sleep(delay)
            except Exception as exc:
                _log.opt(exception=exc).error(
                    "taskqueue worker: {} raised an unexpected error; this batch is dropped", what
                )
                return


def _with_context(task: Task, context: TaskContext) -> Task:
    import dataclasses

    return dataclasses.replace(task, context=context.data)


def _failed(
    task: Task,
    name: str,
    message: str,
    info: str | None,
    elapsed: float | None = None,
    context: dict[str, Any] | None = None,
) -> Outcome:
    return Outcome(
        task.id,
        TaskState.FAILED,
        error_name=name,
        error_message=message,
        error_info=info,
        execution_time=elapsed,
        context=context,
    )


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _callable_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


def _json_problem(value: Any) -> str | None:
    """None if ``value`` is JSON, else what is wrong (naming the offending type)."""
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a JSON number"
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__} value: {exc}"
    return None
