"""Fixtures of the FastAPI adapter tests: an application with the taskqueue lifespan running
on a fresh PostgreSQL database, and an httpx client talking to it in-process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI, Header, HTTPException

from taskqueue_core import QueueConfig, TaskQueue
from taskqueue_fastapi import get_admin_router, taskqueue_lifespan
from tests.fastapi import tasks

pytestmark = pytest.mark.postgres

TOKEN = "test-admin-token"
SECRET = "fastapi-tests-secret"


def make_config(database_url: str, **overrides: Any) -> QueueConfig:
    """A queue config for tests: quick polls, short grace, signed functions."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET,
        "max_workers": 4,
        "polling_interval": 0.2,
        "fallback_polling_interval": 1.0,
        "shutdown_grace": 1.0,
        "retry_backoff": 0.05,
        "max_retries": 0,
    }
    values.update(overrides)
    return QueueConfig(**values)


async def require_token(x_admin_token: str | None = Header(default=None)) -> None:
    """The access dependency of the test apps: the ``X-Admin-Token`` header must match."""
    if x_admin_token != TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def build_app(
    config: QueueConfig,
    *,
    run_workers: bool = False,
    prefix: str = "/admin",
    **router_options: Any,
) -> FastAPI:
    """An app with the taskqueue lifespan and the admin router (token-protected by default)."""
    app = FastAPI(lifespan=taskqueue_lifespan(config, run_workers=run_workers))
    router_options.setdefault("dependencies", [Depends(require_token)])
    app.include_router(get_admin_router(**router_options), prefix=prefix)
    return app


@asynccontextmanager
async def serve(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield a client for it (sending the admin token)."""
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"X-Admin-Token": TOKEN, **headers},
            timeout=30,
        ) as client:
            yield client


def queue_of_app(app: FastAPI) -> TaskQueue:
    """The queue the lifespan opened for ``app``."""
    queue: TaskQueue = app.state.taskqueue
    return queue


@pytest.fixture(autouse=True)
def _fresh_task_events() -> Iterator[None]:
    tasks.reset()
    yield
    tasks.reset()


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app without embedded workers (tests run tasks with ``run_until_idle``) and its client."""
    app = build_app(make_config(pg_url))
    async with serve(app) as client:
        yield app, client
