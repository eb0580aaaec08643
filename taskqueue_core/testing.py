"""Public helpers for testing code that uses taskqueue: an in-memory repository and more."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from taskqueue_core.memory import InMemoryRepository

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = ["InMemoryRepository", "run_until_idle"]


async def run_until_idle(queue: TaskQueue, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Write pending ``add_task`` calls, then run a burst ``Worker`` until nothing is ready and
    nothing runs (tasks scheduled for later are not waited for).

    Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds (the tasks still
    running are then put back ``enqueued``).
    """
    from taskqueue_core.worker import Worker

    await queue.flush()
    worker = Worker(queue)
    try:
        async with asyncio.timeout(timeout):
            await worker.run(burst=True)
    except TimeoutError:
        raise TimeoutError(
            f"run_until_idle: the queue was still busy after {timeout:g} s"
        ) from None
