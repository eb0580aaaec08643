"""Fixtures of the fault tests: a test database with an ``executions`` table, a probe of
it, a queue to create tasks with, and real worker processes that never outlive the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from taskqueue_core.config import QueueConfig
from taskqueue_core.queue import TaskQueue
from tests.faults.harness import Probe, WorkerProcess, worker_settings
from tests.faults.tasks import EXECUTIONS_DDL

SpawnWorker = Callable[..., Awaitable[WorkerProcess]]


@pytest.fixture
async def fault_db(pg_url: str) -> str:
    """The test's database, with the ``executions`` table the task functions write to."""
    conn = await asyncpg.connect(pg_url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(EXECUTIONS_DDL)
    finally:
        await conn.close()
    return pg_url


@pytest.fixture
async def probe(fault_db: str) -> AsyncIterator[Probe]:
    """Reads the test database (reconnecting after a server restart)."""
    reader = Probe(fault_db)
    try:
        yield reader
    finally:
        await reader.close()


@pytest.fixture
async def queue(fault_db: str) -> AsyncIterator[TaskQueue]:
    """An open queue on the test database, signing like the workers, to create tasks."""
    config = QueueConfig(database_url=fault_db, secret_key="fault-tests")
    async with TaskQueue(config) as opened:
        yield opened


@pytest.fixture
async def spawn_worker(fault_db: str, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """Start a worker process: ``await spawn_worker(processes=1, **settings)`` where settings
    are ``QueueConfig`` fields. Every worker is stopped at the end and its output printed
    (pytest shows it when the test fails)."""
    started: list[WorkerProcess] = []

    async def spawn(*, processes: int = 1, **settings: object) -> WorkerProcess:
        env = worker_settings(fault_db, **settings)
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", processes=processes)
        started.append(worker)
        return await worker.start()

    try:
        yield spawn
    finally:
        for worker in started:
            await worker.close()
        for index, worker in enumerate(started):
            print(f"----- worker {index} (exit {worker.returncode}) -----")
            print(worker.output())
