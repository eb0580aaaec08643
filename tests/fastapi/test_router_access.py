"""Access control, the read-only variant, the queue dependency parameter, and the dashboard."""

from __future__ import annotations

import re

import pytest
from fastapi import Depends, FastAPI

from taskqueue_core import ConfigError, TaskQueue, TaskState
from taskqueue_core.testing import InMemoryRepository
from taskqueue_fastapi import get_admin_router, get_queue, taskqueue_lifespan
from tests.fastapi import tasks
from tests.fastapi.conftest import build_app, make_config, queue_of_app, require_token, serve

pytestmark = pytest.mark.postgres

API_GETS = ["/api/tasks", "/api/stats", "/api/servers"]
ACTIONS = ["cancel", "stop", "retry"]


def test_no_access_dependency_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        get_admin_router()
    message = str(caught.value)
    assert "dependencies=[Depends(" in message and "public=True" in message
    with pytest.raises(ConfigError):
        get_admin_router(dependencies=[])
    with pytest.raises(ConfigError, match="takes Depends"):
        get_admin_router(dependencies=[require_token])  # type: ignore[list-item]


async def test_requests_without_the_token_are_refused(pg_url: str) -> None:
    app = build_app(make_config(pg_url))
    async with serve(app, **{"X-Admin-Token": "wrong"}) as client:
        queue = queue_of_app(app)
        ref = await queue.enqueue(tasks.add, 1, 1)
        task_id = await ref.get_task_id()
        for path in [*API_GETS, f"/api/tasks/{task_id}", f"/api/tasks/{task_id}/logs"]:
            response = await client.get(f"/admin{path}")
            assert response.status_code == 401, path
        for verb in ACTIONS:
            response = await client.post(f"/admin/api/tasks/{verb}", json={"ids": [task_id]})
            assert response.status_code == 401, verb
        response = await client.post("/admin/api/tasks/clear")
        assert response.status_code == 401
        assert await ref.get_state() is TaskState.ENQUEUED
        # The same requests with the token go through.
        good = {"X-Admin-Token": "test-admin-token"}
        assert (await client.get("/admin/api/tasks", headers=good)).status_code == 200


async def test_public_router_needs_no_token(pg_url: str) -> None:
    app = build_app(make_config(pg_url), public=True, dependencies=None)
    async with serve(app, **{"X-Admin-Token": ""}) as client:
        assert (await client.get("/admin/api/stats")).status_code == 200


async def test_read_only_router_has_no_mutating_endpoint(pg_url: str) -> None:
    app = build_app(make_config(pg_url), read_only=True)
    async with serve(app) as client:
        queue = queue_of_app(app)
        ref = await queue.enqueue(tasks.add, 1, 1)
        task_id = await ref.get_task_id()
        for path in [*API_GETS, f"/api/tasks/{task_id}", f"/api/tasks/{task_id}/tree"]:
            assert (await client.get(f"/admin{path}")).status_code == 200, path
        for verb in [*ACTIONS, "clear"]:
            response = await client.post(f"/admin/api/tasks/{verb}", json={"ids": [task_id]})
            assert response.status_code in (404, 405), verb
        assert await ref.get_state() is TaskState.ENQUEUED
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert not any("post" in operations for operations in paths.values())
        page = (await client.get("/admin/")).text
        assert 'data-read-only="true"' in page


async def test_router_uses_the_given_queue_dependency() -> None:
    other = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
    await other.open()
    try:
        app = FastAPI()
        app.include_router(get_admin_router(public=True, get_queue=lambda: other), prefix="/ops")
        ref = await other.enqueue(tasks.add, 1, 1)
        async with serve(app) as client:
            page = (await client.get("/ops/api/tasks")).json()
            assert [item["id"] for item in page["items"]] == [await ref.get_task_id()]
    finally:
        await other.close()


async def test_dependency_override_reaches_the_admin_router(pg_url: str) -> None:
    app = build_app(make_config(pg_url))
    other = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
    await other.open()
    try:
        for _ in range(3):
            await other.enqueue(tasks.add, 1, 1)
        app.dependency_overrides[get_queue] = lambda: other
        async with serve(app) as client:
            assert (await client.get("/admin/api/tasks")).json()["total"] == 3
    finally:
        await other.close()


async def test_a_closed_queue_is_503_not_500(pg_url: str) -> None:
    app = build_app(make_config(pg_url))
    async with serve(app) as client:
        closed = TaskQueue(make_config("memory://"), repository=InMemoryRepository())
        app.dependency_overrides[get_queue] = lambda: closed
        response = await client.get("/admin/api/tasks")
        assert response.status_code == 503
        assert "not open" in response.json()["detail"]


# -- the dashboard page -------------------------------------------------------------------------


async def test_dashboard_page_and_assets(pg_url: str) -> None:
    app = build_app(make_config(pg_url), prefix="/some/where")
    async with serve(app, **{"X-Admin-Token": ""}) as client:
        page = await client.get("/some/where/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        html = page.text
        assert 'data-read-only="false"' in html
        # Every asset and API call is relative to the page, so any prefix works ...
        assets = re.findall(r'(?:href|src)="([^"]+)"', html)
        assert assets and all(not a.startswith(("/", "http")) for a in assets), assets
        # ... and nothing is loaded from a CDN.
        for asset in set(assets):
            response = await client.get(f"/some/where/{asset}")
            assert response.status_code == 200, asset
            text = response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
            assert "http://" not in text and "https://" not in text, asset
        script = (await client.get("/some/where/static/dashboard.js")).text
        calls = re.findall(r'api\("([^"]*)', script)
        assert calls and all(call.startswith("api/") for call in calls), calls
        assert "innerHTML" not in script  # task data is only ever set as text
        # No trailing slash: redirected to the page, so its relative URLs resolve.
        redirect = await client.get("/some/where", follow_redirects=False)
        assert redirect.status_code == 307
        assert redirect.headers["location"].endswith("/some/where/")


async def test_dashboard_assets_revalidate_and_unknown_ones_are_404(pg_url: str) -> None:
    app = build_app(make_config(pg_url))
    async with serve(app) as client:
        first = await client.get("/admin/static/dashboard.css")
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/css")
        etag = first.headers["etag"]
        again = await client.get("/admin/static/dashboard.css", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert (await client.get("/admin/static/../dependencies.py")).status_code == 404
        assert (await client.get("/admin/static/secret.txt")).status_code == 404


async def test_dashboard_can_be_left_out(pg_url: str) -> None:
    app = build_app(make_config(pg_url), dashboard=False)
    async with serve(app) as client:
        assert (await client.get("/admin/")).status_code == 404
        assert (await client.get("/admin/api/stats")).status_code == 200


async def test_the_embedded_example_of_the_docs_works(pg_url: str) -> None:
    """The README's snippet, as written."""
    app = FastAPI(lifespan=taskqueue_lifespan(make_config(pg_url)))

    @app.post("/users")
    async def create_user(email: str, queue: TaskQueue = Depends(get_queue)) -> dict[str, int]:
        ref = queue.add_task(tasks.greet, email)
        return {"email_task_id": await ref.get_task_id()}

    async with serve(app) as client:
        task_id = (await client.post("/users", params={"email": "ada"})).json()["email_task_id"]
        assert await queue_of_app(app).wait_for(task_id, timeout=15) == {"message": "hello ada"}
