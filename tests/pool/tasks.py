"""Task functions of the pool tests, run by a pool in the test's own process.

Tasks hold on gates the test opens, so that a test decides when they end: ``GATES`` holds
``threading.Event`` objects (a plain function waits on one in its slot thread, a coroutine
polls it). ``STARTED`` lists the keys of the tasks that started, in order.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time

GATES: collections.defaultdict[str, threading.Event] = collections.defaultdict(threading.Event)
STARTED: list[str] = []


def reset() -> None:
    for gate in GATES.values():
        gate.set()  # release whatever still waits from an earlier test
    GATES.clear()
    STARTED.clear()


async def hold(key: str, gate: str = "open") -> str:
    """A coroutine that runs until ``gate`` is opened."""
    STARTED.append(key)
    event = GATES[gate]
    while not event.is_set():
        await asyncio.sleep(0.01)
    return key


def hold_sync(key: str, gate: str = "open") -> str:
    """A plain function that holds its slot thread until ``gate`` is opened (60 s at most)."""
    STARTED.append(key)
    GATES[gate].wait(60)
    return key


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def thread_name() -> str:
    return threading.current_thread().name


def busy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def process_id() -> int:
    """The pid of the process that runs the task."""
    import os

    return os.getpid()
