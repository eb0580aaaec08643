"""WorkerPool: the worker, its slots, its server row and its shutdown, for one or P processes.

What a *slot* is, concretely: one thread of the pool's ``SlotExecutor``, the executor that
runs plain (sync) task functions. Async task functions run on the event loop and need no
thread; the worker's concurrency (``config.max_workers``, read live) caps how many tasks of
either kind run at once. Slots come and go with demand:

- a sync task takes the most recently idle slot, or starts a new one while fewer than
  ``config.max_workers`` exist (read at each start, so raising it at run time takes effect
  at once and lowering it retires the surplus as they finish);
- a slot idle for ``config.worker_idle_timeout`` seconds (read live) retires: its thread
  exits. Reusing the most recently idle slot first lets the others actually reach their
  timeout under a light load;
- a slot whose call was abandoned (the task timed out, or was cancelled or stopped, but a
  sync function cannot be interrupted) stops counting as a slot: a fresh one can start, so
  a function that blocks its thread forever never starves the pool. The stray thread is a
  daemon; it finishes when the function returns, or dies with the process.

The heartbeat reports ``active_workers`` = tasks running now (async and sync) and
``idle_workers`` = idle slots (never more than ``max_workers - active``).

The pool around them (``WorkerPool``), for one process:

- a ``Worker`` claims and runs tasks in up to ``max_workers`` slots; if it crashes it is
  replaced after a growing delay. Its claim loop and writer retry database errors with
  backoff and keep what they could not write, so a database restart needs no restart here;
- a ``Server`` (``taskqueue_core.servers``) registers the process, heartbeats and takes part
  in the reaper election; a failing heartbeat is logged and retried, never fatal;
- a stop (``stop()``, the end of ``async with``, SIGTERM/SIGINT when the pool owns the
  signals) stops claiming, gives running tasks ``shutdown_grace`` seconds, hands the rest
  back without counting an attempt, writes every buffer (outcomes, contexts, log lines and
  pending ``add_task`` creations) and unregisters, in that order: the server heartbeats
  until the very end, so a long grace period never gets the process declared dead. A second
  request with a shorter grace (a second signal: 0) hurries the stop in progress.

With ``processes=P`` the pool supervises P such processes instead
(``taskqueue_core.processes``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import importlib
import itertools
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from loguru import logger as _loguru

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_core.logging import INTERNAL_KEY
from taskqueue_core.servers import Server

if TYPE_CHECKING:
    from taskqueue_core.processes import ProcessSupervisor
    from taskqueue_core.queue import TaskQueue
    from taskqueue_core.worker import Worker

__all__ = ["SlotExecutor", "WorkerPool"]

_log = _loguru.bind(**{INTERNAL_KEY: True})

_P = ParamSpec("_P")
_T = TypeVar("_T")

_IDLE_CHECK = 1.0
"""Longest wait of an idle slot before it re-reads ``worker_idle_timeout``."""


class _WorkItem:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(
        self,
        future: _SlotFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def call(self) -> Callable[[], None] | None:
        """Run the function; return what hands its outcome to the caller (None: the call
        was cancelled before it started). Settling is left to the slot, so that the slot
        can make itself available first."""
        future = self.future
        if not future.set_running_or_notify_cancel():
            return None
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            error = exc  # ``exc`` is unbound after the except block
            return lambda: future.set_exception(error)
        return lambda: future.set_result(result)


class _SlotFuture(concurrent.futures.Future[Any]):
    """A future that, cancelled while running, tells the executor its slot is abandoned."""

    def __init__(self) -> None:
        super().__init__()
        self.slot: _Slot | None = None
        self.on_abandon: Callable[[_SlotFuture], None] | None = None

    def cancel(self) -> bool:
        if super().cancel():
            return True
        # Running: the thread cannot be interrupted, but its slot can be given up.
        if self.running() and self.on_abandon is not None:
            self.on_abandon(self)
        return False


class _Slot:
    __slots__ = ("abandoned", "item", "name", "thread", "wake")

    def __init__(self, name: str, lock: threading.Lock, item: _WorkItem) -> None:
        self.name = name
        self.item: _WorkItem | None = item
        self.abandoned = False
        self.wake = threading.Condition(lock)
        self.thread: threading.Thread | None = None


class SlotExecutor(concurrent.futures.Executor):
    """Runs sync task functions on slots (threads) that start on demand and retire when idle.

    At most ``config.max_workers`` slots run at once (read at each submit and after each
    call); calls beyond that wait in order. A slot idle for ``config.worker_idle_timeout``
    seconds exits. Thread-safe. ``shutdown`` stops idle slots and refuses new work; calls
    in progress finish on their (daemon) threads.
    """

    def __init__(self, config: QueueConfig, *, name: str = "taskqueue-slot") -> None:
        self._config = config
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Slot] = []  # a stack: the most recently idle slot is reused first
        self._backlog: collections.deque[_WorkItem] = collections.deque()
        self._counted = 0  # slots alive and not abandoned
        self._busy = 0
        self._abandoned = 0
        self._slots: set[_Slot] = set()
        self._numbers = itertools.count(1)
        self._shutdown = False
        self.started = 0
        """Slots started since creation (a measure of churn)."""

    # -- counts ---------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """Slots alive (busy or idle), abandoned ones not included."""
        with self._lock:
            return self._counted

    @property
    def busy(self) -> int:
        """Slots running a call now."""
        with self._lock:
            return self._busy

    @property
    def idle(self) -> int:
        """Slots alive and waiting for work."""
        with self._lock:
            return len(self._idle)

    @property
    def abandoned(self) -> int:
        """Threads still running a call whose caller gave up on it."""
        with self._lock:
            return self._abandoned

    # -- Executor --------------------------------------------------------------------------

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        """Run ``fn(*args, **kwargs)`` on a slot. Raises ``RuntimeError`` after shutdown."""
        future = _SlotFuture()
        future.on_abandon = self._abandon
        item = _WorkItem(future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._idle:
                slot = self._idle.pop()
                slot.item = item
                future.slot = slot
                self._busy += 1
                slot.wake.notify()
            elif self._counted < self._config.max_workers:
                self._start_slot(item)
            else:
                self._backlog.append(item)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work and let idle slots exit; with ``cancel_futures`` drop the backlog.
        ``wait`` joins the slots still alive (not abandoned ones)."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._backlog:
                    self._backlog.popleft().future.cancel()
            for slot in self._idle:
                slot.wake.notify()
            threads = [
                slot.thread
                for slot in self._slots
                if slot.thread is not None and not slot.abandoned
            ]
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    # -- internals (called with the lock held unless said otherwise) -----------------------

    def _start_slot(self, item: _WorkItem) -> None:
        slot = _Slot(f"{self._name}-{next(self._numbers)}", self._lock, item)
        item.future.slot = slot
        # A daemon: a function stuck forever must not keep the process from exiting.
        thread = threading.Thread(target=self._run_slot, args=(slot,), name=slot.name, daemon=True)
        slot.thread = thread
        self._slots.add(slot)
        self._counted += 1
        self._busy += 1
        self.started += 1
        thread.start()

    def _abandon(self, future: _SlotFuture) -> None:
        # Called from the event loop's thread when the awaiting side gives up.
        with self._lock:
            slot = future.slot
            if (
                slot is None
                or slot.abandoned
                or slot.item is None
                or slot.item.future is not future
            ):
                return
            slot.abandoned = True
            self._counted -= 1
            self._busy -= 1
            self._abandoned += 1
            abandoned = self._abandoned
            if self._backlog and not self._shutdown and self._counted < self._config.max_workers:
                self._start_slot(self._backlog.popleft())
        _log.warning(
            "taskqueue: a plain task function was abandoned still running on {} (it cannot "
            "be interrupted); a new slot replaces it ({} abandoned thread(s) now)",
            slot.name,
            abandoned,
        )

    def _run_slot(self, slot: _Slot) -> None:
        """The thread of one slot: run items until idle too long, surplus or shut down."""
        try:
            self._serve(slot)
        finally:
            with self._lock:
                self._slots.discard(slot)

    def _serve(self, slot: _Slot) -> None:
        while True:
            item = slot.item
            settle = item.call() if item is not None else None
            with self._lock:
                slot.item = None
                keep = self._after_call(slot)
                if keep and self._backlog:
                    slot.item = self._backlog.popleft()
                    slot.item.future.slot = slot
                    self._busy += 1
                elif keep:
                    # Idle (and reusable) before its caller hears back: a caller that submits
                    # again at once gets this same slot, so the others can retire.
                    self._idle.append(slot)
            if settle is not None:
                settle()
            if not keep:
                return
            if slot.item is not None:
                continue
            with self._lock:
                if not self._wait_for_work(slot):
                    return

    def _after_call(self, slot: _Slot) -> bool:
        """Count the end of a call; False when the slot must retire (count updated)."""
        if slot.abandoned:
            slot.abandoned = False
            self._abandoned -= 1
            if self._shutdown or self._counted >= self._config.max_workers:
                return False  # replaced meanwhile: the stray thread just ends
            self._counted += 1  # back in service
        else:
            self._busy -= 1
        if self._counted > self._config.max_workers or self._shutdown:
            self._counted -= 1
            return False
        return True

    def _wait_for_work(self, slot: _Slot) -> bool:
        """Wait idle (lock held, slot on the idle stack) for an item; False when the slot
        retires (count updated)."""
        since = time.monotonic()
        while slot.item is None:
            remaining = self._config.worker_idle_timeout - (time.monotonic() - since)
            if remaining <= 0 or self._shutdown:
                self._idle.remove(slot)
                self._counted -= 1
                return False
            slot.wake.wait(min(remaining, _IDLE_CHECK))
        return True


_CAPACITY_CHECK = 0.5
"""Seconds between two looks at ``config.max_workers`` (a rise wakes the worker at once)."""

_RESTART_FIRST = 1.0
_RESTART_MAX = 30.0
_FLUSH_TIMEOUT = 30.0
"""Seconds a stopping pool waits for pending ``add_task`` creations to be written."""


class WorkerPool:
    """Runs tasks in this process (``processes=1``) or in P child processes, as servers.

    ``processes=1``: a ``Worker`` (``config.max_workers`` slots, read live) with a
    ``SlotExecutor`` for plain functions, and a ``Server`` (registration, heartbeats, the
    elected reaper) named ``config.resolved_server_name``. If the worker crashes it is
    logged and replaced after a growing delay (1 s doubling up to 30 s).

    ``processes=P`` (P > 1): P child processes started with ``multiprocessing`` spawn, each
    running a pool of its own (its own server, slots, heartbeats), for CPU-bound plain
    functions. This process runs no task: it restarts a child that dies, passes on changes
    of its config object, and forwards ``stop``. See ``taskqueue_core.processes``.

    ``channels``: the channels to claim from (None: ``config.channels``, None there: all).
    ``install_signal_handlers``: SIGTERM/SIGINT stop the pool gracefully, a second one stops
    it at once (the worker process of ``taskq start``); an embedded pool (FastAPI lifespan)
    leaves the signals to its host. A signal the process ignores stays ignored.

    Use: ``async with WorkerPool(queue):`` or ``await pool.start()`` ... ``await pool.stop()``,
    or ``await pool.run_forever()`` (returns once stopped by a signal or ``stop()``). The
    queue is opened if it is not (and left open). ``config.imports`` are imported at start.
    """

    def __init__(
        self,
        queue: TaskQueue,
        *,
        processes: int = 1,
        install_signal_handlers: bool = False,
        channels: Sequence[str] | None = None,
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ConfigError(
                f"WorkerPool processes must be a whole number >= 1, got {processes!r}"
            )
        if processes > 1 and queue.config.database_url.split("://", 1)[0] == "memory":
            raise ConfigError(
                "WorkerPool processes > 1 needs a database its processes share; "
                f"{queue.config.database_url!r} lives in one process"
            )
        if isinstance(channels, str):
            raise ConfigError(f"WorkerPool channels must be a list of names, got {channels!r}")
        self.queue = queue
        self.processes = processes
        self.channels: tuple[str, ...] | None = tuple(channels) if channels is not None else None
        self.install_signal_handlers = install_signal_handlers
        self.server: Server | None = None
        """This process's server (``processes=1``), once started."""
        self.executor: SlotExecutor | None = None
        """The slots of this process (``processes=1``), once started."""
        self.supervisor: ProcessSupervisor | None = None
        """The child processes (``processes`` > 1), once started."""
        self._worker: Worker | None = None
        self._runner: asyncio.Task[None] | None = None
        self._capacity: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._grace: float | None = None
        self._signals: list[tuple[signal.Signals, Any]] = []
        self._signal_count = 0
        self._hurries: set[asyncio.Task[None]] = set()

    # -- state -----------------------------------------------------------------------------

    @property
    def worker(self) -> Worker | None:
        """The worker running tasks in this process (None with ``processes`` > 1)."""
        return self._worker

    @property
    def running(self) -> bool:
        """True from ``start`` until a stop is requested."""
        return self._stop_requested is not None and not self._stop_requested.is_set()

    @property
    def active(self) -> int:
        """Tasks running now in this process."""
        return self._worker.active if self._worker is not None else 0

    @property
    def idle(self) -> int:
        """Idle slots now in this process (never more than the free task slots)."""
        worker, executor = self._worker, self.executor
        if worker is None or executor is None:
            return 0
        return min(executor.idle, worker.idle)

    def _load(self) -> tuple[int, int]:
        return self.active, self.idle

    def _running_ids(self) -> list[int]:
        return self._worker.running_task_ids if self._worker is not None else []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Import ``config.imports``, open the queue, start the worker and server (or the
        child processes) and, if asked, install the signal handlers.

        Raises ``RuntimeError`` if already started, ``ConfigError`` for a module that does
        not import or a server name in use, ``RepositoryError`` if the database is down.
        """
        if self._stop_requested is not None:
            raise RuntimeError("a WorkerPool starts once; create a new one")
        self._stop_requested = asyncio.Event()
        config = self.queue.config
        for module in config.imports:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"QUEUE_IMPORTS: cannot import {module!r}: {exc}") from exc
        await self.queue.open()
        if self.processes == 1:
            await self._start_here()
        else:
            from taskqueue_core.processes import ProcessSupervisor

            self.supervisor = ProcessSupervisor(
                config, processes=self.processes, channels=self.channels
            )
            await self.supervisor.start()
        if self.install_signal_handlers:
            self._install_signals()

    async def _start_here(self) -> None:
        config = self.queue.config
        name = config.resolved_server_name
        self.executor = SlotExecutor(config, name=f"taskqueue-slot[{name}]")
        self._worker = self._new_worker(name)
        self.server = Server(
            self.queue.repository, config, name=name, load=self._load, running=self._running_ids
        )
        try:
            await self.server.start()
        except BaseException:
            self.executor.shutdown(wait=False)
            raise
        self._runner = asyncio.create_task(self._run_worker(), name=f"taskqueue-pool[{name}]")
        self._runner.add_done_callback(self._watch)
        self._capacity = asyncio.create_task(
            self._watch_capacity(), name=f"taskqueue-pool-capacity[{name}]"
        )
        self._capacity.add_done_callback(self._watch)
        _log.info(
            "taskqueue pool {} started: up to {} slots, idle timeout {:g} s",
            name,
            config.max_workers,
            config.worker_idle_timeout,
        )

    def _new_worker(self, name: str) -> Worker:
        from taskqueue_core.worker import Worker

        return Worker(self.queue, channels=self.channels, server_name=name, executor=self.executor)

    async def _run_worker(self) -> None:
        """Run the worker; if it crashes or returns on its own, replace it after a delay."""
        assert self._stop_requested is not None
        delay = _RESTART_FIRST
        while True:
            worker = self._worker
            assert worker is not None
            try:
                await worker.run()
            except Exception as exc:
                if self._stopper is not None:
                    raise
                _log.opt(exception=exc).error(
                    "taskqueue worker crashed; a new one starts in {:g} s", delay
                )
            else:
                if self._stopper is not None:
                    return
                _log.error(
                    "taskqueue worker returned on its own; a new one starts in {:g} s", delay
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()
            if self._stopper is not None:
                return
            delay = min(delay * 2, _RESTART_MAX)
            self._worker = self._new_worker(worker.server_name)

    async def _watch_capacity(self) -> None:
        """Wake the worker when ``config.max_workers`` rises: its claim loop otherwise looks
        again only at the next notification, finished task or poll."""
        config = self.queue.config
        last = config.max_workers
        while True:
            await asyncio.sleep(_CAPACITY_CHECK)
            current = config.max_workers
            if current > last and self._worker is not None:
                self._worker.wake()
            last = current

    def request_stop(self, grace: float | None = None) -> asyncio.Task[None]:
        """Start stopping (see ``stop``) without waiting; return the task doing it.

        A later request with a shorter ``grace`` (0: at once) hurries the stop in progress.
        Raises ``RuntimeError`` if the pool was never started.
        """
        if self._stop_requested is None:
            raise RuntimeError("the WorkerPool was not started")
        if grace is not None and grace < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
        if self._stopper is None:
            self._grace = grace if grace is not None else self.queue.config.shutdown_grace
            self._stop_requested.set()
            self._stopper = asyncio.create_task(
                self._shutdown(self._grace), name="taskqueue-pool-stop"
            )
            self._stopper.add_done_callback(self._watch)
        elif grace is not None and self._grace is not None and grace < self._grace:
            self._grace = grace
            self._hurry(grace)
        return self._stopper

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully and return when done. Idempotent; does nothing if never started.

        In order: stop claiming; running tasks get ``grace`` seconds (None:
        ``config.shutdown_grace``) to finish; the rest are interrupted and put back
        ``enqueued`` without counting an attempt; the worker's buffers (outcomes, contexts,
        log lines) and the queue's pending ``add_task`` creations are written; the server
        row is deleted; signal handlers are removed. With processes, each child does this.
        """
        if self._stop_requested is None:
            return
        await asyncio.shield(self.request_stop(grace))

    async def run_forever(self) -> None:
        """Start (unless started) and run until a signal or ``stop()``; return once stopped.

        If the caller is cancelled the pool still stops gracefully."""
        if self._stop_requested is None:
            await self.start()
        assert self._stop_requested is not None
        try:
            await self._stop_requested.wait()
        finally:
            await asyncio.shield(self.request_stop())

    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _shutdown(self, grace: float) -> None:
        _log.info("taskqueue pool stopping (running tasks get {:g} s)", grace)
        try:
            if self.supervisor is not None:
                await self.supervisor.stop(grace)
            else:
                await self._stop_here(grace)
        finally:
            self._remove_signals()
        _log.info("taskqueue pool stopped")

    async def _stop_here(self, grace: float) -> None:
        worker = self._worker
        if worker is not None:
            # Stops claiming, waits, hands back the rest and writes the worker's buffers.
            await worker.stop(grace)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner
        if self._capacity is not None:
            self._capacity.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._capacity
        try:
            await asyncio.wait_for(self.queue.flush(), timeout=_FLUSH_TIMEOUT)
        except TimeoutError:
            _log.error(
                "taskqueue pool: pending add_task creations were not written within {:g} s",
                _FLUSH_TIMEOUT,
            )
        if self.server is not None:
            await self.server.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=False)

    def _hurry(self, grace: float) -> None:
        if self.supervisor is not None:
            self.supervisor.hurry()
        elif self._worker is not None:
            job = asyncio.create_task(self._worker.stop(grace), name="taskqueue-pool-hurry")
            job.add_done_callback(self._watch)
            self._hurries.add(job)
            job.add_done_callback(self._hurries.discard)

    def _watch(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.opt(exception=error).error("taskqueue: {} ended with an error", task.get_name())

    # -- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # ignored on purpose (nohup, or a child whose parent forwards stops)
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._signals.append((sig, previous))

    def _remove_signals(self) -> None:
        if not self._signals:
            return
        loop = asyncio.get_running_loop()
        for sig, previous in self._signals:
            loop.remove_signal_handler(sig)
            # Give back what was there (asyncio.run's own SIGINT handler, for instance).
            if previous is not None:
                signal.signal(sig, previous)
        self._signals = []

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signal_count += 1
        if self._signal_count == 1:
            _log.warning(
                "taskqueue pool received {}: stopping gracefully (running tasks get {:g} s; "
                "send it again to stop at once)",
                sig.name,
                self.queue.config.shutdown_grace,
            )
            self.request_stop()
        else:
            _log.warning(
                "taskqueue pool received {} again: stopping at once, handing running tasks back",
                sig.name,
            )
            self.request_stop(0.0)
