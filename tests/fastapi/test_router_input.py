"""Bad input to the admin API is a 422 that says what is wrong, never a 500.

The requests here are refused before they reach the database, so the whole module shares one
database and one running application (tests only ever look at tasks they created).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from taskqueue_core import TaskState
from tests.conftest import create_database, database_url, drop_database
from tests.fastapi import tasks
from tests.fastapi.conftest import build_app, make_config, queue_of_app, serve

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]

Admin = tuple[FastAPI, httpx.AsyncClient]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(pg_template: str) -> AsyncIterator[Admin]:
    """One app (no embedded workers) on one fresh database for the module."""
    name = await create_database(template=pg_template)
    try:
        app = build_app(make_config(database_url(name)))
        async with serve(app) as client:
            yield app, client
    finally:
        await drop_database(name)


TOO_BIG = 2**63  # one past the largest bigint


def messages(response: httpx.Response) -> str:
    """Every error message of a 422, with the location it names."""
    assert response.status_code == 422, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    return " | ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "sleeping"}, "query.state.0: Input should be 'waiting', 'enqueued'"),
        ({"state": ["done", "nope"]}, "query.state.1: Input should be"),
        ({"limit": -1}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": 501}, "query.limit: Input should be less than or equal to 500"),
        ({"limit": "ten"}, "query.limit: Input should be a valid integer"),
        ({"offset": -5}, "query.offset: Input should be greater than or equal to 0"),
        ({"parent": 0}, "query.parent: Input should be greater than or equal to 1"),
        ({"parent": TOO_BIG}, "query.parent: Input should be less than or equal to"),
        ({"parent": "abc"}, "query.parent: Input should be a valid integer"),
        ({"colour": "red"}, "query.colour: Extra inputs are not permitted"),
        ({"states": "done"}, "query.states: Extra inputs are not permitted"),
        ({"enqueued_after": "yesterday"}, "query.enqueued_after: Input should be a valid datetime"),
        (
            {"enqueued_after": "2030-01-02T00:00:00Z", "enqueued_before": "2030-01-01T00:00:00Z"},
            "enqueued_after must be earlier than enqueued_before",
        ),
        ({"name": "x" * 256}, "query.name: String should have at most 255 characters"),
        ({"name": "a\x00b"}, "query.name: Value error, must not contain a NUL character"),
        ({"channel": "\x00"}, "query.channel: Value error, must not contain a NUL character"),
        ({"offset": TOO_BIG}, "query.offset: Input should be less than or equal to"),
    ],
)
async def test_list_refuses_bad_filters(
    admin: Admin, params: dict[str, Any], expected: str
) -> None:
    _, client = admin
    assert expected in messages(await client.get("/admin/api/tasks", params=params))


@pytest.mark.parametrize(
    "params",
    [
        {"name": "%"},
        {"name": "_"},
        {"name": "\\"},
        {"channel": "ü😀"},
        {"offset": TOO_BIG - 1},
        {"enqueued_after": "0001-01-01T00:00:00", "enqueued_before": "9999-12-31T23:59:59"},
    ],
)
async def test_odd_but_valid_filters_are_answered(admin: Admin, params: dict[str, Any]) -> None:
    app, client = admin
    await queue_of_app(app).enqueue(tasks.add, 1, 1, name="plain", channel="plain")
    response = await client.get("/admin/api/tasks", params=params)
    assert response.status_code == 200
    # Wildcards and odd characters are matched literally: no task has them in its name.
    if "name" in params or "channel" in params:
        assert response.json()["items"] == []


async def test_naive_times_are_taken_as_utc(admin: Admin) -> None:
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1, name="naive-time")
    task = await ref.get_task()
    naive = task.date_enqueued.replace(tzinfo=None).isoformat()
    params = {"enqueued_after": naive, "name": "naive-time"}
    response = await client.get("/admin/api/tasks", params=params)
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == [task.id]


@pytest.mark.parametrize(
    ("task_id", "expected"),
    [
        ("abc", "path.task_id: Input should be a valid integer"),
        ("1.5", "path.task_id: Input should be a valid integer"),
        ("0", "path.task_id: Input should be greater than or equal to 1"),
        ("-3", "path.task_id: Input should be greater than or equal to 1"),
        (str(TOO_BIG), "path.task_id: Input should be less than or equal to"),
    ],
)
@pytest.mark.parametrize("suffix", ["", "/tree", "/logs"])
async def test_bad_task_ids_in_paths(
    admin: Admin, task_id: str, expected: str, suffix: str
) -> None:
    _, client = admin
    assert expected in messages(await client.get(f"/admin/api/tasks/{task_id}{suffix}"))


@pytest.mark.parametrize("suffix", ["", "/tree", "/logs"])
async def test_unknown_task_is_404(admin: Admin, suffix: str) -> None:
    _, client = admin
    response = await client.get(f"/admin/api/tasks/987654{suffix}")
    assert response.status_code == 404
    assert "987654" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"after_id": -1}, "query.after_id: Input should be greater than or equal to 0"),
        ({"after_id": "last"}, "query.after_id: Input should be a valid integer"),
        ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": 1001}, "query.limit: Input should be less than or equal to 1000"),
        ({"follow": "yes"}, "query.follow: Extra inputs are not permitted"),
    ],
)
async def test_logs_refuse_bad_parameters(
    admin: Admin, params: dict[str, Any], expected: str
) -> None:
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1)
    url = f"/admin/api/tasks/{await ref.get_task_id()}/logs"
    assert expected in messages(await client.get(url, params=params))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "body.ids: Field required"),
        ({"ids": []}, "body.ids: List should have at least 1 item"),
        ({"ids": 5}, "body.ids: Input should be a valid list"),
        ({"ids": ["seven"]}, "body.ids.0: Input should be a valid integer"),
        ({"ids": [1.5]}, "body.ids.0: Input should be a valid integer"),
        ({"ids": [1.0]}, "body.ids.0: Input should be a valid integer"),
        ({"ids": ["5"]}, "body.ids.0: Input should be a valid integer"),
        ({"ids": [True]}, "body.ids.0: Input should be a valid integer"),
        ({"ids": [0, -2]}, "task ids must be positive 64-bit integers, got [0, -2]"),
        ({"ids": [TOO_BIG]}, "task ids must be positive 64-bit integers"),
        ({"ids": list(range(1, 1002))}, "body.ids: List should have at most 1000 items"),
        ({"ids": [1], "force": True}, "body.force: Extra inputs are not permitted"),
        (None, "body: Field required"),
    ],
)
@pytest.mark.parametrize("verb", ["cancel", "stop", "retry"])
async def test_actions_refuse_bad_bodies(admin: Admin, verb: str, body: Any, expected: str) -> None:
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1)
    response = await client.post(f"/admin/api/tasks/{verb}", json=body)
    assert expected in messages(response)
    assert await ref.get_state() is TaskState.ENQUEUED


async def test_actions_refuse_a_body_that_is_not_json(admin: Admin) -> None:
    _, client = admin
    response = await client.post(
        "/admin/api/tasks/cancel",
        content=b"ids=1",
        headers={"Content-Type": "application/json"},
    )
    assert "JSON decode error" in messages(response)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"channel": 5}, "body.channel: Input should be a valid string"),
        ({"channel": "c" * 65}, "body.channel: String should have at most 64 characters"),
        ({"channels": ["a"]}, "body.channels: Extra inputs are not permitted"),
        ({"channel": "a\x00"}, "body.channel: Value error, must not contain a NUL character"),
    ],
)
async def test_clear_refuses_bad_bodies(admin: Admin, body: Any, expected: str) -> None:
    app, client = admin
    ref = await queue_of_app(app).enqueue(tasks.add, 1, 1)
    assert expected in messages(await client.post("/admin/api/tasks/clear", json=body))
    assert await ref.get_state() is TaskState.ENQUEUED


async def test_clear_refuses_a_blank_channel(admin: Admin) -> None:
    # The core refuses it (InvalidTaskError); the adapter turns that into a 422.
    _, client = admin
    response = await client.post("/admin/api/tasks/clear", json={"channel": ""})
    assert response.status_code == 422
    assert "channel" in str(response.json()["detail"])
