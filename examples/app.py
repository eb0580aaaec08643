"""A FastAPI application using every taskqueue feature, with the admin dashboard.

Run it (embedded SQLite database, one embedded worker, no server needed)::

    python -m examples.app          # or: uvicorn examples.app:app

then open http://127.0.0.1:8000/docs for the endpoints and http://127.0.0.1:8000/admin/ for
the dashboard. The admin API wants the token of ``ADMIN_TOKEN`` (default for this local demo:
``demo-admin-token``) in an ``X-Admin-Token`` header or as ``Authorization: Bearer <token>``;
the dashboard asks for it.

On PostgreSQL: ``taskq migrate`` once, then run with
``QUEUE_DATABASE_URL=postgres://user@host:5432/db``. More worker processes:
``QUEUE_IMPORTS=examples.tasks taskq start --workers=4``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from examples import tasks
from examples.tasks import current_workspace
from taskqueue_core import QueueConfig, TaskFailed, TaskQueue, TaskTimeout, UnknownTask
from taskqueue_fastapi import get_admin_router, get_queue, taskqueue_lifespan

DEMO_ADMIN_TOKEN = "demo-admin-token"
"""The admin token when ``ADMIN_TOKEN`` is not set: fine on 127.0.0.1, never in production."""

DEMO_SECRET_KEY = "demo-secret-key-change-me"
"""Signs stored function references when ``QUEUE_SECRET_KEY`` is not set (demo only)."""


# -- access to the admin API --------------------------------------------------------------------


def require_admin(
    x_admin_token: str | None = Header(default=None),
    authorization: str | None = Header(default=None),
) -> None:
    """Let the request through if it carries the admin token; 401 otherwise."""
    expected = os.environ.get("ADMIN_TOKEN") or DEMO_ADMIN_TOKEN
    token = x_admin_token or None
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[len("bearer ") :].strip()
    if token is None or not secrets.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="admin token missing or wrong (X-Admin-Token or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )


# -- request bodies -----------------------------------------------------------------------------


class NewUser(BaseModel):
    email: str = Field(examples=["ada@example.com"])


class Order(BaseModel):
    id: int = Field(ge=1, examples=[42])
    items: list[str] = Field(default_factory=list, examples=[["book", "pen"]])


class Batch(BaseModel):
    items: list[int] = Field(min_length=1, max_length=10_000, examples=[list(range(40))])


class DynamicJob(BaseModel):
    items: list[int] = Field(default_factory=lambda: [1, 2, 3])
    factor: int = 10


# -- the application ------------------------------------------------------------------------------


def create_app(config: QueueConfig | None = None, *, run_workers: bool = True) -> FastAPI:
    """The example application; ``config`` None reads ``QUEUE_*`` variables at start-up."""
    if config is None:
        config = QueueConfig.from_env(
            secret_key=os.environ.get("QUEUE_SECRET_KEY") or DEMO_SECRET_KEY
        )
    app = FastAPI(
        title="taskqueue example",
        description="Every taskqueue feature behind a few endpoints; the dashboard is at /admin/.",
        lifespan=taskqueue_lifespan(config, run_workers=run_workers),
    )

    @app.middleware("http")
    async def workspace_from_header(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # The hooks in examples.tasks carry this value into every task the request creates.
        token = current_workspace.set(request.headers.get("x-workspace", "demo"))
        try:
            return await call_next(request)
        finally:
            current_workspace.reset(token)

    app.include_router(
        get_admin_router(dependencies=[Depends(require_admin)]),
        prefix="/admin",
    )

    @app.get("/", include_in_schema=False)
    async def index() -> dict[str, str]:
        return {"dashboard": "/admin/", "api": "/docs"}

    # 1. a plain task, its id returned to the client
    @app.post("/users", tags=["examples"])
    async def create_user(user: NewUser, queue: TaskQueue = Depends(get_queue)) -> dict[str, Any]:
        email_task = queue.add_task(tasks.send_email, user.email, "Welcome to our platform!")
        return {"email": user.email, "email_task_id": await email_task.get_task_id()}

    # 2. dependencies: the children wait for process_order
    @app.post("/orders", tags=["examples"])
    async def handle_order(order: Order, queue: TaskQueue = Depends(get_queue)) -> dict[str, Any]:
        process_task = queue.add_task(tasks.process_order, order.id)
        confirmation_task = queue.add_task(tasks.send_confirmation, order.id, parent=process_task)
        inventory_task = queue.add_task(tasks.update_inventory, order.id, parent=process_task)
        return {
            "process_task_id": await process_task.get_task_id(),
            "confirmation_task_id": await confirmation_task.get_task_id(),
            "inventory_task_id": await inventory_task.get_task_id(),
        }

    # 3. context and progress, visible live in the dashboard
    @app.post("/datasets/{dataset_id}/process", tags=["examples"])
    async def process_dataset(
        dataset_id: int,
        steps: int = Query(default=20, ge=1, le=1000),
        queue: TaskQueue = Depends(get_queue),
    ) -> dict[str, Any]:
        ref = queue.add_task(tasks.complex_data_processing, dataset_id, steps=steps)
        return {"task_id": await ref.get_task_id()}

    @app.post("/batches", tags=["examples"])
    async def process_batch(batch: Batch, queue: TaskQueue = Depends(get_queue)) -> dict[str, Any]:
        ref = queue.add_task(tasks.batch_processing_task, batch.items, channel="batch")
        return {"task_id": await ref.get_task_id()}

    # 4. a local function, stored with dill (and signed)
    @app.post("/dynamic", tags=["examples"])
    async def create_dynamic_task(
        job: DynamicJob, queue: TaskQueue = Depends(get_queue)
    ) -> dict[str, Any]:
        factor = job.factor

        async def dynamic_processing(config: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0.1)
            return {
                "processed": len(config["items"]),
                "scaled": [i * factor for i in config["items"]],
            }

        ref = queue.add_task(dynamic_processing, {"items": job.items}, name="dynamic_processing")
        return {"task_id": await ref.get_task_id()}

    # 6. task control
    @app.post("/tasks/long", tags=["task control"])
    async def start_long_task(
        seconds: float = 60.0, queue: TaskQueue = Depends(get_queue)
    ) -> dict[str, Any]:
        ref = queue.add_task(tasks.long_running_process, seconds, timeout=seconds + 30)
        return {"task_id": await ref.get_task_id(), "state": await ref.get_state()}

    @app.post("/tasks/flaky", tags=["task control"])
    async def start_flaky_task(
        fail_times: int = 2, queue: TaskQueue = Depends(get_queue)
    ) -> dict[str, Any]:
        ref = queue.add_task(tasks.flaky_operation, fail_times, max_retries=3)
        return {"task_id": await ref.get_task_id()}

    @app.get("/tasks/{task_id}/state", tags=["task control"])
    async def task_state(task_id: int, queue: TaskQueue = Depends(get_queue)) -> dict[str, Any]:
        try:
            state = await queue.ref(task_id).get_state()
        except UnknownTask:
            raise HTTPException(404, f"no task has id {task_id}") from None
        return {"task_id": task_id, "state": state}

    @app.post("/tasks/{task_id}/cancel", tags=["task control"])
    async def cancel_task(task_id: int, queue: TaskQueue = Depends(get_queue)) -> dict[str, Any]:
        return {"cancelled": await queue.ref(task_id).cancel()}

    @app.post("/tasks/{task_id}/stop", tags=["task control"])
    async def stop_task(task_id: int, queue: TaskQueue = Depends(get_queue)) -> dict[str, Any]:
        return {"stopped": await queue.ref(task_id).stop()}

    @app.get("/tasks/{task_id}/wait", tags=["task control"])
    async def wait_task(
        task_id: int,
        timeout: float = 30.0,  # noqa: ASYNC109 (how long this request waits for the task)
        queue: TaskQueue = Depends(get_queue),
    ) -> dict[str, Any]:
        try:
            result = await queue.ref(task_id).wait(timeout=timeout)
        except asyncio.CancelledError as error:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request itself is being cancelled (client gone, shutdown)
            # The task was cancelled or stopped: wait() says so with CancelledError.
            return {"success": False, "reason": str(error) or "task was cancelled"}
        except TaskFailed as error:
            return {
                "success": False,
                "reason": f"{error.exception_name}: {error.exception_message}",
            }
        except TaskTimeout:
            return {"success": False, "reason": f"still running after {timeout} s"}
        except UnknownTask:
            raise HTTPException(404, f"no task has id {task_id}") from None
        return {"success": True, "result": result}

    return app


app = create_app()


if __name__ == "__main__":
    import uvicorn

    # By import string, so that the tasks are stored as "examples.tasks.*" (not "__main__").
    uvicorn.run("examples.app:app", host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
