"""Watchdog: interrupts a worker's tasks past their deadline, and notices admin changes that
no event announced.

One asyncio task per worker looks at the running attempts every ``WATCH_TICK`` seconds
while any runs (and sleeps while none does): a per-task timer would cost more than a no-op
task itself, and a tick bounds how late a timeout fires. When control events cannot reach
the worker (the backend has no cross-process events, or the subscription is down), it also
reads the states of the running tasks every ``STATE_CHECK_INTERVAL`` seconds and
interrupts those an admin cancelled or stopped meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from loguru import logger as _loguru

from taskqueue_core.attempt import Attempt, Interrupt
from taskqueue_core.logging import INTERNAL_KEY
from taskqueue_core.models import TaskState

if TYPE_CHECKING:
    from taskqueue_core.config import QueueConfig
    from taskqueue_core.repository import TaskRepository

__all__ = ["STATE_CHECK_INTERVAL", "WATCH_TICK", "Watchdog"]

_log = _loguru.bind(**{INTERNAL_KEY: True})

STATE_CHECK_INTERVAL = 1.0
"""Seconds between reads of running tasks' states when control events cannot arrive."""

WATCH_TICK = 0.05
"""Seconds between deadline checks while tasks run (the precision of timeouts)."""


class Watchdog:
    """Watches the attempts in ``running`` (the worker's own dict, read live).

    ``interrupt(attempt, reason)`` cuts an attempt short; ``events_ok()`` says whether
    control events reach the worker now. ``config.task_timeout`` is read at every tick, so
    changing it applies to the running tasks too. ``run()`` never returns; cancel it.
    """

    def __init__(
        self,
        running: Mapping[int, Attempt],
        config: QueueConfig,
        repository: TaskRepository,
        interrupt: Callable[[Attempt, Interrupt], None],
        events_ok: Callable[[], bool],
    ) -> None:
        self._running = running
        self._config = config
        self._repository = repository
        self._interrupt = interrupt
        self._events_ok = events_ok
        self._busy = asyncio.Event()

    def wake(self) -> None:
        """Tasks run now: start ticking (cheap; call it whenever the first task starts)."""
        self._busy.set()

    async def run(self) -> None:
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
            default = self._config.task_timeout
            for attempt in list(running.values()):
                if attempt.interrupt is None and now >= attempt.deadline(default):
                    limit = attempt.task.timeout
                    attempt.timeout = default if limit is None else limit
                    self._interrupt(attempt, Interrupt.TIMEOUT)
            if now >= next_check:
                next_check = now + STATE_CHECK_INTERVAL
                if running and not self._events_ok():
                    await self.check_states()

    async def check_states(self) -> None:
        """Interrupt (as ``CONTROL``) the running tasks that are no longer ``doing``."""
        ids = list(self._running)
        try:
            states = await self._repository.get_states(ids)
        except Exception as exc:
            _log.warning("taskqueue worker could not read running task states: {}", exc)
            return
        for task_id in ids:
            attempt = self._running.get(task_id)
            if attempt is not None and states.get(task_id) is not TaskState.DOING:
                self._interrupt(attempt, Interrupt.CONTROL)
