"""``Depends(get_queue)``: the lifespan's queue, flushed before the response, overridable."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx2 as httpx
import pytest
from fastapi import Depends, FastAPI, Request

from taskqueue_core import HookRegistry, NewTask, QueueClosed, TaskQueue
from taskqueue_core.testing import InMemoryRepository
from taskqueue_fastapi import get_queue, queue_of, taskqueue_lifespan
from tests.fastapi import tasks
from tests.fastapi.conftest import make_config, queue_of_app, serve

pytestmark = pytest.mark.postgres

SLOW_WRITE = 0.3
"""Seconds a pre_create hook holds each creation back, so an unflushed task cannot be stored
by the time the response arrives."""


def slow_app(pg_url: str) -> FastAPI:
    """An app whose task creations take SLOW_WRITE seconds to reach the database."""
    hooks = HookRegistry()

    @hooks.on_pre_create
    async def slow(task: NewTask) -> None:
        await asyncio.sleep(SLOW_WRITE)  # a slow database write, not a synchronisation

    queue = TaskQueue(make_config(pg_url), hooks=hooks)
    app = FastAPI(lifespan=taskqueue_lifespan(queue=queue, run_workers=False))

    @app.post("/flushed")
    async def flushed(queue: TaskQueue = Depends(get_queue)) -> dict[str, str]:
        queue.add_task(tasks.add, 1, 2, name="flushed")
        return {"status": "accepted"}

    @app.post("/unflushed")
    async def unflushed(request: Request) -> dict[str, str]:
        # The same add_task without the dependency's flush.
        queue_of(request).add_task(tasks.add, 1, 2, name="unflushed")
        return {"status": "accepted"}

    return app


async def count_rows(pg_url: str, name: str) -> int:
    conn = await asyncpg.connect(pg_url.replace("postgres://", "postgresql://", 1))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM queued_tasks WHERE name = $1", name))
    finally:
        await conn.close()


async def test_add_task_is_stored_before_the_response_is_sent(pg_url: str) -> None:
    async with serve(slow_app(pg_url)) as client:
        response = await client.post("/flushed")
        assert response.status_code == 200
        # Read the table from another connection the moment the response is in.
        assert await count_rows(pg_url, "flushed") == 1


async def test_without_the_dependency_the_response_would_come_first(pg_url: str) -> None:
    # The control experiment: it shows the test above can fail.
    app = slow_app(pg_url)
    async with serve(app) as client:
        response = await client.post("/unflushed")
        assert response.status_code == 200
        assert await count_rows(pg_url, "unflushed") == 0
        # add_task loses nothing: the background write lands soon after.
        await queue_of_app(app).flush()
        assert await count_rows(pg_url, "unflushed") == 1


async def test_a_failing_endpoint_still_writes_its_tasks_and_keeps_its_error(pg_url: str) -> None:
    app = FastAPI(lifespan=taskqueue_lifespan(make_config(pg_url), run_workers=False))

    @app.post("/boom")
    async def boom(queue: TaskQueue = Depends(get_queue)) -> None:
        queue.add_task(tasks.add, 1, 2, name="before-error")
        raise RuntimeError("endpoint failed")

    async with serve(app) as client:
        with pytest.raises(RuntimeError, match="endpoint failed"):
            await client.post("/boom")
        assert await count_rows(pg_url, "before-error") == 1


async def test_get_queue_can_be_overridden(pg_url: str) -> None:
    app = FastAPI(lifespan=taskqueue_lifespan(make_config(pg_url), run_workers=False))

    @app.post("/jobs")
    async def create_job(queue: TaskQueue = Depends(get_queue)) -> dict[str, int]:
        ref = queue.add_task(tasks.add, 2, 3)
        return {"task_id": await ref.get_task_id()}

    other = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
    await other.open()
    try:
        app.dependency_overrides[get_queue] = lambda: other
        async with serve(app) as client:
            response = await client.post("/jobs")
            assert response.status_code == 200
            task_id = response.json()["task_id"]
            # Created in the override's queue, not in the lifespan's database.
            assert (await other.get_task(task_id)).args == [2, 3]
            assert await count_rows(pg_url, "tests.fastapi.tasks.add") == 0
    finally:
        await other.close()


async def test_get_queue_without_the_lifespan_names_the_fix() -> None:
    app = FastAPI()

    @app.get("/q")
    async def needs_queue(queue: TaskQueue = Depends(get_queue)) -> None:
        raise AssertionError("not reached")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(QueueClosed, match="taskqueue_lifespan"):
            await client.get("/q")


async def test_mounted_sub_application_finds_the_hosts_queue(pg_url: str) -> None:
    host = FastAPI(lifespan=taskqueue_lifespan(make_config(pg_url), run_workers=False))
    sub = FastAPI()

    @sub.post("/jobs")
    async def create_job(queue: TaskQueue = Depends(get_queue)) -> dict[str, int]:
        ref = queue.add_task(tasks.add, 4, 5, name="from-sub-app")
        return {"task_id": await ref.get_task_id()}

    host.mount("/sub", sub)
    async with serve(host) as client:
        response = await client.post("/sub/jobs")
        assert response.status_code == 200, response.text
        assert await count_rows(pg_url, "from-sub-app") == 1
