"""Fixtures of the core API tests: a queue on each backend, a counting repository, log capture.

``queue`` runs once on ``InMemoryRepository`` and once on ``PostgresRepository`` (a fresh
migrated database per test). Its repository is wrapped in ``CountingRepository`` so tests can
count ``create_tasks`` calls and make chosen tasks fail at the repository level. Every queue
gets its own ``HookRegistry`` (tests never touch ``default_hooks`` unless they clean up).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
from loguru import logger

from taskqueue_core import HookRegistry, NewTask, QueueConfig, TaskQueue, TaskRef
from taskqueue_core.exceptions import InvalidTaskError, RepositoryError
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.repository import EventHandler, Subscription, TaskRepository

BACKENDS = ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]


class CountingRepository:
    """Delegates to ``inner``; records ``create_tasks`` calls and can refuse chosen tasks.

    ``refuse(name)``: any ``create_tasks`` call containing a task of that name raises
    ``InvalidTaskError`` (all or nothing, as a database constraint would).
    ``down = True``: every call raises ``RepositoryError`` (the database is unreachable).
    ``events = "lost"``: subscriptions say they are healthy but deliver nothing (a notification
    lost in transit); ``"down"``: they deliver nothing and say they are unhealthy;
    ``"refused"``: ``subscribe`` raises. ``notify`` overrides ``supports_notify``.
    ``read`` is set each time ``get_tasks`` returns.
    """

    def __init__(self, inner: TaskRepository) -> None:
        self.inner = inner
        self.create_calls: list[list[NewTask]] = []
        self.get_states_calls: list[list[int]] = []
        self.get_tasks_calls: list[list[int]] = []
        self.subscribe_calls = 0
        self.refused: set[str] = set()
        self.down = False
        self.events: str | None = None
        self.notify: bool | None = None
        self.read = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def supports_notify(self) -> bool:
        return self.inner.supports_notify if self.notify is None else self.notify

    async def get_tasks(self, task_ids: Sequence[int]) -> Any:
        self.get_tasks_calls.append(list(task_ids))
        try:
            return await self.inner.get_tasks(task_ids)
        finally:
            self.read.set()

    async def subscribe(self, handler: EventHandler) -> Subscription:
        self.subscribe_calls += 1
        if self.events == "refused":
            raise RepositoryError("LISTEN refused")
        if self.events in ("lost", "down"):
            return _DeafSubscription(healthy=self.events == "lost")
        return await self.inner.subscribe(handler)

    def refuse(self, name: str) -> None:
        self.refused.add(name)

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        self.create_calls.append(list(tasks))
        if self.down:
            raise RepositoryError("connection refused")
        bad = [t.name for t in tasks if t.name in self.refused]
        if bad:
            raise InvalidTaskError(f"refused by the database: {bad[0]}")
        return await self.inner.create_tasks(tasks, transaction=transaction)

    async def get_states(self, task_ids: Sequence[int]) -> Any:
        self.get_states_calls.append(list(task_ids))
        if self.down:
            raise RepositoryError("connection refused")
        return await self.inner.get_states(task_ids)


async def parked(counting: CountingRepository, ref: TaskRef) -> asyncio.Task[object]:
    """Start ``ref.wait()`` and return once it has read the row and sleeps on its future."""
    await asyncio.wait_for(ref.get_task_id(), 30)
    counting.read.clear()
    waiter = asyncio.create_task(ref.wait(timeout=30))
    # get_tasks returns, the waiter sees the task unfinished and awaits its future in the
    # same step: once this event fires and we run again, it is parked.
    await asyncio.wait_for(counting.read.wait(), 10)
    assert not waiter.done()
    return waiter


class _DeafSubscription:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    async def close(self) -> None:
        return None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_repository(backend: str, request: pytest.FixtureRequest) -> Callable[..., TaskRepository]:
    """Builds a new, unopened repository of the backend under test (same database each time)."""
    if backend == "memory":
        shared = InMemoryRepository()
        return lambda **_: shared
    url = str(request.getfixturevalue("pg_url"))

    def build(**options: Any) -> TaskRepository:
        from taskqueue_core.tortoise.postgres import PostgresRepository

        return PostgresRepository(url, **options)

    return build


@pytest.fixture
def config() -> QueueConfig:
    # Polling so slow that a test passing within seconds was woken by an event.
    return QueueConfig(
        database_url="memory://",
        polling_interval=3600,
        fallback_polling_interval=3600,
        secret_key="core-tests",
    )


@pytest.fixture
def hooks() -> HookRegistry:
    return HookRegistry()


@pytest.fixture
async def counting(make_repository: Callable[..., TaskRepository]) -> CountingRepository:
    return CountingRepository(make_repository())


@pytest.fixture
async def queue(
    counting: CountingRepository, config: QueueConfig, hooks: HookRegistry
) -> AsyncIterator[TaskQueue]:
    q = TaskQueue(config, repository=counting, hooks=hooks)  # type: ignore[arg-type]
    await q.open()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
def errors() -> Iterator[list[str]]:
    """Messages logged through loguru at ERROR or above during the test."""
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="ERROR", format="{message}")
    try:
        yield messages
    finally:
        logger.remove(sink)
