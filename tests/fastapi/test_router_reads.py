"""Admin API reads: list (filters, pages), detail, tree, logs, stats, servers, OpenAPI."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from taskqueue_core import TaskQueue
from taskqueue_core.models import ServerInfo
from taskqueue_core.testing import run_until_idle
from tests.fastapi import tasks
from tests.fastapi.conftest import queue_of_app

pytestmark = pytest.mark.postgres

Admin = tuple[FastAPI, httpx.AsyncClient]


async def populate(queue: TaskQueue) -> dict[str, int]:
    """A small world: done, failed, waiting, enqueued and cancelled tasks on two channels."""
    added = await queue.enqueue(tasks.add, 1, 2, name="math.add")
    failed = await queue.enqueue(tasks.fail, "kaboom", name="jobs.fail", channel="jobs")
    progress = await queue.enqueue(tasks.report_progress, 40.0, name="jobs.progress")
    greeted = await queue.enqueue(tasks.greet, "ada", greeting="hi", name="math.greet")
    await run_until_idle(queue)
    parent = await queue.enqueue(tasks.add, 3, 4, name="tree.parent", channel="jobs")
    child_a = await queue.enqueue(tasks.add, 5, 6, name="tree.child-a", parent=parent)
    child_b = await queue.enqueue(tasks.add, 7, 8, name="tree.child-b", parent=parent)
    grandchild = await queue.enqueue(tasks.add, 9, 9, name="tree.grandchild", parent=child_a)
    cancelled = await queue.enqueue(tasks.add, 0, 0, name="math.cancelled")
    await queue.cancel([await cancelled.get_task_id()])
    refs = {
        "added": added,
        "failed": failed,
        "progress": progress,
        "greeted": greeted,
        "parent": parent,
        "child_a": child_a,
        "child_b": child_b,
        "grandchild": grandchild,
        "cancelled": cancelled,
    }
    return {key: await ref.get_task_id() for key, ref in refs.items()}


def ids_of(page: dict[str, object]) -> list[int]:
    items = page["items"]
    assert isinstance(items, list)
    return [item["id"] for item in items]


async def test_list_is_newest_first_with_total(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))
    response = await client.get("/admin/api/tasks")
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == len(ids) and page["limit"] == 50 and page["offset"] == 0
    assert ids_of(page) == sorted(ids.values(), reverse=True)


async def test_list_filters(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))

    async def listed(**params: Any) -> list[int]:
        response = await client.get("/admin/api/tasks", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["items"])
        return ids_of(page)

    assert await listed(state="done") == [ids["greeted"], ids["progress"], ids["added"]]
    assert await listed(state="failed") == [ids["failed"]]
    assert await listed(state=["waiting", "cancelled"]) == [
        ids["cancelled"],
        ids["grandchild"],
        ids["child_b"],
        ids["child_a"],
    ]
    assert await listed(name="TREE.child") == [ids["child_b"], ids["child_a"]]
    assert await listed(channel="jobs") == [ids["parent"], ids["failed"]]
    assert await listed(parent=ids["parent"]) == [ids["child_b"], ids["child_a"]]
    assert await listed(channel="jobs", state="enqueued") == [ids["parent"]]
    assert await listed(name="no such task") == []

    queue = queue_of_app(app)
    parent = await queue.get_task(ids["parent"])
    after = (parent.date_enqueued - timedelta(microseconds=1)).isoformat()
    before = parent.date_enqueued.isoformat()
    assert ids["parent"] in await listed(enqueued_after=after)
    assert ids["added"] not in await listed(enqueued_after=after)
    assert await listed(enqueued_before=before) == [
        ids["greeted"],
        ids["progress"],
        ids["failed"],
        ids["added"],
    ]


async def test_list_pages(admin: Admin) -> None:
    app, client = admin
    ids = sorted((await populate(queue_of_app(app))).values(), reverse=True)
    seen: list[int] = []
    for offset in range(0, len(ids) + 4, 4):
        page = (await client.get("/admin/api/tasks", params={"limit": 4, "offset": offset})).json()
        assert page["total"] == len(ids) and page["limit"] == 4 and page["offset"] == offset
        seen.extend(ids_of(page))
    assert seen == ids
    beyond = (await client.get("/admin/api/tasks", params={"offset": 100})).json()
    assert beyond["items"] == [] and beyond["total"] == len(ids)


async def test_detail_of_a_done_task(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))
    detail = (await client.get(f"/admin/api/tasks/{ids['greeted']}")).json()
    assert detail["state"] == "done"
    assert detail["args"] == ["ada"] and detail["kwargs"] == {"greeting": "hi"}
    assert detail["result"] == {"message": "hi ada"}
    assert detail["function"] == {
        "module_name": "tests.fastapi.tasks",
        "function_name": "greet",
        "serialized": False,
    }
    assert detail["date_started"] and detail["date_done"] and detail["date_ended"]
    assert detail["execution_time"] is not None and detail["execution_time"] >= 0
    assert detail["exception_name"] is None and detail["children"] == []


async def test_detail_of_a_failed_task_carries_the_error(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))
    detail = (await client.get(f"/admin/api/tasks/{ids['failed']}")).json()
    assert detail["state"] == "failed" and detail["channel"] == "jobs"
    assert detail["exception_name"] == "ValueError"
    assert detail["exception_message"] == "kaboom"
    assert "Traceback" in detail["exception_info"] and "kaboom" in detail["exception_info"]
    assert detail["date_failed"] is not None


async def test_detail_context_and_progress(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))
    detail = (await client.get(f"/admin/api/tasks/{ids['progress']}")).json()
    assert detail["context"]["progress"] == {"percentage": 40.0}
    assert detail["context"]["step"] == "halfway"
    assert detail["progress"] == 40.0
    listed = (await client.get("/admin/api/tasks", params={"state": "done"})).json()
    assert {item["id"]: item["progress"] for item in listed["items"]}[ids["progress"]] == 40.0


async def test_detail_lists_children(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))
    detail = (await client.get(f"/admin/api/tasks/{ids['parent']}")).json()
    assert detail["children"] == [ids["child_a"], ids["child_b"]]
    child = (await client.get(f"/admin/api/tasks/{ids['child_a']}")).json()
    assert child["parent_task"] == ids["parent"] and child["state"] == "waiting"
    assert child["pending_parents"] == 1 and child["children"] == [ids["grandchild"]]


async def test_a_local_function_is_shown_but_never_returned(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)

    def local(x: int) -> int:
        return x * 2

    ref = await queue.enqueue(local, 21)
    task_id = await ref.get_task_id()
    stored = await queue.get_task(task_id)
    assert stored.function.serialized_function and stored.function.signature
    response = await client.get(f"/admin/api/tasks/{task_id}")
    detail = response.json()
    assert detail["function"] == {"module_name": None, "function_name": None, "serialized": True}
    body = response.text
    assert "serialized_function" not in body and "signature" not in body
    assert stored.function.signature not in body
    listing = (await client.get("/admin/api/tasks")).text
    tree = (await client.get(f"/admin/api/tasks/{task_id}/tree")).text
    for text in (listing, tree):
        assert stored.function.signature not in text and "serialized_function" not in text


async def test_tree(admin: Admin) -> None:
    app, client = admin
    ids = await populate(queue_of_app(app))
    tree = (await client.get(f"/admin/api/tasks/{ids['parent']}/tree")).json()
    assert tree["root_id"] == ids["parent"]
    assert sorted(task["id"] for task in tree["tasks"]) == sorted(
        [ids["parent"], ids["child_a"], ids["child_b"], ids["grandchild"]]
    )
    edges = {(edge["child_id"], edge["parent_id"]) for edge in tree["edges"]}
    assert edges == {
        (ids["child_a"], ids["parent"]),
        (ids["child_b"], ids["parent"]),
        (ids["grandchild"], ids["child_a"]),
    }
    leaf = (await client.get(f"/admin/api/tasks/{ids['grandchild']}/tree")).json()
    assert [task["id"] for task in leaf["tasks"]] == [ids["grandchild"]] and leaf["edges"] == []


async def test_logs_pages_and_following(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    ref = await queue.enqueue(tasks.write_logs, 25)
    task_id = await ref.get_task_id()
    await run_until_idle(queue)

    url = f"/admin/api/tasks/{task_id}/logs"
    first = (await client.get(url, params={"limit": 10})).json()
    assert [line["message"] for line in first["items"]] == [f"line {i}" for i in range(10)]
    assert first["has_more"] is True
    assert first["next_after_id"] == first["items"][-1]["id"]
    assert all(line["task_id"] == task_id and line["type"] == "info" for line in first["items"])
    assert first["items"][0]["name"] == "tests.fastapi"

    messages = [line["message"] for line in first["items"]]
    after = first["next_after_id"]
    while True:
        page = (await client.get(url, params={"after_id": after, "limit": 10})).json()
        messages.extend(line["message"] for line in page["items"])
        if not page["has_more"]:
            break
        after = page["next_after_id"]
    assert messages == [f"line {i}" for i in range(25)]
    # Following: nothing new yet, and the cursor stays where it was.
    idle = (await client.get(url, params={"after_id": page["next_after_id"]})).json()
    assert idle == {"items": [], "next_after_id": page["next_after_id"], "has_more": False}


async def test_stats(admin: Admin) -> None:
    app, client = admin
    await populate(queue_of_app(app))
    stats = (await client.get("/admin/api/stats")).json()
    assert stats["by_state"] == {
        "waiting": 3,
        "enqueued": 1,
        "doing": 0,
        "done": 3,
        "failed": 1,
        "cancelled": 1,
        "stopped": 0,
    }
    assert stats["by_channel"]["jobs"] == {"failed": 1, "enqueued": 1}
    assert stats["done_last_minute"] == 3 and stats["failed_last_minute"] == 1


async def test_servers(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    assert (await client.get("/admin/api/servers")).json() == []
    await queue.repository.register_server(
        ServerInfo(server_name="web-1:42", hostname="web-1", pid=42, max_workers=8, version="1.0")
    )
    await queue.repository.heartbeat("web-1:42", active_workers=3, idle_workers=2)
    [server] = (await client.get("/admin/api/servers")).json()
    assert server["server_name"] == "web-1:42" and server["hostname"] == "web-1"
    assert server["pid"] == 42 and server["max_workers"] == 8 and server["version"] == "1.0"
    assert server["active_workers"] == 3 and server["idle_workers"] == 2
    assert server["is_running"] is True and server["stale"] is False
    assert server["last_heartbeat"] is not None


async def test_openapi_documents_every_endpoint(admin: Admin) -> None:
    _, client = admin
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        ("/admin/api/tasks", "get"): "TaskPageOut",
        ("/admin/api/tasks/{task_id}", "get"): "TaskDetail",
        ("/admin/api/tasks/{task_id}/tree", "get"): "TaskTreeOut",
        ("/admin/api/tasks/{task_id}/logs", "get"): "LogPage",
        ("/admin/api/tasks/cancel", "post"): "ActionResult",
        ("/admin/api/tasks/stop", "post"): "ActionResult",
        ("/admin/api/tasks/retry", "post"): "ActionResult",
        ("/admin/api/tasks/clear", "post"): "ClearResult",
        ("/admin/api/stats", "get"): "StatsOut",
    }
    for (path, method), model in expected.items():
        operation = paths[path][method]
        ok = json.dumps(operation["responses"]["200"])
        assert f"#/components/schemas/{model}" in ok, (path, method)
        assert operation.get("summary") and operation.get("description")
    assert "ServerOut" in json.dumps(paths["/admin/api/servers"]["get"]["responses"]["200"])
    for path in ("/admin/api/tasks/{task_id}", "/admin/api/tasks/{task_id}/logs"):
        assert "404" in paths[path]["get"]["responses"]
    for verb in ("cancel", "stop", "retry"):
        responses = paths[f"/admin/api/tasks/{verb}"]["post"]["responses"]
        assert {"404", "409", "422"} <= set(responses)
        assert "ConflictBody" in json.dumps(responses["409"])
    parameters = {
        p["name"] for p in paths["/admin/api/tasks"]["get"]["parameters"] if p["in"] == "query"
    }
    assert parameters == {
        "state",
        "name",
        "channel",
        "parent",
        "enqueued_after",
        "enqueued_before",
        "limit",
        "offset",
    }
    assert "/admin/" not in paths  # the dashboard page is not an API operation
    fields = {
        name
        for component in schema["components"]["schemas"].values()
        for name in component.get("properties", {})
    }
    assert "children" in fields
    assert not fields & {"serialized_function", "signature"}
