"""The seed README's examples (sections 1-4, 6, Best Practices, Progress Tracking, Log
Analysis) run end to end on PostgreSQL: FastAPI endpoints add tasks, a worker runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest

from taskqueue_core import TaskFailed, TaskQueue, TaskState
from taskqueue_core.testing import run_until_idle
from taskqueue_core.tortoise.postgres import PostgresRepository
from taskqueue_fastapi.dependencies import STATE_KEY
from tests.execution import seed_app
from tests.execution.conftest import make_config, running_worker

pytestmark = pytest.mark.postgres


@pytest.fixture
async def queue(pg_url: str) -> AsyncIterator[TaskQueue]:
    seed_app.processed_items.clear()
    seed_app.cleanups.clear()
    seed_app.running.clear()
    queue = TaskQueue(make_config(), repository=PostgresRepository(pg_url), hooks=seed_app.hooks)
    await queue.open()
    setattr(seed_app.app.state, STATE_KEY, queue)
    try:
        yield queue
    finally:
        delattr(seed_app.app.state, STATE_KEY)
        await queue.close()


@pytest.fixture
async def client(queue: TaskQueue) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=seed_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client


async def _post(client: httpx.AsyncClient, path: str, body: Any = None) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_1_basic_task_creation(queue: TaskQueue, client: httpx.AsyncClient) -> None:
    body = await _post(client, "/users", {"email": "ada@example.com"})
    await run_until_idle(queue)
    task = await queue.get_task(body["email_task_id"])
    assert task.state is TaskState.DONE
    assert task.result == {"sent": True, "recipient": "ada@example.com"}
    assert task.args == ["ada@example.com", "Welcome to our platform!"]
    assert task.name == "tests.execution.seed_app.send_email"


async def test_2_task_dependencies(queue: TaskQueue, client: httpx.AsyncClient) -> None:
    body = await _post(client, "/orders", {"id": 42})
    parent = await queue.get_task(body["process_task_id"])
    assert parent.state is TaskState.ENQUEUED
    for key in ("confirmation_task_id", "inventory_task_id"):
        child = await queue.get_task(body[key])
        assert (child.state, child.parent_task) == (TaskState.WAITING, parent.id)
    await run_until_idle(queue)
    parent = await queue.get_task(body["process_task_id"])
    confirmation = await queue.get_task(body["confirmation_task_id"])
    inventory = await queue.get_task(body["inventory_task_id"])
    assert parent.result == {"order_id": 42, "status": "processed"}
    assert confirmation.result == {"confirmation_sent": True}
    assert inventory.result == {"inventory_updated": True}
    assert parent.date_done is not None
    for child in (confirmation, inventory):
        assert child.date_started is not None and child.date_started >= parent.date_done


async def test_3_context_management(queue: TaskQueue) -> None:
    ref = queue.add_task(seed_app.complex_data_processing, 7)
    await run_until_idle(queue)
    assert await ref.wait(5) == {"success": True, "records": 7}
    task = await ref.get_task()
    context = task.context
    assert context["dataset"] == {"id": 7}
    assert (context["progress"], context["step"]) == (100, "completed")
    assert context["validation"]["status"] == "completed"
    assert context["validation"]["start_time"]
    assert context["processing"] == {"records_processed": 7}
    logs = await queue.get_logs(task.id)
    assert [(log.name, log.message) for log in logs] == [
        ("data.processing", "Starting processing for dataset 7"),
        ("data.processing", "Completed processing 7 records"),
    ]


async def test_3_context_management_failure_keeps_the_context(queue: TaskQueue) -> None:
    ref = queue.add_task(seed_app.complex_data_processing, -1, max_retries=0)
    await run_until_idle(queue)
    with pytest.raises(TaskFailed) as caught:
        await ref.wait(5)
    assert caught.value.exception_name == "ValidationError"
    context = (await ref.get_task()).context
    assert (context["step"], context["progress"]) == ("validation", 0)


async def test_4_local_functions(queue: TaskQueue, client: httpx.AsyncClient) -> None:
    body = await _post(client, "/dynamic")
    task = await queue.get_task(body["task_id"])
    assert task.function.serialized_function is not None
    assert task.function.signature is not None
    await run_until_idle(queue)
    task = await queue.get_task(body["task_id"])
    assert (task.state, task.result) == (TaskState.DONE, {"processed": 3})
    assert seed_app.processed_items == [1, 2, 3]


async def test_6_lifecycle_hooks(queue: TaskQueue, client: httpx.AsyncClient) -> None:
    body = await _post(client, "/workspaces/2/report")
    created = await queue.get_task(body["task_id"])
    assert created.context == {"workspace_id": 2}
    await run_until_idle(queue)
    report = await queue.get_task(body["task_id"])
    assert report.result == {"workspace": "Globex", "request": f"task-{report.id}"}
    # The workspace restored by the pre_run hook reaches a plain function's thread too.
    sync_report = await queue.get_task(body["sync_task_id"])
    assert sync_report.result == {"workspace": "Globex"}
    assert sorted(seed_app.cleanups) == sorted([report.id, sync_report.id])


async def test_6_task_control_wait(queue: TaskQueue, client: httpx.AsyncClient) -> None:
    async with running_worker(queue):
        body = await _post(client, "/manage", {"key": "wait", "seconds": 0.05})
    assert body["success"] is True
    assert body["result"] == {"processed": "wait"}
    assert body["state"] in ("enqueued", "doing")


async def test_6_task_control_cancel(queue: TaskQueue, client: httpx.AsyncClient) -> None:
    async with running_worker(queue):
        body = await _post(client, "/manage", {"key": "cancel", "seconds": 60, "cancel": True})
    assert body == {"success": False, "reason": "Task was cancelled", "task_id": body["task_id"]}
    assert (await queue.get_task(body["task_id"])).state is TaskState.CANCELLED


async def test_best_practices_error_handling(queue: TaskQueue) -> None:
    good = queue.add_task(seed_app.robust_task, {"value": 1, "other": 2})
    bad = queue.add_task(seed_app.robust_task, {"other": 2}, max_retries=0)
    await run_until_idle(queue)
    assert await good.wait(5) == [0, 1]
    # Every task of this queue went through the workspace pre_create hook (section 6).
    assert (await good.get_task()).context == {"workspace_id": None, "step": "completed"}
    with pytest.raises(TaskFailed) as caught:
        await bad.wait(5)
    assert caught.value.exception_name == "ValidationError"
    assert (await bad.get_task()).context == {
        "workspace_id": None,
        "step": "validation",
        "error": {"type": "validation", "details": "value is required"},
    }


async def test_best_practices_resource_management(queue: TaskQueue) -> None:
    ref = queue.add_task(seed_app.database_intensive_task, {"rows": 3})
    await run_until_idle(queue)
    assert await ref.wait(5) == [{"row": 0}, {"row": 1}, {"row": 2}]
    assert (await ref.get_task()).context == {
        "workspace_id": None,
        "resources": {"database_connections": 1, "processed_rows": 3},
    }


async def test_best_practices_progress_tracking(queue: TaskQueue) -> None:
    ref = queue.add_task(seed_app.batch_processing_task, list(range(50)))
    await run_until_idle(queue)
    await ref.wait(5)
    task = await ref.get_task()
    assert task.context == {
        "workspace_id": None,
        "progress": {"total": 50, "completed": 50, "percentage": 100.0},
    }
    logs = await queue.get_logs(task.id)
    assert [log.message for log in logs] == [
        f"Progress: {n}/50 ({n * 2:.1f}%)" for n in range(5, 51, 5)
    ]
    assert {log.name for log in logs} == {"batch"}


async def test_log_analysis(queue: TaskQueue) -> None:
    ref = queue.add_task(seed_app.log_analysis)
    await run_until_idle(queue)
    await ref.wait(5)
    logs = await queue.get_logs(await ref.get_task_id())
    assert [(log.type, log.name, log.message, log.info) for log in logs] == [
        ("info", "my.module", "Processing started", None),
        ("warning", "my.module", "Potential issue detected", None),
        ("error", "my.module", "Task failed", {"context": {"step": "validation"}}),
    ]
