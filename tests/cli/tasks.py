"""Module-level task functions the console tests create tasks of (stored by import path).

``taskq start --import tests.cli.tasks`` imports this module in the worker process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskqueue_core import getLogger, set_context


async def add(a: int, b: int) -> int:
    return a + b


async def boom(message: str = "bad address") -> None:
    raise ValueError(message)


async def chatty(lines: int = 3) -> dict[str, Any]:
    """Logs ``lines`` info lines and one error with a traceback, and sets some context."""
    log = getLogger("tests.cli")
    set_context("progress", 0)
    for number in range(lines):
        log.info(f"line {number} <not a tag>")
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("caught it")
    set_context("progress", 100)
    set_context("step.name", "finished")
    return {"lines": lines}


async def hold(seconds: float) -> str:
    """Runs for ``seconds`` (the work a graceful shutdown waits for or hands back)."""
    await asyncio.sleep(seconds)
    return "held"
