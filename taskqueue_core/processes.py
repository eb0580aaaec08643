"""Multi-process mode: the parent of ``WorkerPool(processes=P)`` and its children.

The parent starts P children with multiprocessing's *spawn* method: a fresh interpreter that
inherits no event loop, thread or lock from the parent (forking a process that runs asyncio
and threads would copy them half-broken). Each child builds its own ``TaskQueue`` from a copy
of the parent's config, imports ``config.imports`` and runs ``WorkerPool(processes=1)``: a
server of its own, with its own slots, heartbeats and share of the reaping. The parent runs
no task and opens no connection of its own for the children.

Parent and child talk over a pipe:

- ``("config", {field: value})``: the parent's config object changed (checked twice a
  second), so run-time changes such as ``config.max_workers = 8`` reach every process;
- ``("stop", grace)``: stop gracefully; a second one with a shorter grace hurries the stop;
- end of file: the parent is gone (killed), and the child stops gracefully on its own.

Children ignore SIGINT: Ctrl-C in a terminal reaches the whole process group and the parent
forwards the stop, so a child sees one stop request, not two (two would mean "at once"). A
child still handles SIGTERM like any pool (a service manager may signal the whole group).

Supervision: a child that exits while the pool runs is logged and started again, after a
delay that grows while children keep dying young (1 s doubling up to 30 s; back to 1 s
once a child has lived 60 s). What it was running is rescued by the elected reaper, as for a
crash on another machine. Child names: ``config.resolved_server_name`` computed in the child
(``hostname:pid``), or ``<QUEUE_SERVER_NAME>-<index>:<pid>`` when a name is configured, so
that a restarted child never inherits the row, and the stranded tasks, of the one it replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from loguru import logger as _loguru

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_core.logging import INTERNAL_KEY

__all__ = ["ProcessSupervisor", "child_main"]

_log = _loguru.bind(**{INTERNAL_KEY: True})

_SYNC_INTERVAL = 0.5
"""Seconds between two comparisons of the parent's config with what the children have."""

_RESTART_FIRST = 1.0
_RESTART_MAX = 30.0
_STABLE_AFTER = 60.0
"""A child that lived this long counts as healthy: the restart delay starts over."""

_STOP_MARGIN = 15.0
"""Seconds beyond the grace period that ``stop`` waits for children before killing them."""

_FIELDS = tuple(f.name for f in dataclasses.fields(QueueConfig))


def _settings(config: QueueConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in _FIELDS}


class _Child:
    """One child slot of the supervisor: the process now in it and its history."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.exited = asyncio.Event()
        self.started_at = 0.0
        self.delay = _RESTART_FIRST
        self.restart_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and not self.exited.is_set()


class ProcessSupervisor:
    """Runs ``processes`` child worker pools and keeps them running until ``stop``.

    ``channels`` is passed to every child's pool. ``config`` is copied to each child at its
    start, and later changes of it are sent to the running children.
    """

    def __init__(
        self, config: QueueConfig, *, processes: int, channels: Sequence[str] | None = None
    ) -> None:
        if processes < 1:
            raise ConfigError(f"processes must be 1 or more, got {processes!r}")
        self.config = config
        self.channels = tuple(channels) if channels is not None else None
        self._context = multiprocessing.get_context("spawn")
        self._children = [_Child(index) for index in range(processes)]
        self._changed = asyncio.Event()
        self._sent = _settings(config)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._finished = False
        self.restarts = 0
        """Children started again after they exited."""

    @property
    def pids(self) -> list[int]:
        """Pids of the children alive now, by index."""
        return [
            child.process.pid
            for child in self._children
            if child.alive and child.process is not None and child.process.pid is not None
        ]

    async def start(self) -> None:
        """Start every child and the supervision loop. Raises ``RuntimeError`` if started."""
        if self._task is not None:
            raise RuntimeError("the process supervisor is already started")
        for child in self._children:
            self._spawn(child)
        self._task = asyncio.create_task(self._supervise(), name="taskqueue-processes")
        self._task.add_done_callback(self._watch)
        _log.info("taskqueue started {} worker processes: {}", len(self._children), self.pids)

    async def stop(self, grace: float) -> None:
        """Tell every child to stop with ``grace`` seconds; wait for them (killing the ones
        still alive ``grace`` + 15 s later). Idempotent."""
        self._stopping = True
        self._send_all(("stop", grace))
        alive = [child for child in self._children if child.alive]
        if alive:
            waits = [asyncio.create_task(child.exited.wait()) for child in alive]
            _, pending = await asyncio.wait(waits, timeout=grace + _STOP_MARGIN)
            for waiting in pending:
                waiting.cancel()
            late = [child for child in alive if child.alive and child.process is not None]
            for child in late:
                assert child.process is not None
                _log.error(
                    "taskqueue worker process {} did not stop in time; killing it",
                    child.process.pid,
                )
                child.process.kill()
            if late:
                await asyncio.wait(
                    [asyncio.create_task(child.exited.wait()) for child in late], timeout=5.0
                )
        if self._task is not None:
            # Ended by a flag, not cancelled: on Python 3.11 a cancellation that meets the
            # wake-up of ``wait_for`` at the same moment is lost (bpo-42130).
            self._finished = True
            self._changed.set()
            await self._task
        for child in self._children:
            self._release(child)

    def hurry(self) -> None:
        """Ask every child to stop at once (running tasks are handed back)."""
        self._send_all(("stop", 0.0))

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        self._release(child)
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=child_main,
            args=(_settings(self.config), self.channels, child.index, child_end),
            name=f"taskqueue-worker-{child.index}",
            # At a normal exit of the parent, multiprocessing terminates (SIGTERM: a graceful
            # stop) and joins daemonic children; on a kill the pipe's EOF stops them.
            daemon=True,
        )
        process.start()
        child_end.close()
        child.process = process
        child.conn = parent_end
        child.exited = asyncio.Event()
        child.started_at = time.monotonic()
        child.restart_at = None
        asyncio.get_running_loop().add_reader(process.sentinel, self._on_exit, child, process)

    def _on_exit(self, child: _Child, process: BaseProcess) -> None:
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join(0)
        if child.process is process:
            child.exited.set()
            self._changed.set()

    def _release(self, child: _Child) -> None:
        if child.conn is not None:
            child.conn.close()
            child.conn = None
        process = child.process
        if process is not None and process.exitcode is not None:
            with contextlib.suppress(ValueError):
                process.close()

    async def _supervise(self) -> None:
        while not self._finished:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SYNC_INTERVAL):
                    await self._changed.wait()
            self._changed.clear()
            self._sync_config()
            if self._stopping:
                continue
            now = time.monotonic()
            for child in self._children:
                if child.alive or child.process is None:
                    continue
                if child.restart_at is None:
                    lived = now - child.started_at
                    child.delay = _RESTART_FIRST if lived >= _STABLE_AFTER else child.delay
                    child.restart_at = now + child.delay
                    _log.error(
                        "taskqueue worker process {} (pid {}) exited with code {} after "
                        "{:.1f} s; starting another in {:g} s",
                        child.index,
                        child.process.pid,
                        child.process.exitcode,
                        lived,
                        child.delay,
                    )
                    child.delay = min(child.delay * 2, _RESTART_MAX)
                elif now >= child.restart_at:
                    self._spawn(child)
                    self.restarts += 1
                    _log.warning(
                        "taskqueue worker process {} started again (pid {})",
                        child.index,
                        child.process.pid,
                    )

    def _sync_config(self) -> None:
        current = _settings(self.config)
        changed = {
            name: value
            for name, value in current.items()
            if name != "server_name" and self._sent.get(name) != value
        }
        self._sent = current
        if changed:
            self._send_all(("config", changed))

    def _send_all(self, message: tuple[str, Any]) -> None:
        for child in self._children:
            if child.alive and child.conn is not None:
                # A child that is exiting refuses it; the supervisor sees the exit soon.
                with contextlib.suppress(OSError):
                    child.conn.send(message)

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.opt(exception=error).critical("taskqueue: {} ended with an error", task.get_name())


# -- the child side --------------------------------------------------------------------------


def child_name(settings: dict[str, Any], index: int) -> str | None:
    """The server name of child ``index`` in this process (None: the config's default)."""
    base = settings.get("server_name")
    return f"{base}-{index}:{os.getpid()}" if base else None


def child_main(
    settings: dict[str, Any],
    channels: tuple[str, ...] | None,
    index: int,
    conn: Connection,
) -> None:
    """Entry point of a child process: run a one-process ``WorkerPool`` until told to stop."""
    # The parent forwards Ctrl-C as a stop message; see the module docstring.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = dict(settings, server_name=child_name(settings, index))
    config = QueueConfig(**settings)
    asyncio.run(_run_child(config, channels, conn))


async def _run_child(
    config: QueueConfig, channels: tuple[str, ...] | None, conn: Connection
) -> None:
    from taskqueue_core.pool import WorkerPool
    from taskqueue_core.queue import TaskQueue

    loop = asyncio.get_running_loop()
    queue = TaskQueue(config)
    pool = WorkerPool(queue, install_signal_handlers=True, channels=channels)

    def on_message() -> None:
        try:
            while conn.poll():
                kind, value = conn.recv()
                if kind == "config":
                    _apply(config, value)
                elif kind == "stop":
                    pool.request_stop(value)
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            if pool.running:
                _log.warning("taskqueue worker process: the parent is gone; stopping")
                pool.request_stop()

    try:
        await pool.start()
        loop.add_reader(conn.fileno(), on_message)
        await pool.run_forever()
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
        await queue.close()
        conn.close()


def _apply(config: QueueConfig, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        try:
            setattr(config, name, value)
        except ConfigError as exc:
            _log.warning("taskqueue worker process: ignoring a config change: {}", exc.message)
