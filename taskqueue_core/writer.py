"""BatchWriter: writes a worker's outcomes, context changes and log lines in few statements.

One asyncio task (``run``) does every write, so at most one write of each kind is in flight
and whatever arrives meanwhile joins the next call: an outcome is written as soon as the
writer is free (one commit later), and under load one ``complete_tasks`` call carries every
outcome that piled up during the previous one. That is the whole batching policy: no timer
holds a write back, so a quiet worker writes each outcome at once and a busy one writes
big batches.

A round writes log lines first, then contexts (the dirty live ones every ``CONTEXT_PERIOD``,
and the final ones of interrupted tasks), then outcomes: when ``TaskRef.wait()`` returns, the
task's log lines are stored. Repository errors are retried with backoff (the data is kept);
other errors drop the batch with a logged error (retrying could never succeed).

One item the storage refuses must not hold back the others: a write that has failed
``SPLIT_AFTER`` times in a row is split in halves, each written (and retried) on its own. An
item that still fails alone while a read of the storage succeeds is refused for good: an
outcome is replaced by a failure that says why (and dropped if even that is refused, leaving
the task to the pool's check of its claimed tasks), a log line or a context is dropped; each
with a logged error. A write the repository refuses for a value before writing anything
(``InvalidTaskError``: a value no column holds) is split at once, down to the item at fault,
which is refused the same way. While the storage is unreachable nothing is dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger as _loguru

from taskqueue_core.exceptions import InvalidTaskError, RepositoryError
from taskqueue_core.logging import INTERNAL_KEY, LogBuffer
from taskqueue_core.models import NewLogRecord, Outcome, TaskState

if TYPE_CHECKING:
    from taskqueue_core.context import TaskContext
    from taskqueue_core.repository import TaskRepository

__all__ = ["CONTEXT_PERIOD", "LOG_BATCH", "OUTCOME_BATCH", "SPLIT_AFTER", "BatchWriter"]

T = TypeVar("T")

_log = _loguru.bind(**{INTERNAL_KEY: True})

CONTEXT_PERIOD = 0.2
"""Longest time, in seconds, an auto-committed context change waits before it is written."""

LOG_BATCH = 1_000
"""Log rows per ``append_logs`` call."""

OUTCOME_BATCH = 500
"""Most outcomes per ``complete_tasks`` call: bounded statements keep each write short."""

SPLIT_AFTER = 3
"""Failures in a row after which a write is split in halves (or, for one item, the storage is
read to tell a refused item from an unreachable storage)."""


class BatchWriter:
    """Buffers and writes the outcomes, contexts and log lines of one worker.

    ``live_contexts()`` gives the contexts of the tasks running now (their dirty ones are
    written every ``CONTEXT_PERIOD``); ``on_written()``, if given, is called after each
    round that wrote outcomes. Producers (``add_outcome``, ``add_context``, ``add_log``,
    ``commit_soon``) never block. Create it inside the running event loop.
    """

    def __init__(
        self,
        repository: TaskRepository,
        server_name: str,
        live_contexts: Callable[[], Iterable[TaskContext]],
        *,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self._repository = repository
        self._server_name = server_name
        self._live_contexts = live_contexts
        self._on_written = on_written
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

    @property
    def pending_outcomes(self) -> int:
        """Outcomes buffered and not yet taken by a round."""
        return len(self._outcomes)

    def add_outcome(self, outcome: Outcome) -> None:
        """Buffer a task's outcome; it is written in the next round."""
        self._outcomes.append(outcome)
        self._wake.set()

    def add_context(self, task_id: int, context: dict[str, Any]) -> None:
        """Buffer the final context of a task that ends without an outcome of ours."""
        self._contexts[task_id] = context
        self._wake.set()

    def add_log(self, record: NewLogRecord) -> None:
        """Buffer a task's log line. Safe to call from any thread."""
        self.logs.add(record)

    def commit_soon(self) -> None:
        """Start a round soon (dirty contexts, a full log batch). Safe from any thread."""
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
        """Write rounds until closed and drained. Never raises by design."""
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
        # The outcomes of this round are those buffered now. Every log line of their tasks is
        # already in the log buffer (a task logs before it ends), so writing the lines first
        # keeps the promise that a task's lines are stored when its end is. Outcomes that
        # arrive during the round wait for the next one, after their own lines.
        outcomes, self._outcomes = self._outcomes, []
        count = len(self.logs)
        while count > 0:
            lines = self.logs.drain(min(count, LOG_BATCH))
            count -= LOG_BATCH
            if lines:
                await self._write(
                    "append_logs", lines, self._repository.append_logs, _no_substitute
                )
        contexts = self._contexts
        for ctx in self._live_contexts():
            if ctx.dirty:
                contexts[ctx.task_id] = ctx.snapshot()
        if contexts:
            self._contexts = {}
            await self._write(
                "update_contexts",
                list(contexts.items()),
                lambda part: self._repository.update_contexts(dict(part)),
                _no_substitute,
            )
        for start in range(0, len(outcomes), OUTCOME_BATCH):
            part = outcomes[start : start + OUTCOME_BATCH]
            self.outcomes_written += len(part)
            await self._write(
                "complete_tasks",
                part,
                lambda items: self._repository.complete_tasks(self._server_name, items),
                _failure_instead,
            )
        if outcomes and self._on_written is not None:
            self._on_written()

    async def _write(
        self,
        what: str,
        items: list[T],
        write: Callable[[list[T]], Awaitable[object]],
        substitute: Callable[[T, BaseException], T | None],
    ) -> None:
        """Write ``items`` with ``write``: retried with backoff while it fails with a
        repository error, split in halves after ``SPLIT_AFTER`` failures in a row (at the
        first, when the repository refused a value), and an item refused alone while the
        storage answers is given to ``substitute`` (a replacement written once, or None) and
        otherwise dropped (see the module doc)."""
        failures = 0
        while True:
            try:
                await write(items)
                return
            except (RepositoryError, OSError, InvalidTaskError) as exc:
                # InvalidTaskError: the repository refused a value of these items before
                # writing anything (one no column holds). The same items would be refused
                # again: no retry, they are split (or the item refused) at once.
                refused = isinstance(exc, InvalidTaskError)
                failures += 1
                delay = min(0.05 * 2 ** min(failures, 10), 5.0)
                deadline = self._deadline
                if not refused and deadline is not None and self._loop.time() + delay > deadline:
                    _log.error(
                        "taskqueue worker gave up writing {} on shutdown: {} (running tasks "
                        "are rescued by the reaper)",
                        what,
                        exc,
                    )
                    return
                if refused or failures >= SPLIT_AFTER:
                    if len(items) > 1:
                        middle = len(items) // 2
                        await self._write(what, items[:middle], write, substitute)
                        await self._write(what, items[middle:], write, substitute)
                        return
                    if refused or await self._storage_answers():
                        await self._refuse(what, items[0], exc, write, substitute)
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

    async def _storage_answers(self) -> bool:
        """True when a read of the storage succeeds: a write that keeps failing then fails
        because of what it writes, not because the storage is out of reach."""
        try:
            await self._repository.list_servers()
        except Exception:
            return False
        return True

    async def _refuse(
        self,
        what: str,
        item: T,
        exc: BaseException,
        write: Callable[[list[T]], Awaitable[object]],
        substitute: Callable[[T, BaseException], T | None],
    ) -> None:
        # The task, not the item: an outcome's result or a line's text may be large.
        about = f"task {_task_of(item)}"
        replacement = substitute(item, exc)
        if replacement is not None:
            try:
                await write([replacement])
            except Exception as again:
                _log.error(
                    "taskqueue worker: {} refused the item of {} ({}) and its replacement "
                    "({}); it is dropped",
                    what,
                    about,
                    exc,
                    again,
                )
            else:
                _log.error(
                    "taskqueue worker: {} refused the item of {} ({}); a failure was stored "
                    "instead",
                    what,
                    about,
                    exc,
                )
            return
        _log.error(
            "taskqueue worker: {} refused the item of {} ({}); it is dropped", what, about, exc
        )


def _task_of(item: object) -> object:
    """The task id of a write's item: an ``Outcome``, a ``NewLogRecord`` or a
    ``(task_id, context)`` pair."""
    return item[0] if isinstance(item, tuple) else getattr(item, "task_id", "?")


def _no_substitute(item: object, exc: BaseException) -> None:
    """Log lines and contexts the storage refuses are dropped."""
    return None


def _failure_instead(outcome: Outcome, exc: BaseException) -> Outcome | None:
    """The outcome to store in place of ``outcome`` when the storage refuses it: the task
    fails, saying why (None when that outcome is already such a failure)."""
    if outcome.error_name == "OutcomeNotStored":
        return None
    return dataclasses.replace(
        outcome,
        state=TaskState.FAILED,
        result=None,
        error_name="OutcomeNotStored",
        # (The repository replaces a NUL in the message, as in any error it stores.)
        error_message=f"the outcome of task {outcome.task_id} was refused: {exc}",
        error_info=None,
        retry_at=None,
        context=None,
    )
