"""The admin API answers as its OpenAPI schema says: cases the property tests
(``test_api_properties.py``) found, kept as plain tests."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from taskqueue_core import TaskState
from tests.fastapi import tasks
from tests.fastapi.conftest import queue_of_app

pytestmark = pytest.mark.postgres

Admin = tuple[FastAPI, httpx.AsyncClient]


@pytest.mark.parametrize("verb", ["cancel", "stop", "retry", "clear"])
async def test_a_wrong_method_on_an_action_names_post_as_allowed(admin: Admin, verb: str) -> None:
    # "/tasks/cancel" also matches the path of "/tasks/{task_id}": neither a GET taken as a
    # request for a task whose id is "cancel" (a 422) nor a 405 naming the task detail's GET.
    _, client = admin
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"):
        response = await client.request(method, f"/admin/api/tasks/{verb}")
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST", method
        if method != "HEAD":
            assert response.json() == {"detail": "Method Not Allowed"}


async def test_the_schema_states_the_bounds_of_action_ids(admin: Admin) -> None:
    # A request the schema allows must not be refused: ids below 1 or past the largest
    # bigint are refused, so the schema says so.
    _, client = admin
    openapi = (await client.get("/openapi.json")).json()
    ids = openapi["components"]["schemas"]["ActionRequest"]["properties"]["ids"]
    # As a float, which 2**63 - 1 is not (it would round up to 2**63, an id that is refused).
    assert ids["items"] == {"type": "integer", "minimum": 1, "exclusiveMaximum": 2**63}
    assert (ids["minItems"], ids["maxItems"]) == (1, 1000)


@pytest.mark.parametrize("channel", ["", " ", "\t\n"])
async def test_clear_refuses_a_blank_channel_as_the_schema_says(admin: Admin, channel: str) -> None:
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1)
    response = await client.post("/admin/api/tasks/clear", json={"channel": channel})
    # FastAPI's format, as for every other refused input (the schema's 422 body).
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "channel"]
    assert error["msg"] == "Value error, must not be blank"
    assert await ref.get_state() is TaskState.ENQUEUED

    openapi = (await client.get("/openapi.json")).json()
    schema = openapi["components"]["schemas"]["ClearRequest"]["properties"]["channel"]
    assert {"type": "string", "pattern": r"\S", "maxLength": 64} in schema["anyOf"]


@pytest.mark.parametrize("value", ["0.5", "2024", "20240101", "-1", "1700000000"])
@pytest.mark.parametrize("bound", ["enqueued_after", "enqueued_before"])
async def test_times_are_iso_8601_not_numbers(admin: Admin, value: str, bound: str) -> None:
    # A number would be read as seconds since 1970: "2024" would mean 00:33:44 on
    # 1 January 1970 and silently match nearly every task.
    _, client = admin
    response = await client.get("/admin/api/tasks", params={bound: value})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", bound]
    assert "ISO 8601" in error["msg"]


async def test_iso_8601_times_are_still_taken(admin: Admin) -> None:
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1, name="dated")
    params = {"enqueued_after": "2000-01-01T00:00:00+01:00", "enqueued_before": "2999-12-31"}
    response = await client.get("/admin/api/tasks", params={**params, "name": "dated"})
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [await ref.get_task_id()]


@pytest.mark.parametrize("verb", ["cancel", "stop", "retry", "clear"])
async def test_a_body_that_is_not_utf8_is_a_422(admin: Admin, verb: str) -> None:
    # FastAPI answers 400 "There was an error parsing the body", a status the schema does not
    # document; malformed JSON is a 422 in FastAPI's format, and so is this.
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1)
    response = await client.post(
        f"/admin/api/tasks/{verb}",
        content=b'{"ids": [1], "channel": "\xff"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"]
    assert error["type"] == "json_invalid"
    assert "UTF-8" in error["msg"]
    assert await ref.get_state() is TaskState.ENQUEUED
