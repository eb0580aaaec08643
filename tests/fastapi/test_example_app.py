"""The example application, end to end on PostgreSQL with its embedded worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from examples.app import DEMO_ADMIN_TOKEN, create_app
from taskqueue_core import TaskState
from tests.fastapi.conftest import make_config, queue_of_app, serve

pytestmark = pytest.mark.postgres

Example = tuple[FastAPI, httpx.AsyncClient]


@pytest.fixture
async def example(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Example]:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    app = create_app(make_config(pg_url, max_retries=3, retry_backoff=0.05))
    async with serve(app, **{"X-Admin-Token": DEMO_ADMIN_TOKEN}) as client:
        yield app, client


async def wait_done(app: FastAPI, *task_ids: int) -> list[object]:
    queue = queue_of_app(app)
    return [await queue.wait_for(task_id, timeout=20) for task_id in task_ids]


async def test_plain_task_carries_the_workspace_through_hooks(example: Example) -> None:
    app, client = example
    response = await client.post(
        "/users", json={"email": "ada@example.com"}, headers={"X-Workspace": "acme"}
    )
    assert response.status_code == 200
    task_id = response.json()["email_task_id"]
    [result] = await wait_done(app, task_id)
    # on_pre_create stored the request's workspace; on_pre_run restored it in the worker.
    assert result == {"sent": True, "recipient": "ada@example.com", "workspace": "acme"}
    detail = (await client.get(f"/admin/api/tasks/{task_id}")).json()
    assert detail["context"]["workspace"] == "acme"
    logs = (await client.get(f"/admin/api/tasks/{task_id}/logs")).json()["items"]
    assert any("ada@example.com" in line["message"] for line in logs)


async def test_order_children_wait_for_their_parent(example: Example) -> None:
    app, client = example
    ids = (await client.post("/orders", json={"id": 7})).json()
    parent = ids["process_task_id"]
    children = [ids["confirmation_task_id"], ids["inventory_task_id"]]
    states = await queue_of_app(app).repository.get_states(children)
    assert set(states.values()) <= {TaskState.WAITING, TaskState.DONE}
    results = await wait_done(app, parent, *children)
    assert results == [
        {"order_id": 7, "status": "processed"},
        {"confirmation_sent": True},
        {"inventory_updated": True},
    ]
    tree = (await client.get(f"/admin/api/tasks/{parent}/tree")).json()
    assert {(e["child_id"], e["parent_id"]) for e in tree["edges"]} == {
        (child, parent) for child in children
    }


async def test_progress_is_reported_through_the_context(example: Example) -> None:
    app, client = example
    task_id = (await client.post("/datasets/3/process", params={"steps": 2})).json()["task_id"]
    [result] = await wait_done(app, task_id)
    assert result["success"] is True and result["records"] > 0  # type: ignore[index]
    detail = (await client.get(f"/admin/api/tasks/{task_id}")).json()
    assert detail["progress"] == 100.0
    assert detail["context"]["step"] == "completed"
    assert detail["context"]["dataset"] == {"id": 3}


async def test_local_function(example: Example) -> None:
    app, client = example
    response = await client.post("/dynamic", json={"items": [1, 2], "factor": 3})
    task_id = response.json()["task_id"]
    assert await wait_done(app, task_id) == [{"processed": 2, "scaled": [3, 6]}]
    detail = (await client.get(f"/admin/api/tasks/{task_id}")).json()
    assert detail["function"]["serialized"] is True


async def test_task_control_endpoints(example: Example) -> None:
    _, client = example
    started = (await client.post("/tasks/long", params={"seconds": 120})).json()
    task_id = started["task_id"]
    assert started["state"] in ("enqueued", "doing")
    waiting = asyncio.create_task(client.get(f"/tasks/{task_id}/wait", params={"timeout": 20}))
    cancelled = await client.post(f"/tasks/{task_id}/cancel")
    assert cancelled.json() == {"cancelled": [task_id]}
    outcome = (await waiting).json()
    assert outcome["success"] is False and "cancel" in outcome["reason"]
    state = (await client.get(f"/tasks/{task_id}/state")).json()
    assert state == {"task_id": task_id, "state": "cancelled"}
    assert (await client.get("/tasks/999999/state")).status_code == 404


async def test_flaky_task_succeeds_after_a_retry(example: Example) -> None:
    app, client = example
    task_id = (await client.post("/tasks/flaky", params={"fail_times": 1})).json()["task_id"]
    assert await wait_done(app, task_id) == [{"succeeded_on_attempt": 2}]
    detail = (await client.get(f"/admin/api/tasks/{task_id}")).json()
    assert detail["retry_count"] == 1


async def test_admin_api_wants_the_token(example: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    _, client = example
    no_token = await client.get("/admin/api/tasks", headers={"X-Admin-Token": ""})
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == "Bearer"
    bearer = await client.get(
        "/admin/api/tasks",
        headers={"X-Admin-Token": "", "Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"},
    )
    assert bearer.status_code == 200
    monkeypatch.setenv("ADMIN_TOKEN", "production-token")
    assert (await client.get("/admin/api/tasks")).status_code == 401
    good = await client.get("/admin/api/tasks", headers={"X-Admin-Token": "production-token"})
    assert good.status_code == 200
