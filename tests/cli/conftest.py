"""Fixtures of the console tests: a ``Console`` that runs ``taskq`` commands in process.

``console`` runs each test on three backends: the public in-memory fake (shared by the seed
and the commands through the application's ``queue_factory``), a SQLite file, and a fresh
migrated PostgreSQL database. Commands run through cleo's ``ApplicationTester``; seeds use the
real ``TaskQueue`` and a burst ``Worker``. Tests are plain functions: every command runs its
own event loop, as it does from the shell.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cleo.testers.application_tester import ApplicationTester

from taskqueue_core import HookRegistry, QueueConfig, TaskQueue
from taskqueue_core.cli.application import create_application
from taskqueue_core.memory import InMemoryRepository

T = TypeVar("T")

SECRET = "console-tests-secret"
BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@dataclass
class Result:
    """What a command did: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Console:
    """Runs ``taskq`` commands against one database, and seeds that database."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.memory = InMemoryRepository() if backend == "memory" else None

    def new_queue(self, config: QueueConfig | None = None) -> TaskQueue:
        config = config or QueueConfig(
            database_url=self.url, secret_key=SECRET, max_retries=0, max_workers=4
        )
        if self.memory is not None:
            return TaskQueue(config, repository=self.memory, hooks=HookRegistry())
        return TaskQueue(config, hooks=HookRegistry())

    def application(self) -> Any:
        factory = self.new_queue if self.memory is not None else None
        return create_application(queue_factory=factory)

    def __call__(
        self,
        args: str,
        *,
        inputs: str | None = None,
        interactive: bool = False,
        url: str | None = None,
        verbose: bool = False,
    ) -> Result:
        tester = ApplicationTester(self.application())
        # Global options first, so that arguments after ``--`` stay arguments.
        line = f"--database-url={url or self.url} {'-v ' if verbose else ''}{args}"
        code = tester.execute(line, inputs=inputs, interactive=interactive)
        return Result(code, tester.io.fetch_output(), tester.io.fetch_error())

    def seed(self, work: Callable[[TaskQueue], Awaitable[T]]) -> T:
        """Run ``work(queue)`` on an open queue of this database, in a fresh event loop."""

        async def run() -> T:
            async with self.new_queue() as queue:
                return await work(queue)

        return asyncio.run(run())


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No QUEUE_* setting leaks in from the shell; functions are signed with a test key."""
    for key in list(os.environ):
        if key.startswith("QUEUE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("QUEUE_SECRET_KEY", SECRET)
    yield


@pytest.fixture(params=BACKENDS)
def console(request: pytest.FixtureRequest, tmp_path: Path) -> Console:
    backend = request.param
    if backend == "memory":
        return Console(backend, "memory://")
    if backend == "sqlite":
        return Console(backend, f"sqlite://{tmp_path / 'tasks.sqlite3'}")
    return Console(backend, request.getfixturevalue("pg_url"))


@pytest.fixture
def memory_console() -> Console:
    """A console on the in-memory fake: for command-line checks that fail before any query."""
    return Console("memory", "memory://")


@pytest.fixture
def pg_console(pg_url: str) -> Console:
    """A console on PostgreSQL only (for what only PostgreSQL does, or SQL-level setup)."""
    return Console("postgres", pg_url)
