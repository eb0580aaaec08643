"""A FastAPI application for ``taskq serve tests.cli.app:app`` in the console tests."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from taskqueue_core import TaskQueue
from taskqueue_fastapi import get_queue, taskqueue_lifespan
from tests.cli import tasks

app = FastAPI(lifespan=taskqueue_lifespan())


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/add")
async def add(a: int, b: int, queue: TaskQueue = Depends(get_queue)) -> dict[str, int]:
    ref = queue.add_task(tasks.add, a, b)
    return {"task_id": await ref.get_task_id()}
