"""Admin API writes: cancel, stop, retry (one or many) and clear, with 404 and 409."""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from taskqueue_core import TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.fastapi import tasks
from tests.fastapi.conftest import build_app, make_config, queue_of_app, serve

pytestmark = pytest.mark.postgres

Admin = tuple[FastAPI, httpx.AsyncClient]


async def states(queue: TaskQueue, *ids: int) -> list[str]:
    found = await queue.repository.get_states(ids)
    return [found[i].value for i in ids]


async def enqueue_many(queue: TaskQueue, count: int, **options: object) -> list[int]:
    refs = [await queue.enqueue(tasks.add, i, i, **options) for i in range(count)]  # type: ignore[arg-type]
    return [await ref.get_task_id() for ref in refs]


async def test_cancel_many_cascades_to_waiting_children(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    parent = await queue.enqueue(tasks.add, 1, 1)
    child = await queue.enqueue(tasks.add, 2, 2, parent=parent)
    other = await queue.enqueue(tasks.add, 3, 3)
    ids = [await parent.get_task_id(), await other.get_task_id()]
    child_id = await child.get_task_id()

    response = await client.post("/admin/api/tasks/cancel", json={"ids": ids})
    assert response.status_code == 200, response.text
    assert sorted(response.json()["changed"]) == sorted([*ids, child_id])
    assert await states(queue, *ids, child_id) == ["cancelled"] * 3


async def test_stop_leaves_children_waiting_and_retry_puts_it_back(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    parent = await queue.enqueue(tasks.add, 1, 1)
    child = await queue.enqueue(tasks.add, 2, 2, parent=parent)
    parent_id, child_id = await parent.get_task_id(), await child.get_task_id()

    stopped = await client.post("/admin/api/tasks/stop", json={"ids": [parent_id]})
    assert stopped.status_code == 200 and stopped.json() == {"changed": [parent_id]}
    assert await states(queue, parent_id, child_id) == ["stopped", "waiting"]

    retried = await client.post("/admin/api/tasks/retry", json={"ids": [parent_id]})
    assert retried.status_code == 200 and parent_id in retried.json()["changed"]
    assert await states(queue, parent_id, child_id) == ["enqueued", "waiting"]
    await run_until_idle(queue)
    assert await states(queue, parent_id, child_id) == ["done", "done"]


async def test_retry_many_failed_tasks(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    refs = [await queue.enqueue(tasks.fail, f"error {i}") for i in range(3)]
    ids = [await ref.get_task_id() for ref in refs]
    await run_until_idle(queue)
    assert await states(queue, *ids) == ["failed"] * 3

    response = await client.post("/admin/api/tasks/retry", json={"ids": ids})
    assert response.status_code == 200
    assert sorted(response.json()["changed"]) == sorted(ids)
    assert await states(queue, *ids) == ["enqueued"] * 3
    detail = (await client.get(f"/admin/api/tasks/{ids[0]}")).json()
    assert detail["exception_name"] is None and detail["date_failed"] is None


async def test_repeated_ids_are_acted_on_once(admin: Admin) -> None:
    app, client = admin
    [task_id] = await enqueue_many(queue_of_app(app), 1)
    response = await client.post("/admin/api/tasks/cancel", json={"ids": [task_id, task_id]})
    assert response.status_code == 200 and response.json() == {"changed": [task_id]}


async def test_unknown_ids_are_404_and_nothing_changes(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    [known] = await enqueue_many(queue, 1)
    for verb in ("cancel", "stop", "retry"):
        response = await client.post(
            f"/admin/api/tasks/{verb}", json={"ids": [known, 999_998, 999_999]}
        )
        assert response.status_code == 404, verb
        assert response.json() == {"detail": "no tasks 999998, 999999"}
    assert await states(queue, known) == ["enqueued"]
    single = await client.post("/admin/api/tasks/cancel", json={"ids": [424242]})
    assert single.status_code == 404 and single.json() == {"detail": "no task has id 424242"}


async def test_wrong_state_is_409_naming_each_task_and_nothing_changes(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    done = await queue.enqueue(tasks.add, 1, 1)
    await run_until_idle(queue)
    done_id = await done.get_task_id()
    [pending] = await enqueue_many(queue, 1)

    for verb in ("cancel", "stop"):
        response = await client.post(f"/admin/api/tasks/{verb}", json={"ids": [pending, done_id]})
        assert response.status_code == 409, verb
        detail = response.json()["detail"]
        assert detail["refused"] == [{"id": done_id, "state": "done"}]
        assert detail["changed"] == []
        assert f"{done_id} is done" in detail["message"]
        assert "waiting, enqueued, doing" in detail["message"]
    assert await states(queue, pending, done_id) == ["enqueued", "done"]

    response = await client.post("/admin/api/tasks/retry", json={"ids": [done_id, pending]})
    assert response.status_code == 409
    assert response.json()["detail"]["refused"] == [
        {"id": done_id, "state": "done"},
        {"id": pending, "state": "enqueued"},
    ]
    assert await states(queue, pending, done_id) == ["enqueued", "done"]


async def test_cancel_interrupts_a_running_task(pg_url: str) -> None:
    app = build_app(make_config(pg_url), run_workers=True)
    async with serve(app) as client:
        queue = queue_of_app(app)
        ref = queue.add_task(tasks.wait_forever, "cancel-me")
        await asyncio.wait_for(tasks.started("cancel-me").wait(), timeout=15)
        task_id = await ref.get_task_id()
        response = await client.post("/admin/api/tasks/cancel", json={"ids": [task_id]})
        assert response.status_code == 200 and response.json() == {"changed": [task_id]}
        with pytest.raises(asyncio.CancelledError):
            await ref.wait(timeout=15)
        detail = (await client.get(f"/admin/api/tasks/{task_id}")).json()
        assert detail["state"] == "cancelled" and detail["date_cancelled"] is not None


async def test_clear_pending_of_one_channel_then_all(admin: Admin) -> None:
    app, client = admin
    queue = queue_of_app(app)
    done = await queue.enqueue(tasks.add, 1, 1)
    await run_until_idle(queue)
    mail = await enqueue_many(queue, 2, channel="mail")
    default = await enqueue_many(queue, 3)

    response = await client.post("/admin/api/tasks/clear", json={"channel": "mail"})
    assert response.status_code == 200 and response.json() == {"deleted": 2}
    assert await queue.repository.get_states(mail) == {}
    response = await client.post("/admin/api/tasks/clear")
    assert response.status_code == 200 and response.json() == {"deleted": 3}
    assert await queue.repository.get_states(default) == {}
    # Finished tasks are not pending: they stay.
    assert await states(queue, await done.get_task_id()) == ["done"]
    again = await client.post("/admin/api/tasks/clear", json={})
    assert again.json() == {"deleted": 0}
