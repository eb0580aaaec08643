"""Task functions of the FastAPI adapter tests (module-level: stored by import path).

A running task tells the test it started through ``started(key)``, an event of the test's
event loop (the embedded worker runs in the same loop as the test).
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskqueue_core import getLogger, set_context

_started: dict[str, asyncio.Event] = {}


def started(key: str) -> asyncio.Event:
    """The event that ``wait_forever(key)`` sets when it starts running."""
    return _started.setdefault(key, asyncio.Event())


def reset() -> None:
    """Forget the events of earlier tests (each test runs in its own event loop)."""
    _started.clear()


async def add(a: int, b: int) -> int:
    return a + b


async def greet(name: str, *, greeting: str = "hello") -> dict[str, Any]:
    return {"message": f"{greeting} {name}"}


async def fail(message: str) -> None:
    raise ValueError(message)


async def write_logs(count: int) -> int:
    logger = getLogger("tests.fastapi")
    for index in range(count):
        logger.info(f"line {index}")
    return count


async def report_progress(percentage: float) -> str:
    set_context("progress.percentage", percentage)
    set_context("step", "halfway")
    return "reported"


async def wait_forever(key: str) -> None:
    started(key).set()
    await asyncio.Event().wait()  # until the task is cancelled, stopped or shut down
