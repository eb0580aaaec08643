"""FastAPI applications for ``taskq serve`` in the console tests: ``app`` has
``taskqueue_lifespan`` as its lifespan, ``composed`` enters it inside a lifespan of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

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


@contextlib.asynccontextmanager
async def _own_lifespan(app: FastAPI) -> AsyncIterator[None]:
    # An application lifespan that enters taskqueue_lifespan itself: taskq serve cannot find
    # it on the application object.
    async with taskqueue_lifespan()(app):
        yield


composed = FastAPI(lifespan=_own_lifespan)
composed.get("/health")(health)
composed.post("/add")(add)
