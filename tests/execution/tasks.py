"""Task functions used by the execution tests (module-level: stored by import path).

Tests talk to running tasks through ``Signals``: events a task sets (``started``) or waits
for (``gate``), keyed by a name the test passes as an argument. ``reset()`` gives each test
fresh ones.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger as loguru_logger

from taskqueue_core.context import current_task_id, get_context, save_context, set_context
from taskqueue_core.logging import getLogger


@dataclass
class Signals:
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    interrupted: dict[str, asyncio.Event] = field(default_factory=dict)
    thread_started: dict[str, threading.Event] = field(default_factory=dict)
    thread_gates: dict[str, threading.Event] = field(default_factory=dict)
    calls: list[Any] = field(default_factory=list)
    attempts: dict[str, list[float]] = field(default_factory=dict)

    def event(self, kind: str, key: str) -> asyncio.Event:
        return getattr(self, kind).setdefault(key, asyncio.Event())

    def thread_event(self, kind: str, key: str) -> threading.Event:
        return getattr(self, kind).setdefault(key, threading.Event())


signals = Signals()

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""Set by a pre_run hook in the tests; read by task functions (also in threads)."""


def reset() -> None:
    global signals
    # Release any thread still blocked by a previous test before dropping its events.
    for gate in signals.thread_gates.values():
        gate.set()
    signals = Signals()


# -- results ---------------------------------------------------------------------------


async def add(a: int, b: int) -> int:
    return a + b


def sync_add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b, "thread": threading.current_thread().name}


async def echo(value: Any) -> Any:
    return value


async def noop() -> None:
    return None


async def record(label: str) -> str:
    signals.calls.append(label)
    return label


def sync_record(label: str) -> str:
    signals.calls.append(label)
    return label


async def returns_set() -> Any:
    return {"ids": {1, 2, 3}}


async def returns_nan() -> float:
    return float("nan")


async def returns_unstorable(kind: str) -> Any:
    """A result that is JSON to Python but that no JSON column holds."""
    if kind == "deep":
        deep: list[Any] = []
        for _ in range(100_000):  # deeper than Python's recursion limit
            deep = [deep]
        return deep
    return {
        "text": "a\x00b",
        "nested": {"items": ["ok", "x\x00"]},
        "key": {"k\x00": 1},
        "huge": 10**5000,
    }[kind]


def read_request_id() -> str | None:
    return request_id.get()


async def read_request_id_async() -> str | None:
    return request_id.get()


# -- failures and retries --------------------------------------------------------------


async def fail_always(key: str) -> None:
    signals.attempts.setdefault(key, []).append(time.monotonic())
    raise ValueError(f"always failing: {key}")


class BadStr(Exception):
    """An exception whose message cannot be read: its ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


async def raise_bad_str() -> None:
    raise BadStr()


async def fail_until(key: str, successes_after: int) -> str:
    attempts = signals.attempts.setdefault(key, [])
    attempts.append(time.monotonic())
    if len(attempts) <= successes_after:
        raise RuntimeError(f"attempt {len(attempts)} fails")
    return f"succeeded on attempt {len(attempts)}"


def sync_fail(key: str) -> None:
    signals.calls.append(key)
    raise KeyError(key)


# -- held tasks ------------------------------------------------------------------------


async def hold(key: str) -> str:
    """Say it started, then wait for its gate; record an interruption."""
    signals.event("started", key).set()
    try:
        await signals.event("gates", key).wait()
    except asyncio.CancelledError:
        signals.event("interrupted", key).set()
        raise
    signals.calls.append(key)
    return f"released {key}"


def sync_hold(key: str) -> str:
    signals.thread_event("thread_started", key).set()
    signals.thread_event("thread_gates", key).wait(timeout=30)
    signals.calls.append(key)
    return f"late {key}"


async def hold_with_context(key: str) -> str:
    set_context("step", "waiting")
    set_context("task.id", current_task_id())
    signals.event("started", key).set()
    await signals.event("gates", key).wait()
    set_context("step", "released")
    return "ok"


# -- context ---------------------------------------------------------------------------


async def count_context(n: int, pause_every: int, pause: float) -> int:
    for i in range(n):
        set_context("progress.current", i)
        set_context("progress.total", n)
        if pause_every and i % pause_every == pause_every - 1:
            await asyncio.sleep(pause)
    return get_context("progress.current")  # type: ignore[no-any-return]


def sync_context(n: int) -> dict[str, Any]:
    for i in range(n):
        set_context("thread.counter", i)
    set_context("thread.name", threading.current_thread().name)
    set_context("manual", "saved", auto_commit=False)
    save_context()
    return {"task_id": current_task_id(), "read": get_context("thread.counter")}


async def manual_context(key: str) -> str:
    set_context("manual.step", 1, auto_commit=False)
    set_context("manual.step", 2, auto_commit=False)
    await save_context()
    signals.event("started", key).set()
    await signals.event("gates", key).wait()
    set_context("manual.step", 3, auto_commit=False)
    return "done"


async def context_then_fail(key: str) -> None:
    set_context("error.type", "validation")
    set_context("error.details", key)
    raise ValueError(key)


# -- logging ---------------------------------------------------------------------------


async def log_everything(label: str) -> str:
    log = getLogger("tests.logging")
    log.debug("debug %s", label)
    log.info("info %s", label, extra={"user": 7, "tags": ["a", "b"]})
    log.warning("warning {braces} kept")
    log.error("Task failed", extra={"context": {"step": "validation"}})
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.exception("caught %s", "it")
    loguru_logger.bind(origin="loguru").info("straight from loguru {}", label)
    log.critical("critical")
    return label


async def log_plain(label: str) -> str:
    """Plain lines at each standard level, and one at loguru's SUCCESS."""
    log = getLogger("tests.plain")
    log.debug("debug %s", label)
    log.info("info %s", label)
    log.warning("warning %s", label)
    log.log("SUCCESS", "success %s", label)
    log.critical("critical %s", label)
    return label


def sync_log(label: str) -> str:
    getLogger("tests.thread").info("from a thread: %s", label)
    loguru_logger.warning("loguru from a thread")
    return label


async def log_many(n: int) -> int:
    log = getLogger("tests.many")
    for i in range(n):
        log.info("line %d", i)
    return n


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def log_unwritable_extra(label: str) -> str:
    """Lines whose ``extra`` holds values with no JSON and no repr, each way."""
    huge = 10**5000  # more digits than Python writes
    getLogger("tests.unwritable").info(
        "huge %s", label, extra={"n": huge, "kept": 1, "deep": {"n": [huge, 2]}, "odd": _NoRepr()}
    )
    loguru_logger.bind(n=huge).info("loguru huge {}", label)
    return label


class _NoStr:
    def __repr__(self) -> str:
        return "<NoStr>"

    def __str__(self) -> str:
        raise RuntimeError("no str")


async def log_badly(label: str) -> str:
    """Lines whose message cannot be formatted: none of them may fail the task."""
    log = getLogger("tests.badly")
    log.info("%s and %s", label)
    log.warning("%(missing)s", {"present": 1})
    log.error("%d items", "many")
    log.info(_NoStr())
    log.info("%s", 10**5000)
    log.info("fine %s", label)
    return label


async def set_bad_context() -> str:
    try:
        set_context("bad", {1, 2})
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "accepted"


async def log_with_loguru_context(label: str) -> str:
    """Lines inside ``loguru.logger.contextualize`` and a TRACE line, each way."""
    log = getLogger("tests.contextualized")
    with loguru_logger.contextualize(request=label):
        log.info("with context")
        loguru_logger.info("loguru with context")
    log.log(5, "trace from a TaskLogger")
    loguru_logger.trace("trace from loguru")
    log.info("plain")
    return label


async def produce_nul(fail: bool) -> str:
    """A log line and (``fail``) an error whose texts hold NUL characters."""
    getLogger("nul\x00name").warning("line\x00one", extra={"k\x00": ["v\x00"]})
    if fail:
        raise ValueError("bad\x00byte")
    return "ok"
