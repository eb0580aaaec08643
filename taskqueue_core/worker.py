"""Worker: claims, runs and completes tasks for one process.

The hot path, and how it stays cheap:

- **Claims** take every task the worker has room for in ONE ``claim_tasks`` call, and only
  when more work may be ready (the last claim was full, a ``created`` event arrived, a poll
  or a scheduled task is due), so a quiet queue costs no query per finished task. A claim is
  an asyncio task of its own and up to ``CLAIMS_IN_FLIGHT`` run at once, each on its own
  connection: a claim's round trip overlaps the next one's instead of leaving the slots idle.
- **Claiming ahead**: the worker holds claimed tasks beyond its free slots, as many as its
  slots would start in ``PREFETCH_HORIZON`` (0.05 s) at the recent average run time, at most
  ``PREFETCH_LIMIT`` per slot, and claims again once a quarter of them have started
  (``LOW_WATER``). A slot that frees then starts the next task at once, and short tasks are
  claimed in big batches (fewer statements per task). Slow tasks are claimed for free slots only
  (with 10 slots, tasks of 0.5 s or more: whichever worker is free gets them), and so is a
  worker's first claim. Claimed tasks that have not started are handed back (without
  counting an attempt) when the worker stops, and dropped if an admin cancels them.
- **Runs**: a coroutine function runs as a named asyncio task; a plain function runs in a
  thread (``ThreadRunner``) inside a copy of the task's ``contextvars`` context, so
  ``set_context``, loggers and whatever the ``pre_run`` hooks set reach it.
  Functions come from ``queue.codec.load``, once per reference (``Runnables``); a refused
  reference, or arguments that do not fit, fail the task before any of its code runs.
- **Completions, context changes and log lines** go through the worker's ``BatchWriter``:
  one write in flight, everything that piles up meanwhile in the next single call. A slot is
  free as soon as its task ends, not when its outcome is stored; the worker stops claiming
  while ``MAX_UNWRITTEN`` outcomes wait to be written.
- **Idle**: the worker sleeps until an event, its poll (``polling_interval``, or
  ``fallback_polling_interval`` while events arrive), or the moment the next scheduled task
  is due (``TaskRepository.next_due``), whichever comes first, so a delayed task starts on
  time without polling often.

Outcomes: a JSON result -> ``done``; an exception (a timeout included) -> ``enqueued`` again
after ``retry_backoff * 2**retry_count`` seconds (+-20 % jitter, at most
``retry_backoff_max``) while ``retry_count < max_retries``, then ``failed`` with the
exception's name, message and traceback text. A result that is not JSON, a function that no
longer resolves or whose signature does not match, and arguments that do not fit the
function's parameters fail at once, without retries (running again would not help).

Timeouts (``task.timeout``, else ``config.task_timeout`` read live) and admin changes that
no event announced are the ``Watchdog``'s; the interrupted task fails with ``TimeoutError``
and the traceback of where it was waiting.

Control: ``control`` events (an admin cancelled or stopped a running task) interrupt the
task's asyncio task at once. The repository already wrote the final state, so the worker
writes no outcome for such a task (only its pending context and log lines).

A plain function cannot be interrupted: its call is abandoned, the task ends without it and
its slot is freed at once (``ThreadRunner``, in ``threads``, says what becomes of the thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import random
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger as _loguru

from taskqueue_core.attempt import (
    Attempt,
    Interrupt,
    done_outcome,
    error_text,
    failed,
    result_problem,
    trace,
)
from taskqueue_core.context import TaskContext, activate, copy_json
from taskqueue_core.exceptions import RepositoryError
from taskqueue_core.hooks import Moment
from taskqueue_core.logging import INTERNAL_KEY, install_task_sink
from taskqueue_core.models import Event, Outcome, Task, TaskState
from taskqueue_core.repository import Subscription
from taskqueue_core.runnables import Runnables
from taskqueue_core.threads import ThreadRunner
from taskqueue_core.watchdog import STATE_CHECK_INTERVAL, WATCH_TICK, Watchdog
from taskqueue_core.writer import CONTEXT_PERIOD, LOG_BATCH, OUTCOME_BATCH, BatchWriter

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = [
    "CLAIMS_IN_FLIGHT",
    "CLAIM_PARTS",
    "CONTEXT_PERIOD",
    "FINAL_FLUSH_TIMEOUT",
    "LOG_BATCH",
    "LOW_WATER",
    "MAX_UNWRITTEN",
    "OUTCOME_BATCH",
    "PREFETCH_HORIZON",
    "PREFETCH_LIMIT",
    "STATE_CHECK_INTERVAL",
    "WATCH_TICK",
    "Worker",
]

_log = _loguru.bind(**{INTERNAL_KEY: True})

FINAL_FLUSH_TIMEOUT = 10.0
"""Seconds a stopping worker keeps trying to write its buffers before giving up."""

PREFETCH_HORIZON = 0.05
"""Seconds of work (at the recent run time) a worker holds claimed ahead of its free slots."""

PREFETCH_LIMIT = 8
"""Most tasks held claimed ahead, per slot (reached by tasks that run in 6 ms or less)."""

LOW_WATER = 75
"""The worker claims again when at most this percentage of its tasks held ahead is left."""

CLAIM_PARTS = 4
"""A claim fills at least this share (1/CLAIM_PARTS) of the tasks held ahead: no tiny claims."""

CLAIMS_IN_FLIGHT = 2
"""Claims a worker has in flight at once (each on its own connection): one overlaps the other's
round trip, so the slots do not idle while a claim is on its way."""

MAX_UNWRITTEN = 2 * OUTCOME_BATCH
"""Outcomes waiting to be written beyond which the worker claims nothing more."""

DUE_SLACK = 0.002
"""Seconds added to a scheduled task's due time before claiming it (clocks and rounding)."""

_RUN_TIME_WEIGHT = 0.1  # weight of the newest run time in the moving average


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
        self._running: dict[int, Attempt] = {}
        self._waiting: deque[Task] = deque()  # claimed ahead, not started yet (claim order)
        self._low_water = 0  # claim again when this few claimed tasks are left waiting
        self._registered = (False, False)  # any pre_run / post_run hook, as of the last claim
        self._held_back = False  # claims wait for the writer to catch up
        self._claims: set[asyncio.Task[None]] = set()  # claims in flight
        self._reserved = 0  # places the claims in flight may fill
        self._claim_failures = 0
        self._claim_after = 0.0  # loop time before which no claim starts (after a failure)
        self._claim_error: BaseException | None = None  # raised by a burst run
        self._run_time: float | None = None  # moving average of recent run times (seconds)
        self._wakeup = asyncio.Event()
        self._ready_hint = True
        self._next_due = math.inf  # loop time when a retry this worker scheduled is due
        self._due_at = math.inf  # loop time when the next scheduled task is due (next_due)
        self._due_stale = True  # something may have changed next_due since it was read
        self._stopping = False
        self._stop_grace: float | None = None
        self._hurry = asyncio.Event()  # a later stop() with a shorter grace cuts the wait short
        self._started = False
        self._done = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: BatchWriter | None = None
        self._writer_job: asyncio.Task[None] | None = None
        self._watchdog: Watchdog | None = None
        self._watchdog_job: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._threads = ThreadRunner(
            executor, thread_name_prefix=f"taskqueue-worker-{self.server_name}"
        )
        self._runnables = Runnables(queue.codec)

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
        """Ids of the tasks this worker holds: running, and claimed ahead of a free slot."""
        return [*self._running, *(task.id for task in self._waiting)]

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
        self._due_stale = True
        self._wakeup.set()

    # -- start and shutdown ----------------------------------------------------------------

    async def _start(self) -> None:
        install_task_sink()
        self._loop = asyncio.get_running_loop()
        self._writer = BatchWriter(
            self._repository, self.server_name, self._live_contexts, on_written=self._on_written
        )
        self._writer_job = asyncio.create_task(
            self._writer.run(), name=f"taskqueue-worker-writer-{self.server_name}"
        )
        self._writer_job.add_done_callback(self._helper_ended)
        self._watchdog = Watchdog(
            self._running, self._config, self._repository, self._interrupt, self._notify_ok
        )
        self._watchdog_job = asyncio.create_task(
            self._watchdog.run(), name=f"taskqueue-worker-watchdog-{self.server_name}"
        )
        self._watchdog_job.add_done_callback(self._helper_ended)
        await self._subscribe()

    async def _subscribe(self) -> None:
        try:
            self._subscription = await self._repository.subscribe(self._on_event)
        except Exception as exc:
            # Without events the worker still works: it polls and checks states.
            _log.warning("taskqueue worker could not subscribe to events ({}); polling", exc)
            self._subscription = None

    def _helper_ended(self, job: asyncio.Task[None]) -> None:
        if job.cancelled() or job.exception() is None:
            return
        # Writer and watchdog never raise by design. Without the writer outcomes can no
        # longer be written, without the watchdog timeouts no longer fire: stop claiming.
        _log.opt(exception=job.exception()).critical(
            "taskqueue worker: {} crashed; the worker stops claiming", job.get_name()
        )
        self._stopping = True
        self._wakeup.set()

    async def _shutdown(self, grace: float | None) -> None:
        self._stopping = True
        grace = self._config.shutdown_grace if grace is None else grace
        if self._claims:
            # Their tasks join the waiting ones (the worker is stopping: none starts).
            await asyncio.wait(set(self._claims), timeout=FINAL_FLUSH_TIMEOUT)
        self._hand_back_waiting()
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
                self._interrupt(run, Interrupt.SHUTDOWN)
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
        self._threads.shutdown()

    def _hand_back_waiting(self) -> None:
        """Put the tasks claimed ahead back ``enqueued``: they never started, so no attempt
        counts and no error is recorded (a previous attempt's error stays on display)."""
        writer = self._writer
        while self._waiting:
            task = self._waiting.popleft()
            if writer is not None:
                writer.add_outcome(Outcome(task.id, TaskState.ENQUEUED, count_attempt=False))

    # -- claiming --------------------------------------------------------------------------

    def _notify_ok(self) -> bool:
        sub = self._subscription
        return sub is not None and sub.healthy and bool(self._repository.supports_notify)

    def _poll_interval(self) -> float:
        if self._notify_ok():
            return self._config.fallback_polling_interval
        return self._config.polling_interval

    def _prefetch(self, capacity: int) -> int:
        """How many tasks to hold claimed beyond the free slots (see the module docstring):
        enough to keep every slot busy for ``PREFETCH_HORIZON`` at the recent run time, at
        most ``PREFETCH_LIMIT`` per slot, none until a run time is known."""
        run_time = self._run_time
        if run_time is None:
            return 0
        ahead = capacity * PREFETCH_LIMIT
        if run_time * PREFETCH_LIMIT > PREFETCH_HORIZON:
            ahead = int(capacity * PREFETCH_HORIZON / run_time)
        return ahead

    async def _claim_loop(self, burst: bool) -> None:
        writer = self._writer
        assert writer is not None and self._loop is not None
        wakeup = self._wakeup
        running = self._running
        loop = self._loop
        next_poll = loop.time() + self._poll_interval()
        written_at_claim = -1
        while not self._stopping:
            if self._claim_error is not None:
                error, self._claim_error = self._claim_error, None
                if burst:
                    raise error
            now = loop.time()
            if now >= self._next_due:
                # A retry this worker scheduled is due: no event announces it.
                self._next_due = math.inf
                self._ready_hint = True
            if now >= self._due_at:
                self._due_at = math.inf
                self._due_stale = True
                self._ready_hint = True
            if now >= next_poll:
                self._ready_hint = True
                self._due_stale = True
                if self._subscription is None and not burst:
                    await self._subscribe()
                next_poll = now + self._poll_interval()
            capacity = self.capacity
            prefetch = self._prefetch(capacity)
            waiting = len(self._waiting)
            room = capacity + prefetch - len(running) - waiting - self._reserved
            if (
                room >= max(1, prefetch // CLAIM_PARTS)
                and self._ready_hint
                and waiting <= prefetch * LOW_WATER // 100
                and len(self._claims) < CLAIMS_IN_FLIGHT
                and now >= self._claim_after
                and writer.pending_outcomes < MAX_UNWRITTEN
            ):
                self._ready_hint = False
                wakeup.clear()
                written_at_claim = writer.outcomes_written
                self._low_water = prefetch * LOW_WATER // 100
                self._reserved += room
                claim = loop.create_task(
                    self._claim(room, burst), name=f"taskqueue-worker-claim-{self.server_name}"
                )
                self._claims.add(claim)
                claim.add_done_callback(self._claim_done)
                continue
            if burst and not running and not self._waiting and not self._claims:
                if self._ready_hint:
                    continue
                # Completions may release children: write them, then claim once more.
                await writer.flush()
                if writer.outcomes_written != written_at_claim or self._ready_hint:
                    self._ready_hint = True
                    continue
                return
            # Too many outcomes unwritten: claim again once the writer caught up.
            self._held_back = writer.pending_outcomes >= MAX_UNWRITTEN
            wake_at = min(next_poll, self._next_due, self._due_at)
            if self._ready_hint and now < self._claim_after:
                wake_at = min(wake_at, self._claim_after)
            await self._wait(wake_at - now)

    async def _claim(self, limit: int, burst: bool) -> None:
        """One claim of up to ``limit`` tasks (its own asyncio task: claims overlap)."""
        assert self._loop is not None
        try:
            tasks = await self._repository.claim_tasks(self.server_name, limit, self.channels)
        except (RepositoryError, OSError) as exc:
            self._claim_failures += 1
            delay = min(0.1 * 2 ** min(self._claim_failures, 10), 5.0)
            if not burst:
                _log.warning("taskqueue worker claim failed ({}); retrying in {:.1f}s", exc, delay)
            self._claim_error = exc
            self._claim_after = self._loop.time() + delay
            self._ready_hint = True
            return
        finally:
            # Settled before the claim loop wakes: it must not see this claim in flight.
            self._claims.discard(asyncio.current_task())
            self._reserved -= limit
            self._wakeup.set()
        self._claim_failures = 0
        if tasks:
            self._accept(tasks)
        if len(tasks) >= limit:
            self._ready_hint = True  # every place filled: more may be ready
        elif self._due_stale and not burst:
            if tasks:
                # Let the tasks just started run first: sending the query would delay them.
                await asyncio.sleep(0)
            await self._read_next_due()

    def _claim_done(self, claim: asyncio.Task[None]) -> None:
        self._claims.discard(claim)
        # _claim handles repository errors itself; anything else is a bug: stop claiming.
        if not claim.cancelled() and claim.exception() is not None:
            self._helper_ended(claim)

    def _accept(self, tasks: list[Task]) -> None:
        """Queue the claimed tasks behind those already waiting and start what fits."""
        hooks = self.queue.hooks
        self._registered = (hooks.has(Moment.PRE_RUN), hooks.has(Moment.POST_RUN))
        running = self._running
        waiting = self._waiting
        held = {task.id for task in waiting} if waiting else ()
        for task in tasks:
            if task.id in running or task.id in held:
                # Claimed again while held here: the earlier claim was lost in a database
                # crash (claims commit asynchronously). The attempt already held is the one
                # that counts, and its outcome applies to this claim.
                continue
            waiting.append(task)
        if not self._stopping:
            self._start_waiting()

    def _start_waiting(self) -> None:
        """Start claimed tasks while there are free slots."""
        waiting = self._waiting
        capacity = self.capacity
        while waiting and len(self._running) < capacity:
            self._start_task(waiting.popleft(), self._registered)

    async def _read_next_due(self) -> None:
        """Learn when the next scheduled task is due, to wake up for it (see ``next_due``)."""
        assert self._loop is not None
        self._due_stale = False
        try:
            due = await self._repository.next_due(self.channels)
        except (RepositoryError, OSError) as exc:
            _log.warning("taskqueue worker could not read the next due time: {}", exc)
            return
        if due is None:
            self._due_at = math.inf
            return
        seconds = (due - datetime.now(UTC)).total_seconds()
        self._due_at = self._loop.time() + max(seconds, 0.0) + DUE_SLACK
        self._wakeup.set()  # the claim loop may be asleep with an older due time

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
                self._due_stale = True
                self._wakeup.set()
        elif kind == "control":
            dropped = set(event.task_ids)
            if self._waiting and any(task.id in dropped for task in self._waiting):
                # Cancelled or stopped before it started: its state is already final.
                self._waiting = deque(t for t in self._waiting if t.id not in dropped)
                self._wakeup.set()
            for task_id in event.task_ids:
                run = self._running.get(task_id)
                if run is not None:
                    self._interrupt(run, Interrupt.CONTROL)

    def _on_written(self) -> None:
        if self._held_back:
            self._held_back = False
            self._wakeup.set()

    def _interrupt(self, run: Attempt, reason: Interrupt) -> None:
        if run.interrupt is not None or run.job is None or run.job.done():
            return
        run.interrupt = reason
        run.job.cancel()

    # -- running ---------------------------------------------------------------------------

    def _start_task(self, task: Task, hooks: tuple[bool, bool]) -> None:
        """Load the task's function and start it as an asyncio task (or fail it at once)."""
        writer = self._writer
        assert writer is not None and self._loop is not None
        runnable = self._runnables.of(task)
        if isinstance(runnable, Outcome):
            writer.add_outcome(runnable)  # it cannot run: fails at once
            return
        func, is_async = runnable
        context = TaskContext(task.id, copy_json(task.context), writer)
        run = Attempt(task, func, is_async, context, self._loop.time(), hooks)
        if not self._running:
            assert self._watchdog is not None
            self._watchdog.wake()
        self._running[task.id] = run
        run.job = self._loop.create_task(self._execute(run), name=f"taskqueue-task-{task.id}")

    async def _execute(self, run: Attempt) -> None:
        """Run one task in its own asyncio task and queue its outcome."""
        task = run.task
        activate(run.context)
        result: Any = None
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            if run.hooks[0]:
                # Hooks see the live context through task.context and may change it.
                task = dataclasses.replace(task, context=run.context.data)
                await self.queue.hooks.run_pre_run(task)
                run.context.version += 1
            if run.is_async:
                result = await run.func(*task.args, **task.kwargs)
            else:
                result = await self._threads.call(
                    run.func, run.task.args, run.task.kwargs, self.capacity
                )
        except asyncio.CancelledError as exc:
            error = exc
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()  # handled here: the job goes on to record its end
                if run.interrupt is None:
                    run.interrupt = Interrupt.SHUTDOWN
        except BaseException as exc:
            error = exc
        elapsed = time.perf_counter() - start
        if run.hooks[1]:
            seen: BaseException | None = error
            if run.interrupt is Interrupt.TIMEOUT and isinstance(error, asyncio.CancelledError):
                # What the task's record will say, not the mechanism that interrupted it.
                seen = TimeoutError(f"task {task.id} exceeded its timeout of {run.timeout:g} s")
            try:
                await self.queue.hooks.run_post_run(task, result, seen)
            except asyncio.CancelledError:
                # Interrupted while in the hooks: the task's own end is what counts.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    current.uncancel()
                if run.interrupt is None:
                    run.interrupt = Interrupt.SHUTDOWN
        try:
            self._finish(run, result, error, elapsed)
        except Exception as exc:
            # Everything above handles its errors; one escaping here is a bug worth seeing.
            # (Logged here rather than by a done callback, which would cost every task a
            # scheduled call.)
            _log.opt(exception=exc).error(
                "taskqueue worker: task {} crashed while recording its end", task.id
            )

    def _finish(
        self, run: Attempt, result: Any, error: BaseException | None, elapsed: float
    ) -> None:
        task = run.task
        writer = self._writer
        assert writer is not None
        del self._running[task.id]
        average = self._run_time
        self._run_time = (
            elapsed if average is None else average + (elapsed - average) * _RUN_TIME_WEIGHT
        )
        try:
            outcome = self._outcome(run, result, error, elapsed)
        except Exception as exc:
            # A bug in recording the end must not leave the task `doing`: the reaper takes back
            # the tasks of dead servers only, and a server's check of its own tasks (servers)
            # takes two of its rounds (a bare Worker has none). The task fails, or is retried,
            # at once with what went wrong; its context is lost with the bug.
            _log.opt(exception=exc).error(
                "taskqueue worker: recording the end of task {} failed", task.id
            )
            outcome = self._failure(
                task,
                "WorkerError",
                f"the worker could not record the end of task {task.id}: "
                f"{type(exc).__name__}: {error_text(exc)}",
                trace(exc),
                elapsed,
                None,
            )
        if outcome is not None:
            writer.add_outcome(outcome)
        # The slot is free: the next task claimed ahead starts now, without a round trip.
        if self._waiting and not self._stopping:
            self._start_waiting()
        if len(self._waiting) <= self._low_water:
            self._wakeup.set()

    def _outcome(
        self, run: Attempt, result: Any, error: BaseException | None, elapsed: float
    ) -> Outcome | None:
        """What ``run``'s end writes: its outcome, or None when a cancel or stop already
        wrote the final state (its context is then queued on its own)."""
        task = run.task
        # Only a pre-run hook is given the live context (as ``task.context``) and could keep
        # it: then the final context is a copy; otherwise no one else holds it.
        context = run.context.close(copy=bool(run.hooks[0]))
        if run.interrupt is Interrupt.CONTROL:
            # Cancelled or stopped: the repository wrote the final state; keep only its data.
            if context is not None:
                assert self._writer is not None
                self._writer.add_context(task.id, context)
            return None
        if run.interrupt is Interrupt.SHUTDOWN and isinstance(error, asyncio.CancelledError):
            return Outcome(
                task.id,
                TaskState.ENQUEUED,
                count_attempt=False,
                execution_time=elapsed,
                context=context,
                error_name="WorkerShutdown",
                error_message="the worker stopped before the task finished; it runs again",
            )
        if error is None:
            problem = result_problem(result, task.id)
            if problem is None:
                return done_outcome(task.id, result, elapsed, context)
            return failed(task, "ArgumentNotSerializable", problem, None, elapsed, context)
        if run.interrupt is Interrupt.TIMEOUT and isinstance(error, asyncio.CancelledError):
            where = (
                ""
                if run.is_async
                else (
                    "; its function runs in a thread that cannot be interrupted: the thread runs "
                    "on and its result is discarded"
                )
            )
            message = f"task {task.id} exceeded its timeout of {run.timeout:g} s{where}"
            return self._failure(task, "TimeoutError", message, trace(error), elapsed, context)
        return self._failure(
            task, type(error).__name__, error_text(error), trace(error), elapsed, context
        )

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
            assert self._loop is not None
            self._next_due = min(self._next_due, self._loop.time() + delay + 0.01)
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
        return failed(task, name, message, info, elapsed, context)

    def _live_contexts(self) -> Iterable[TaskContext]:
        return [run.context for run in self._running.values()]
