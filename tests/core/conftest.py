"""Fixtures of the core API tests: a queue on each backend, a counting repository, log capture.

``queue`` runs once on ``InMemoryRepository`` and once on ``PostgresRepository`` (a fresh
migrated database per test). Its repository is wrapped in ``CountingRepository`` so tests can
count ``create_tasks`` calls and make chosen tasks fail at the repository level. Every queue
gets its own ``HookRegistry`` (tests never touch ``default_hooks`` unless they clean up).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
from loguru import logger

from taskqueue_core import HookRegistry, NewTask, QueueConfig, TaskQueue
from taskqueue_core.exceptions import InvalidTaskError, RepositoryError
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.repository import TaskRepository

BACKENDS = ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]


class CountingRepository:
    """Delegates to ``inner``; records ``create_tasks`` calls and can refuse chosen tasks.

    ``refuse(name)``: any ``create_tasks`` call containing a task of that name raises
    ``InvalidTaskError`` (all or nothing, as a database constraint would).
    ``down = True``: every call raises ``RepositoryError`` (the database is unreachable).
    """

    def __init__(self, inner: TaskRepository) -> None:
        self.inner = inner
        self.create_calls: list[list[NewTask]] = []
        self.get_states_calls: list[list[int]] = []
        self.refused: set[str] = set()
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

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
        database_url="memory://", polling_interval=3600, fallback_polling_interval=3600
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
