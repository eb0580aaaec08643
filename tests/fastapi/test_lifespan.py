"""``taskqueue_lifespan``: opens the queue, runs embedded workers, composes, joins Tortoise."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from tortoise.contrib.fastapi import RegisterTortoise
from tortoise.transactions import in_transaction

from taskqueue_core import ConfigError, QueueClosed, TaskQueue, TaskState
from taskqueue_core.pool import WorkerPool
from taskqueue_core.testing import InMemoryRepository
from taskqueue_core.tortoise.models import MODELS_MODULE, QueuedTask
from taskqueue_fastapi import get_queue, taskqueue_lifespan
from taskqueue_fastapi.lifespan import CommandSettings, set_command_settings
from tests.fastapi import tasks
from tests.fastapi.conftest import make_config, queue_of_app, serve

pytestmark = pytest.mark.postgres


def task_app(lifespan: Any) -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.post("/add")
    async def add(a: int, b: int, queue: TaskQueue = Depends(get_queue)) -> dict[str, int]:
        ref = queue.add_task(tasks.add, a, b)
        return {"task_id": await ref.get_task_id()}

    return app


async def test_embedded_pool_runs_tasks_to_done_as_a_registered_server(pg_url: str) -> None:
    config = make_config(pg_url, server_name="web-1")
    app = task_app(taskqueue_lifespan(config))
    async with serve(app) as client:
        response = await client.post("/add", params={"a": 20, "b": 22})
        task_id = response.json()["task_id"]
        queue = queue_of_app(app)
        assert await queue.wait_for(task_id, timeout=15) == 42
        task = await queue.get_task(task_id)
        assert task.state is TaskState.DONE and task.claimed_by == "web-1"
        [server] = await queue.servers()
        assert server.server_name == "web-1" and server.max_workers == config.max_workers
    # Stopping with the app deleted its server row.
    async with TaskQueue(make_config(pg_url)) as other:
        assert await other.servers() == []


async def test_embedded_pool_claims_only_its_channels(pg_url: str) -> None:
    app = task_app(taskqueue_lifespan(make_config(pg_url), channels=["mail"]))
    async with serve(app):
        queue = queue_of_app(app)
        other = queue.add_task(tasks.add, 1, 1)
        mail = queue.add_task(tasks.add, 2, 2, channel="mail")
        assert await mail.wait(timeout=15) == 4
        assert await other.get_state() is TaskState.ENQUEUED


async def test_without_workers_tasks_wait_for_a_worker_elsewhere(pg_url: str) -> None:
    app = task_app(taskqueue_lifespan(make_config(pg_url), run_workers=False))
    async with serve(app) as client:
        task_id = (await client.post("/add", params={"a": 1, "b": 1})).json()["task_id"]
        queue = queue_of_app(app)
        assert await queue.ref(task_id).get_state() is TaskState.ENQUEUED
    # A worker started later (here: another queue on the same database) runs it.
    async with TaskQueue(make_config(pg_url)) as other, WorkerPool(other):
        assert await other.wait_for(task_id, timeout=15) == 2


async def test_command_settings_reach_a_lifespan_inside_the_hosts_own(pg_url: str) -> None:
    """What ``taskq serve --workers`` sets: the lifespan without a configuration takes the
    command's and starts no pool; one with its own configuration keeps it."""
    command = make_config(pg_url, server_name="command")
    own = make_config(pg_url, server_name="own")

    def composed(queue_lifespan: Any) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with queue_lifespan(app):
                yield

        return task_app(lifespan)

    set_command_settings(CommandSettings(config=command, embedded_workers=False))
    try:
        bare, configured = composed(taskqueue_lifespan()), composed(taskqueue_lifespan(own))
        async with serve(bare) as client, serve(configured):
            assert queue_of_app(bare).config is command
            assert queue_of_app(configured).config is own
            task_id = (await client.post("/add", params={"a": 1, "b": 2})).json()["task_id"]
            # No embedded pool in either: the task waits for the command's pool.
            assert await queue_of_app(bare).servers() == []
            assert await queue_of_app(bare).ref(task_id).get_state() is TaskState.ENQUEUED
    finally:
        set_command_settings(None)
    # Reset: the lifespan runs its embedded pool again.
    app = composed(taskqueue_lifespan(own))
    async with serve(app):
        assert [s.server_name for s in await queue_of_app(app).servers()] == ["own"]


async def test_the_queue_lives_exactly_as_long_as_the_app(pg_url: str) -> None:
    app = task_app(taskqueue_lifespan(make_config(pg_url)))
    async with serve(app):
        queue = queue_of_app(app)
        assert queue.is_open
    assert not queue.is_open
    assert getattr(app.state, "taskqueue", None) is None
    with pytest.raises(QueueClosed):
        queue.add_task(tasks.add, 1, 2)


async def test_composed_into_the_hosts_own_lifespan(pg_url: str) -> None:
    events: list[str] = []
    queue_lifespan = taskqueue_lifespan(make_config(pg_url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("host start")
        async with queue_lifespan(app) as state:
            events.append(f"queue open: {state['taskqueue'].is_open}")
            yield
        events.append("host stop")

    app = task_app(lifespan)
    async with serve(app) as client:
        task_id = (await client.post("/add", params={"a": 2, "b": 3})).json()["task_id"]
        assert await queue_of_app(app).wait_for(task_id, timeout=15) == 5
    assert events == ["host start", "queue open: True", "host stop"]


async def test_shutdown_puts_a_running_task_back_and_installs_no_signal_handler(
    pg_url: str,
) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    app = FastAPI(lifespan=taskqueue_lifespan(make_config(pg_url, shutdown_grace=0.2)))
    async with serve(app):
        queue = queue_of_app(app)
        ref = queue.add_task(tasks.wait_forever, "shutdown")
        await asyncio.wait_for(tasks.started("shutdown").wait(), timeout=15)
        assert await ref.get_state() is TaskState.DOING
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
        task_id = await ref.get_task_id()
    # The grace period ran out: the task went back to the queue for another worker.
    conn = await asyncpg.connect(pg_url.replace("postgres://", "postgresql://", 1))
    try:
        row = await conn.fetchrow(
            "SELECT state, retry_count FROM queued_tasks WHERE id = $1", task_id
        )
    finally:
        await conn.close()
    assert row["state"] == "enqueued" and row["retry_count"] == 0


async def test_entering_twice_on_one_app_is_refused(pg_url: str) -> None:
    first = taskqueue_lifespan(make_config(pg_url), run_workers=False)
    second = taskqueue_lifespan(make_config(pg_url), run_workers=False)
    app = FastAPI()
    async with first(app):
        with pytest.raises(ConfigError, match="already open"):
            async with second(app):
                pass
        assert app.state.taskqueue.is_open


async def test_a_given_queue_is_used_as_is() -> None:
    queue = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
    app = task_app(taskqueue_lifespan(queue=queue))
    async with serve(app) as client:
        task_id = (await client.post("/add", params={"a": 3, "b": 4})).json()["task_id"]
        assert queue_of_app(app) is queue
        assert await queue.wait_for(task_id, timeout=15) == 7


def test_contradictory_options_are_refused() -> None:
    queue = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
    with pytest.raises(ConfigError, match="either queue= or config="):
        taskqueue_lifespan(make_config("memory://"), queue=queue)
    with pytest.raises(ConfigError, match="channels must be a list"):
        taskqueue_lifespan(channels="mail")
    with pytest.raises(ConfigError, match="must name a Tortoise connection"):
        taskqueue_lifespan(tortoise="")


async def test_invalid_environment_fails_the_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_MAX_WORKERS", "many")
    app = FastAPI(lifespan=taskqueue_lifespan())
    with pytest.raises(ConfigError, match="QUEUE_MAX_WORKERS"):
        async with serve(app):
            pass


async def test_joining_a_missing_tortoise_connection_names_the_fix(pg_url: str) -> None:
    app = FastAPI(lifespan=taskqueue_lifespan(make_config(pg_url), tortoise="nowhere"))
    with pytest.raises(ConfigError, match="tortoise='nowhere'"):
        async with serve(app):
            pass


def host_tortoise_config(database_url: str) -> dict[str, Any]:
    """A host application's Tortoise config that registers the taskqueue models."""
    return {
        "connections": {"default": database_url},
        "apps": {"taskqueue": {"models": [MODELS_MODULE], "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


async def test_joins_the_hosts_tortoise_setup(pg_url: str) -> None:
    # The queue's own database_url names nothing that exists: the host's connection is used.
    config = make_config("postgres://nobody@127.0.0.1:9/nowhere")
    queue_lifespan = taskqueue_lifespan(config, tortoise="default")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with RegisterTortoise(app, config=host_tortoise_config(pg_url)):
            async with queue_lifespan(app):
                yield
            # Our exit left the host's connection open.
            assert await QueuedTask.all().count() == 2

    app = task_app(lifespan)
    async with serve(app) as client:
        queue = queue_of_app(app)
        # Writes share the host's transactions ...
        async with in_transaction("default") as conn:
            kept = await queue.enqueue(tasks.add, 1, 1, transaction=conn)
        with pytest.raises(RuntimeError, match="rolled back"):
            async with in_transaction("default") as conn:
                lost = await queue.enqueue(tasks.add, 2, 2, transaction=conn)
                raise RuntimeError("rolled back")
        lost_id = await lost.get_task_id()
        # ... the host's ORM sees the rows, and the embedded worker (woken by NOTIFY on the
        # same database) runs them.
        task_id = (await client.post("/add", params={"a": 5, "b": 6})).json()["task_id"]
        assert await queue.wait_for(task_id, timeout=15) == 11
        assert await queue.wait_for(await kept.get_task_id(), timeout=15) == 2
        assert await QueuedTask.filter(id=task_id, state="done").exists()
        assert not await QueuedTask.filter(id=lost_id).exists()
        assert queue.repository.supports_notify
