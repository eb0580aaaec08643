"""Servers: registration, heartbeats and the elected reaper.

Every worker process is a *server*: one row of ``queued_task_workers``, named
``config.resolved_server_name`` unless told otherwise. A ``Server`` registers that row on
``start``, refreshes it every ``config.heartbeat_interval`` seconds with the process's
active and idle slot counts, and deletes it on ``stop``.

Every server also runs a reaper round each interval, but only the *elected* one works: the
oldest live server (earliest ``started_at``, then name), where live means a heartbeat newer
than ``config.stale_after``. The election needs no lock of its own because
``TaskRepository.rescue_stale`` already lets only one caller at a time do the work (an
advisory lock on PostgreSQL); electing one server on top of that keeps the others from even
trying, and gives pruning, which has no lock, a single owner. The reaper:

- re-enqueues the ``doing`` tasks of servers silent for ``stale_after`` seconds (each rescue
  counts an attempt; see ``rescue_stale``), so a task whose process was killed runs again
  within ``stale_after`` plus one heartbeat interval;
- deletes finished tasks older than ``config.retention_days`` (0: never), at most once per
  ``prune_interval`` seconds.

Every server also checks its own tasks once per ``stale_after``: a task ``doing`` under its
name that its worker does not run (its claim's reply or its outcome was lost in a database
outage) is handed back once it has been seen so twice; see ``Server._check_own_tasks``.

Both loops survive any error: a failing heartbeat (the database is down or restarting) is
logged and retried with a short backoff, and the server re-registers when a heartbeat finds
its row gone (a reaper declared it dead while it could not reach the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta

from loguru import logger as _loguru

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_core.logging import INTERNAL_KEY
from taskqueue_core.models import WORKER_LOST, Outcome, ServerInfo, Task, TaskFilter, TaskState
from taskqueue_core.repository import TaskRepository

__all__ = ["DEFAULT_PRUNE_INTERVAL", "Load", "Server"]

_log = _loguru.bind(**{INTERNAL_KEY: True})

Load = Callable[[], tuple[int, int]]
"""Returns the process's ``(active, idle)`` slot counts for the heartbeat."""

DEFAULT_PRUNE_INTERVAL = 600.0
"""Seconds between two prunes by the elected reaper (pruning scans finished tasks)."""

_BACKOFF_FIRST = 0.25
"""First retry delay after a failed heartbeat or reaper round; doubles up to the interval."""

_UNREGISTER_TIMEOUT = 5.0
_running_here: set[str] = set()
"""Names of the servers running in this process (two with one name would share a row)."""
_ORPHAN_PAGE = 500


def _now() -> datetime:
    return datetime.now(UTC)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("taskqueue")
    except PackageNotFoundError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


class Server:
    """This process as a server: its row, its heartbeat and its share of the reaping.

    ``load`` gives the ``(active, idle)`` counts sent with each heartbeat (default: 0, 0).
    ``running`` gives the ids of the tasks this process runs now; with it, the server hands
    back tasks doing under its name that it does not run (see ``_check_own_tasks``).
    ``name`` defaults to ``config.resolved_server_name``; it must be unique among running
    servers. ``reaper`` False takes this server out of the election (it still heartbeats).
    The config is read live: a change of ``heartbeat_interval``, ``stale_after``,
    ``retention_days`` or ``max_workers`` applies from the next round.
    """

    def __init__(
        self,
        repository: TaskRepository,
        config: QueueConfig,
        *,
        name: str | None = None,
        load: Load | None = None,
        running: Callable[[], Collection[int]] | None = None,
        reaper: bool = True,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
    ) -> None:
        if prune_interval <= 0:
            raise ConfigError(f"prune_interval must be greater than 0, got {prune_interval!r}")
        self.repository = repository
        self.config = config
        self.name = name or config.resolved_server_name
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = _now()
        self._load: Load = load or (lambda: (0, 0))
        self._running = running
        self._last_check: float | None = None
        self._suspects: set[int] = set()
        self._reaper_enabled = reaper
        self._prune_interval = prune_interval
        self._registered_max_workers: int | None = None
        self._last_prune: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy = True
        self.is_reaper = False
        """True while this server is the elected reaper (as of its last round)."""
        self.rescued: list[int] = []
        """Every task id this server's reaper rescued, in order."""
        self.pruned = 0
        """How many finished tasks this server's reaper deleted."""
        self.heartbeats = 0
        """Successful heartbeats since start."""
        self.handed_back: list[int] = []
        """Task ids this server held but was not running, handed back (see ``running``)."""
        self.reaper_rounds = 0
        """Reaper rounds completed since start (elected or not)."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return bool(self._tasks)

    @property
    def healthy(self) -> bool:
        """False while heartbeats fail (the database cannot be reached)."""
        return self._healthy

    async def start(self) -> None:
        """Register this server and start its heartbeat and reaper loops.

        Tasks still ``doing`` under this name from a previous run of the same server (the
        same host, the process gone) are handed back first, so a restart under a fixed name
        strands nothing. Raises ``ConfigError`` if a live server elsewhere already uses the
        name, ``RepositoryError`` if the database cannot be reached, ``RuntimeError`` if the
        server is already running.
        """
        if self._tasks:
            raise RuntimeError(f"server {self.name!r} is already running")
        if self.name in _running_here:
            raise ConfigError(
                f"a server named {self.name!r} is already running in this process; "
                "give each worker pool its own server name"
            )
        await self._adopt_previous_run()
        await self._register()
        _running_here.add(self.name)
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"taskqueue-heartbeat[{self.name}]")
        ]
        if self._reaper_enabled:
            self._tasks.append(
                asyncio.create_task(self._reaper_loop(), name=f"taskqueue-reaper[{self.name}]")
            )
        for task in self._tasks:
            task.add_done_callback(self._watch)
        _log.info("taskqueue server {} registered (pid {})", self.name, self.pid)

    async def stop(self) -> None:
        """Stop both loops and delete this server's row. Idempotent; never raises for a
        database error (the row then goes stale and a reaper removes it)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not tasks:
            return
        _running_here.discard(self.name)
        self.is_reaper = False
        try:
            await asyncio.wait_for(
                self.repository.unregister_server(self.name), timeout=_UNREGISTER_TIMEOUT
            )
        except Exception as exc:
            _log.warning("taskqueue server {} could not unregister: {}", self.name, _describe(exc))
        else:
            _log.info("taskqueue server {} unregistered", self.name)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _watch(self, task: asyncio.Task[None]) -> None:
        # The loops catch everything; ending otherwise than by stop() is a bug worth shouting.
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.opt(exception=error).critical("{} ended with an error", task.get_name())
        elif task in self._tasks:
            _log.critical("{} ended unexpectedly", task.get_name())

    # -- heartbeat -------------------------------------------------------------------------

    async def beat(self) -> None:
        """Send one heartbeat with the current counts; re-register if the row is gone or
        ``max_workers`` changed. Raises ``RepositoryError`` (or the driver's error)."""
        if self._registered_max_workers != self.config.max_workers:
            await self._register()
            return
        active, idle = self._load()
        if not await self.repository.heartbeat(self.name, active, idle):
            _log.warning(
                "taskqueue server {} had no row (declared dead while unreachable?); "
                "registering again",
                self.name,
            )
            await self._register()
        self.heartbeats += 1

    async def _register(self) -> None:
        active, idle = self._load()
        max_workers = self.config.max_workers
        await self.repository.register_server(
            ServerInfo(
                server_name=self.name,
                hostname=self.hostname,
                pid=self.pid,
                max_workers=max_workers,
                active_workers=active,
                idle_workers=idle,
                is_running=True,
                last_heartbeat=_now(),
                started_at=self.started_at,
                version=_version(),
            )
        )
        self._registered_max_workers = max_workers

    async def _heartbeat_loop(self) -> None:
        await self._repeat(self.beat, "heartbeat", first_delay=True, health=self._set_health)

    def _set_health(self, healthy: bool) -> None:
        self._healthy = healthy

    async def _repeat(
        self,
        step: Callable[[], Awaitable[object]],
        what: str,
        *,
        first_delay: bool,
        health: Callable[[bool], None] | None = None,
    ) -> None:
        """Run ``step`` every ``heartbeat_interval`` seconds (read live) until cancelled;
        after a failure retry sooner, backing off from 0.25 s up to the interval."""
        failures = 0
        delay = self.config.heartbeat_interval if first_delay else 0.0
        while True:
            await asyncio.sleep(delay)
            interval = self.config.heartbeat_interval
            try:
                await step()
            except Exception as exc:
                failures += 1
                if health is not None:
                    health(False)
                # Once per outage at warning level, then quietly: a restart takes seconds.
                level = "WARNING" if failures == 1 else "DEBUG"
                _log.log(
                    level,
                    "taskqueue {} of {} failed ({} in a row): {}; retrying",
                    what,
                    self.name,
                    failures,
                    _describe(exc),
                )
                delay = min(interval, _BACKOFF_FIRST * 2 ** (failures - 1))
                continue
            if failures:
                _log.warning(
                    "taskqueue {} of {} works again after {} failures", what, self.name, failures
                )
            failures = 0
            if health is not None:
                health(True)
            delay = interval

    # -- reaper ----------------------------------------------------------------------------

    async def reap(self) -> list[int]:
        """One reaper round: hold the election; if elected, rescue the tasks of stale servers
        and prune when due. Returns the ids rescued (empty when not elected)."""
        now = _now()
        stale_before = now - timedelta(seconds=self.config.stale_after)
        servers = await self.repository.list_servers()
        elected = self._reaper_enabled and self._elect(servers, stale_before)
        if elected != self.is_reaper:
            _log.info(
                "taskqueue server {} {} the reaper",
                self.name,
                "is now" if elected else "is no longer",
            )
        self.is_reaper = elected
        rescued: list[int] = []
        if elected:
            rescued = await self.repository.rescue_stale(stale_before)
            if rescued:
                self.rescued.extend(rescued)
                _log.warning(
                    "taskqueue reaper rescued {} task(s) of servers silent for {:.1f} s: {}",
                    len(rescued),
                    self.config.stale_after,
                    _ids(rescued),
                )
            await self._prune_if_due(now)
        await self._check_own_tasks()
        self.reaper_rounds += 1
        return rescued

    def _elect(self, servers: list[ServerInfo], stale_before: datetime) -> bool:
        # Oldest live server wins: stable (a newcomer never takes over) and computable by
        # every server from the same rows. Ourselves always count as live: we are running.
        own = next((s for s in servers if s.server_name == self.name), None)
        own_key = ((own.started_at if own and own.started_at else self.started_at), self.name)
        for other in servers:
            if other.server_name == self.name or not other.is_running:
                continue
            if other.last_heartbeat is None or other.last_heartbeat < stale_before:
                continue
            key = (other.started_at or datetime.max.replace(tzinfo=UTC), other.server_name)
            if key < own_key:
                return False
        return True

    async def _prune_if_due(self, now: datetime) -> None:
        days = self.config.retention_days
        if days <= 0:
            return
        clock = time.monotonic()
        if self._last_prune is not None and clock - self._last_prune < self._prune_interval:
            return
        self._last_prune = clock
        count = await self.repository.prune(now - timedelta(days=days))
        self.pruned += count
        if count:
            _log.info(
                "taskqueue reaper pruned {} finished task(s) older than {:g} day(s)", count, days
            )

    async def _reaper_loop(self) -> None:
        await self._repeat(self.reap, "reaper round", first_delay=False)

    # -- a previous run of this server -----------------------------------------------------

    async def _adopt_previous_run(self) -> None:
        """Hand back the tasks a dead earlier process left ``doing`` under this name.

        A fixed ``QUEUE_SERVER_NAME`` (or a container whose hostname and pid repeat) gives a
        restarted process the same name; once it registers, its row is fresh and the reaper
        would never rescue what the previous process was running. So before registering:
        if the name is held by a live server elsewhere, refuse; if its holder is gone, put
        its doing tasks back (counting the attempt, as a rescue does).
        """
        row = next(
            (s for s in await self.repository.list_servers() if s.server_name == self.name), None
        )
        if row is not None:
            same_host = row.hostname == self.hostname
            gone = same_host and (row.pid == self.pid or not _pid_alive(row.pid))
            stale_before = _now() - timedelta(seconds=self.config.stale_after)
            stale = row.last_heartbeat is None or row.last_heartbeat < stale_before
            if not (gone or stale):
                raise ConfigError(
                    f"server name {self.name!r} is in use by the running server "
                    f"{row.hostname}:{row.pid}; every worker process needs its own "
                    "QUEUE_SERVER_NAME"
                )
        orphans = await self._doing_tasks_of(self.name)
        handed = await self._hand_back(orphans, f"the process running it ({self.name}) exited")
        if handed:
            _log.warning(
                "taskqueue server {} handed back {} task(s) left doing by its previous run: {}",
                self.name,
                len(handed),
                _ids(handed),
            )

    async def _hand_back(self, tasks: list[Task], message: str) -> list[int]:
        """Put ``tasks`` (doing under this name) back, counting the attempt as a rescue does:
        enqueued again, or failed ``WorkerLost`` once its retries are used up."""
        if not tasks:
            return []
        outcomes = [
            Outcome(
                task_id=task.id,
                state=TaskState.ENQUEUED
                if task.retry_count < task.max_retries
                else TaskState.FAILED,
                error_name=WORKER_LOST,
                error_message=message,
            )
            for task in tasks
        ]
        return await self.repository.complete_tasks(self.name, outcomes)

    # -- tasks lost by this very server -----------------------------------------------------

    async def _check_own_tasks(self) -> None:
        """Hand back tasks ``doing`` under this name that this process does not run.

        The reaper rescues the tasks of dead servers only. A live one can still lose track
        of a task in a database outage: the claim committed but its reply was lost, or an
        outcome could not be written. Such a task would stay ``doing`` forever, so every
        ``stale_after`` seconds the server lists its doing tasks older than ``stale_after``
        that its worker is not running, and hands back those it already found the time
        before (an outcome still being written has long been written by then).
        """
        if self._running is None:
            return
        clock = time.monotonic()
        if self._last_check is not None and clock - self._last_check < self.config.stale_after:
            return
        self._last_check = clock
        before = set(self._running())
        cutoff = _now() - timedelta(seconds=self.config.stale_after)
        mine = await self._doing_tasks_of(self.name)
        running = before | set(self._running())
        lost = {
            task.id: task
            for task in mine
            if task.id not in running
            and task.date_started is not None
            and task.date_started < cutoff
        }
        again = [task for task_id, task in lost.items() if task_id in self._suspects]
        self._suspects = set(lost) - {task.id for task in again}
        handed = await self._hand_back(
            again,
            f"claimed by {self.name} but not running there (its claim or outcome was lost)",
        )
        if handed:
            self.handed_back.extend(handed)
            _log.warning(
                "taskqueue server {} handed back {} task(s) it held but was not running: {}",
                self.name,
                len(handed),
                _ids(handed),
            )

    async def _doing_tasks_of(self, name: str) -> list[Task]:
        found: list[Task] = []
        offset = 0
        while True:
            page = await self.repository.list_tasks(
                TaskFilter(states=(TaskState.DOING,)), limit=_ORPHAN_PAGE, offset=offset
            )
            found.extend(t for t in page.tasks if t.claimed_by == name)
            offset += len(page.tasks)
            if not page.tasks or offset >= page.total:
                return found


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:20])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
