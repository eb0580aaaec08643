"""The seed README's examples, with imports adapted to taskqueue (module-level: stored by path).

Adaptations: ``QueuedTasks = Inject(QueuedTasks)`` is ``TaskQueue = Depends(get_queue)``;
``fastedgy.queued_task`` imports come from ``taskqueue_core``; the application's own pieces
the seed leaves out (a user table, a workspace model, a database connection) are small
in-memory stand-ins below. The hooks register in this module's own ``hooks`` registry (the
seed's module-level decorators fill the global one; the test queue is given this one so
other tests' queues are not affected).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI

from taskqueue_core import HookRegistry, TaskQueue, get_context, getLogger, set_context
from taskqueue_fastapi import get_queue

app = FastAPI()

# -- stand-ins for the application around the examples -----------------------------------

users: dict[int, dict[str, Any]] = {}
processed_items: list[Any] = []


async def create_user_in_db(user_data: dict[str, Any]) -> Any:
    user_id = len(users) + 1
    users[user_id] = {"id": user_id, **user_data}

    class User:
        id = user_id
        email = user_data["email"]

    return User()


async def process_item(item: Any) -> None:
    processed_items.append(item)
    await asyncio.sleep(0)


async def validate_dataset(dataset_id: int) -> None:
    if dataset_id < 0:
        raise ValidationError(f"dataset {dataset_id} does not exist")


async def process_data(data: Any) -> list[int]:
    return list(range(int(data) if not isinstance(data, dict) else len(data)))


async def save_results(results: list[int]) -> None:
    await asyncio.sleep(0)


def validate_data(data: dict[str, Any]) -> None:
    if "value" not in data:
        raise ValidationError("value is required")


class ValidationError(Exception):
    pass


class _Connection:
    async def execute(self, query_params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"row": i} for i in range(query_params.get("rows", 0))]


@asynccontextmanager
async def get_db_connection() -> AsyncIterator[_Connection]:
    yield _Connection()


workspaces = {1: "Acme", 2: "Globex"}
current_workspace: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "current_workspace", default=None
)
current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request", default=None
)
cleanups: list[int] = []

# -- 1. Basic Task Creation ------------------------------------------------------------


# Simple async function
async def send_email(recipient: str, subject: str) -> dict[str, Any]:
    # Your email logic here
    return {"sent": True, "recipient": recipient}


# In your FastAPI endpoint
@app.post("/users")
async def create_user(
    user_data: dict[str, Any], queued_tasks: TaskQueue = Depends(get_queue)
) -> Any:
    # Create user in database
    user = await create_user_in_db(user_data)

    # Send welcome email asynchronously
    email_task = queued_tasks.add_task(send_email, user.email, "Welcome to our platform!")

    # Use get_task_id() only if task ID must be returned to the user
    return {"user_id": user.id, "email_task_id": await email_task.get_task_id()}


# -- 2. Task Dependencies ---------------------------------------------------------------


async def process_order(order_id: int) -> dict[str, Any]:
    # Process order logic
    return {"order_id": order_id, "status": "processed"}


async def send_confirmation(order_id: int) -> dict[str, Any]:
    # Send confirmation email
    return {"confirmation_sent": True}


async def update_inventory(order_id: int) -> dict[str, Any]:
    # Update inventory levels
    return {"inventory_updated": True}


# Create dependent tasks
@app.post("/orders")
async def handle_order(
    order_data: dict[str, Any], queued_tasks: TaskQueue = Depends(get_queue)
) -> Any:
    # Main processing task
    process_task = queued_tasks.add_task(process_order, order_data["id"])

    # These will wait for process_task to complete
    confirmation_task = queued_tasks.add_task(
        send_confirmation, order_data["id"], parent=process_task
    )

    inventory_task = queued_tasks.add_task(update_inventory, order_data["id"], parent=process_task)

    return {
        "process_task_id": await process_task.get_task_id(),
        "confirmation_task_id": await confirmation_task.get_task_id(),
        "inventory_task_id": await inventory_task.get_task_id(),
    }


# -- 3. Context Management --------------------------------------------------------------


async def complex_data_processing(dataset_id: int) -> dict[str, Any]:
    logger = getLogger("data.processing")

    # Set initial context
    set_context("dataset.id", dataset_id)
    set_context("progress", 0)
    set_context("step", "validation")

    logger.info(f"Starting processing for dataset {dataset_id}")

    # Validation step
    set_context("validation.start_time", datetime.now().isoformat())
    await validate_dataset(dataset_id)
    set_context("validation.status", "completed")
    set_context("progress", 25)

    # Processing step
    set_context("step", "processing")
    results = await process_data(dataset_id)
    set_context("processing.records_processed", len(results))
    set_context("progress", 75)

    # Final step
    set_context("step", "saving")
    await save_results(results)
    set_context("progress", 100)
    set_context("step", "completed")

    # Access context from other parts
    total_records = get_context("processing.records_processed", 0)
    logger.info(f"Completed processing {total_records} records")

    return {"success": True, "records": total_records}


# -- 4. Local Functions (Advanced) --------------------------------------------------------


@app.post("/dynamic")
async def create_dynamic_task(queued_tasks: TaskQueue = Depends(get_queue)) -> Any:
    # Define task function locally (useful for dynamic behavior)
    async def dynamic_processing(config: dict[str, Any]) -> dict[str, Any]:
        # This function is defined locally and will be serialized
        for item in config["items"]:
            await process_item(item)
        return {"processed": len(config["items"])}

    # This works! Local functions are automatically serialized with dill
    task_ref = queued_tasks.add_task(dynamic_processing, {"items": [1, 2, 3]})

    # Use get_task_id() only if task ID must be returned to the user
    return {"task_id": await task_ref.get_task_id()}


# -- 6. Task Lifecycle Hooks (Extension System) -------------------------------------------

hooks = HookRegistry()


# Simple decorators auto-register hooks
@hooks.on_pre_create
async def capture_workspace_context(task: Any) -> None:
    """Capture current workspace context when creating a task (before save)"""
    current = current_workspace.get()
    task.context.update({"workspace_id": current if current else None})


@hooks.on_pre_run
async def restore_workspace_context(task: Any) -> None:
    """Restore workspace context before executing a task"""
    workspace_id = task.context.get("workspace_id")
    if workspace_id:
        await asyncio.sleep(0)  # the seed loads the workspace from the database
        current_request.set(f"task-{task.id}")
        current_workspace.set(workspace_id)


@hooks.on_post_run
async def cleanup_context(task: Any, result: Any = None, error: Any = None) -> None:
    """Clean up context after task execution"""
    current_request.set(None)
    cleanups.append(task.id)


async def workspace_report() -> dict[str, Any]:
    workspace_id = current_workspace.get()
    return {
        "workspace": workspaces.get(workspace_id) if workspace_id else None,
        "request": current_request.get(),
    }


def sync_workspace_report() -> dict[str, Any]:
    workspace_id = current_workspace.get()
    return {"workspace": workspaces.get(workspace_id) if workspace_id else None}


@app.post("/workspaces/{workspace_id}/report")
async def request_report(workspace_id: int, queued_tasks: TaskQueue = Depends(get_queue)) -> Any:
    current_workspace.set(workspace_id)  # what the application's middleware does
    ref = queued_tasks.add_task(workspace_report)
    sync_ref = queued_tasks.add_task(sync_workspace_report)
    return {"task_id": await ref.get_task_id(), "sync_task_id": await sync_ref.get_task_id()}


# -- 6. Task Control ---------------------------------------------------------------------

running: dict[str, asyncio.Event] = {}


async def long_running_process(data: dict[str, Any]) -> dict[str, Any]:
    running.setdefault(data["key"], asyncio.Event()).set()
    await asyncio.sleep(data["seconds"])
    return {"processed": data["key"]}


@app.post("/manage")
async def manage_tasks(data: dict[str, Any], queued_tasks: TaskQueue = Depends(get_queue)) -> Any:
    # Create a long-running task
    task_ref = queued_tasks.add_task(long_running_process, data)

    # Wait for creation
    task_id = await task_ref.get_task_id()

    # Check status
    current_state = await task_ref.get_state()
    some_condition = data.get("cancel", False)

    # Cancel if needed
    if some_condition:
        await asyncio.wait_for(running.setdefault(data["key"], asyncio.Event()).wait(), 10)
        task_ref.cancel()

    # Or wait for completion
    try:
        result = await task_ref.wait()
        return {"success": True, "result": result, "task_id": task_id, "state": current_state}
    except asyncio.CancelledError:
        return {"success": False, "reason": "Task was cancelled", "task_id": task_id}


# -- Best Practices ------------------------------------------------------------------------


async def robust_task(data: dict[str, Any]) -> Any:
    try:
        set_context("step", "validation")
        validate_data(data)

        set_context("step", "processing")
        result = await process_data(data)

        set_context("step", "completed")
        return result

    except ValidationError as e:
        set_context("error.type", "validation")
        set_context("error.details", str(e))
        raise
    except Exception as e:
        set_context("error.type", "unexpected")
        set_context("error.details", str(e))
        raise


async def database_intensive_task(query_params: dict[str, Any]) -> Any:
    # Use context to track resource usage
    set_context("resources.database_connections", 0)

    async with get_db_connection() as conn:
        set_context("resources.database_connections", 1)

        # Process with connection
        result = await conn.execute(query_params)

        set_context("resources.processed_rows", len(result))
        return result


logger = getLogger("batch")


async def batch_processing_task(items: list[Any]) -> None:
    total_items = len(items)
    set_context("progress.total", total_items)
    set_context("progress.completed", 0)

    for i, item in enumerate(items):
        await process_item(item)

        # Update progress
        completed = i + 1
        set_context("progress.completed", completed)
        set_context("progress.percentage", (completed / total_items) * 100)

        # Log every 10%
        if completed % (total_items // 10) == 0:
            logger.info(
                f"Progress: {completed}/{total_items} ({(completed / total_items) * 100:.1f}%)"
            )


# -- Log Analysis ---------------------------------------------------------------------------


async def log_analysis() -> None:
    # Enhanced logging automatically goes to both console and database
    logger = getLogger("my.module")
    logger.info("Processing started")
    logger.warning("Potential issue detected")
    logger.error("Task failed", extra={"context": {"step": "validation"}})
