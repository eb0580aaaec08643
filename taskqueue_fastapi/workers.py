"""The workers a web process runs beside its requests, started and stopped by the lifespan.

This is the one place that decides what "embedded workers" are. Today: one ``Worker`` run as a
named, supervised asyncio task. It never installs signal handlers (the ASGI server owns
SIGTERM/SIGINT; the lifespan's exit is our shutdown signal) and it stops gracefully: no new
claims, running tasks get ``QueueConfig.shutdown_grace`` seconds, the rest go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue
    from taskqueue_core.worker import Worker

__all__ = ["EmbeddedWorkers"]

_log = logging.getLogger("taskqueue.fastapi")

_RESTART_DELAY_FIRST = 1.0
_RESTART_DELAY_MAX = 30.0
_STOP_MARGIN = 10.0
"""Seconds on top of the grace period that stopping waits before cancelling outright."""


class EmbeddedWorkers:
    """Run and supervise the worker of one web process.

    ``concurrency`` None reads ``queue.config.max_workers`` live; ``channels`` None claims
    from ``queue.config.channels`` (None there: every channel). If the worker crashes it is
    logged and restarted after a growing delay (1 s doubling up to 30 s), so a database
    outage does not leave the application without workers.
    """

    def __init__(
        self,
        queue: TaskQueue,
        *,
        concurrency: int | None = None,
        channels: Sequence[str] | None = None,
    ) -> None:
        self._queue = queue
        self._concurrency = concurrency
        self._channels = channels
        self._worker: Worker | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        """True between ``start`` and the end of ``stop``."""
        return self._supervisor is not None and not self._supervisor.done()

    async def start(self) -> None:
        """Start the worker in the background. Raises ``RuntimeError`` if already started."""
        if self._supervisor is not None:
            raise RuntimeError("embedded workers already started")
        # Built here so that a bad option fails the application's start-up, loudly.
        self._worker = self._new_worker()
        self._supervisor = asyncio.create_task(self._supervise(), name="taskqueue-embedded-workers")
        self._supervisor.add_done_callback(self._watch)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; running tasks get ``grace`` seconds (default: the config's
        ``shutdown_grace``), then are put back enqueued. Idempotent."""
        supervisor = self._supervisor
        if supervisor is None or supervisor.done():
            return
        self._stopping.set()
        grace = self._queue.config.shutdown_grace if grace is None else grace
        worker = self._worker
        if worker is not None:
            await worker.stop(grace)
        try:
            await asyncio.wait_for(asyncio.shield(supervisor), timeout=grace + _STOP_MARGIN)
        except TimeoutError:
            _log.error("embedded workers did not stop within %.0f s; cancelling", grace)
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    def _new_worker(self) -> Worker:
        # The one line to change for a multi-slot pool: WorkerPool(self._queue, ...).
        from taskqueue_core.worker import Worker

        return Worker(self._queue, concurrency=self._concurrency, channels=self._channels)

    async def _supervise(self) -> None:
        delay = _RESTART_DELAY_FIRST
        while True:
            worker = self._worker
            assert worker is not None
            try:
                await worker.run()
            except Exception:
                if self._stopping.is_set():
                    raise
                _log.exception("embedded worker crashed; restarting in %.0f s", delay)
            else:
                if self._stopping.is_set():
                    return
                _log.error("embedded worker returned unexpectedly; restarting in %.0f s", delay)
            # Back off before the restart, unless the application is stopping meanwhile.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, _RESTART_DELAY_MAX)
            self._worker = self._new_worker()

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.error("embedded workers ended with an error", exc_info=error)
