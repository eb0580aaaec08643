"""Fixtures of the execution tests: an open ``TaskQueue`` per backend, and a running worker.

``queue`` runs each test on ``memory`` and ``postgres`` (``queue_all`` adds ``sqlite``).
The repository is wrapped in a ``CountingRepository`` so tests can count and wait for the
writes the worker makes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from taskqueue_core.config import QueueConfig
from taskqueue_core.hooks import HookRegistry
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.queue import TaskQueue
from taskqueue_core.worker import Worker
from tests.execution import tasks

SECRET = "execution-tests-secret"

BACKENDS = ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]
ALL_BACKENDS = [*BACKENDS, "sqlite"]


class CountingRepository:
    """Delegates to a real repository; counts calls and lets tests wait for them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.sizes: dict[str, list[int]] = {}
        self._events: dict[str, asyncio.Event] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def called(self, name: str) -> asyncio.Event:
        """An event set (and left set) after each completed call of ``name``."""
        return self._events.setdefault(name, asyncio.Event())

    def _count(self, name: str, size: int) -> None:
        self.calls[name] += 1
        self.sizes.setdefault(name, []).append(size)

    async def update_contexts(self, contexts: Any) -> None:
        await self.inner.update_contexts(contexts)
        self._count("update_contexts", len(contexts))
        self.called("update_contexts").set()

    async def append_logs(self, records: Any) -> None:
        await self.inner.append_logs(records)
        self._count("append_logs", len(records))
        self.called("append_logs").set()

    async def complete_tasks(self, server_name: str, outcomes: Any) -> list[int]:
        changed: list[int] = await self.inner.complete_tasks(server_name, outcomes)
        self._count("complete_tasks", len(outcomes))
        self.called("complete_tasks").set()
        return changed

    async def claim_tasks(self, server_name: str, limit: int, channels: Any = None) -> Any:
        claimed = await self.inner.claim_tasks(server_name, limit, channels)
        self._count("claim_tasks", len(claimed))
        return claimed

    async def get_states(self, task_ids: Any) -> Any:
        self._count("get_states", len(task_ids))
        return await self.inner.get_states(task_ids)


def make_repository(kind: str, url: str | None) -> Any:
    if kind == "memory":
        return InMemoryRepository()
    assert url is not None
    if kind == "sqlite":
        from taskqueue_core.tortoise.sqlite import SqliteRepository

        return SqliteRepository(url)
    from taskqueue_core.tortoise.postgres import PostgresRepository

    return PostgresRepository(url)


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    # Called from plain (sync) fixtures: pg_url's session template is made outside a loop.
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/tq.sqlite3"
    if kind == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return None


def make_config(**overrides: Any) -> QueueConfig:
    values: dict[str, Any] = {
        "database_url": "memory://",
        "max_workers": 4,
        "secret_key": SECRET,
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.5,
        "polling_interval": 0.5,
        "shutdown_grace": 2.0,
    }
    values.update(overrides)
    return QueueConfig(**values)


QueueFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def _fresh_signals() -> Any:
    tasks.reset()
    yield
    tasks.reset()


async def _open_queue(kind: str, url: str | None) -> AsyncIterator[TaskQueue]:
    repo = CountingRepository(make_repository(kind, url))
    queue = TaskQueue(make_config(), repository=repo, hooks=HookRegistry())  # type: ignore[arg-type]
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    kind = str(request.param)
    return kind, _url(kind, request, tmp_path)


@pytest.fixture(params=ALL_BACKENDS)
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    kind = str(request.param)
    return kind, _url(kind, request, tmp_path)


@pytest.fixture
async def queue(backend: tuple[str, str | None]) -> AsyncIterator[TaskQueue]:
    """An open queue on memory and on PostgreSQL (4 slots, fast retries)."""
    async for q in _open_queue(*backend):
        yield q


@pytest.fixture
async def queue_all(any_backend: tuple[str, str | None]) -> AsyncIterator[TaskQueue]:
    """An open queue on memory, PostgreSQL and SQLite."""
    async for q in _open_queue(*any_backend):
        yield q


@pytest.fixture
async def pg_queue(pg_url: str) -> AsyncIterator[TaskQueue]:
    """An open queue on PostgreSQL only."""
    from taskqueue_core.tortoise.postgres import PostgresRepository

    repo = CountingRepository(PostgresRepository(pg_url))
    queue = TaskQueue(make_config(), repository=repo, hooks=HookRegistry())  # type: ignore[arg-type]
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


def counting(queue: TaskQueue) -> CountingRepository:
    repo = queue.repository
    assert isinstance(repo, CountingRepository)
    return repo


@asynccontextmanager
async def running_worker(
    queue: TaskQueue, *, grace: float = 5.0, **options: Any
) -> AsyncIterator[Worker]:
    """A worker running in the background for the block; stopped (and checked) after it."""
    worker = Worker(queue, **options)
    job = asyncio.create_task(worker.run(), name="test-worker")
    try:
        yield worker
    finally:
        async with asyncio.timeout(grace + 15):
            await worker.stop(grace=grace)
            await job  # re-raises a crash of the worker


async def wait_for_event(event: asyncio.Event, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        await event.wait()
