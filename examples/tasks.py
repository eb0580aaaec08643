"""The example application's tasks and hooks.

They live in their own module so that their import path (``examples.tasks.send_email``) is
the same in the web process and in a separate worker (``QUEUE_IMPORTS=examples.tasks
taskq start``), and so that the hooks are registered once, when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from datetime import UTC, datetime
from typing import Any

from taskqueue_core import (
    NewTask,
    Task,
    get_context,
    getLogger,
    on_post_run,
    on_pre_create,
    on_pre_run,
    set_context,
)

# -- a request-scoped value carried into tasks by hooks (seed: "Task Lifecycle Hooks") -------

current_workspace: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_workspace", default=None
)
"""The workspace of the request being served (set from the ``X-Workspace`` header)."""


@on_pre_create
async def capture_workspace(task: NewTask) -> None:
    """Store the creating request's workspace in the task's context."""
    task.context.update({"workspace": current_workspace.get()})


@on_pre_run
async def restore_workspace(task: Task) -> None:
    """Make the workspace current again while the task runs."""
    current_workspace.set(task.context.get("workspace"))


@on_post_run
async def forget_workspace(task: Task, result: Any = None, error: Any = None) -> None:
    """Clean up after the task, whether it succeeded or failed."""
    current_workspace.set(None)


# -- 1. a plain task ---------------------------------------------------------------------------


async def send_email(recipient: str, subject: str) -> dict[str, Any]:
    """Pretend to send an email."""
    logger = getLogger("examples.mail")
    logger.info(f"sending {subject!r} to {recipient} (workspace {current_workspace.get()})")
    await asyncio.sleep(0.3)
    return {"sent": True, "recipient": recipient, "workspace": current_workspace.get()}


# -- 2. dependencies ---------------------------------------------------------------------------


async def process_order(order_id: int) -> dict[str, Any]:
    """The parent: its children wait until it is done."""
    getLogger("examples.orders").info(f"processing order {order_id}")
    await asyncio.sleep(1.0)
    return {"order_id": order_id, "status": "processed"}


async def send_confirmation(order_id: int) -> dict[str, Any]:
    """Runs once ``process_order`` is done."""
    getLogger("examples.orders").info(f"confirmation for order {order_id}")
    await asyncio.sleep(0.2)
    return {"confirmation_sent": True}


def update_inventory(order_id: int) -> dict[str, Any]:
    """A plain (sync) function: it runs in a worker thread."""
    getLogger("examples.orders").info(f"inventory for order {order_id}")
    time.sleep(0.2)
    return {"inventory_updated": True}


# -- 3. context and progress -------------------------------------------------------------------


async def complex_data_processing(dataset_id: int, steps: int = 20) -> dict[str, Any]:
    """Reports its step and progress through the context while it runs."""
    logger = getLogger("examples.data")
    set_context("dataset.id", dataset_id)
    set_context("progress", 0)
    set_context("step", "validation")
    logger.info(f"starting processing for dataset {dataset_id}")

    set_context("validation.start_time", datetime.now(UTC).isoformat())
    await asyncio.sleep(0.5)
    set_context("validation.status", "completed")
    set_context("progress", 10)

    set_context("step", "processing")
    records = 0
    for step in range(1, steps + 1):
        await asyncio.sleep(0.25)
        records += random.randint(50, 150)
        set_context("processing.records_processed", records)
        set_context("progress", 10 + round(80 * step / steps))
        if step % 5 == 0:
            logger.info(f"processed {records} records ({step}/{steps} batches)")

    set_context("step", "saving")
    await asyncio.sleep(0.5)
    set_context("progress", 100)
    set_context("step", "completed")
    total = get_context("processing.records_processed", 0)
    logger.info(f"completed processing {total} records")
    return {"success": True, "records": total}


def batch_processing_task(items: list[int]) -> dict[str, Any]:
    """A sync task reporting ``progress.completed`` / ``progress.percentage``."""
    logger = getLogger("examples.batch")
    total = len(items)
    set_context("progress.total", total)
    set_context("progress.completed", 0)
    for index, _item in enumerate(items):
        time.sleep(0.1)
        completed = index + 1
        set_context("progress.completed", completed)
        set_context("progress.percentage", round(completed / total * 100, 1))
        if completed % max(1, total // 4) == 0:
            logger.info(f"progress: {completed}/{total}")
    return {"processed": total}


# -- 6. task control ---------------------------------------------------------------------------


async def long_running_process(seconds: float) -> dict[str, Any]:
    """Runs for ``seconds`` (until cancelled or stopped), ticking its progress."""
    logger = getLogger("examples.long")
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        set_context("progress", round(100 * elapsed / seconds, 1))
        await asyncio.sleep(0.5)
    logger.info(f"ran for {seconds} s")
    return {"slept": seconds}


async def flaky_operation(fail_times: int) -> dict[str, Any]:
    """Fails on its first ``fail_times`` attempts (each is retried with backoff)."""
    attempt = get_context("attempt", 0) + 1
    set_context("attempt", attempt)
    if attempt <= fail_times:
        getLogger("examples.flaky").warning(f"attempt {attempt} fails")
        raise ConnectionError(f"upstream refused the connection (attempt {attempt})")
    return {"succeeded_on_attempt": attempt}
