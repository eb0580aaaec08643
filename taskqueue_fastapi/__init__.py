"""FastAPI adapter of taskqueue: lifespan, ``Depends(get_queue)``, admin router and dashboard.

::

    from fastapi import Depends, FastAPI
    from taskqueue_core import TaskQueue
    from taskqueue_fastapi import get_admin_router, get_queue, taskqueue_lifespan

    app = FastAPI(lifespan=taskqueue_lifespan())
    app.include_router(get_admin_router(dependencies=[Depends(require_admin)]), prefix="/admin")

HTTP exists only here: the core raises its own errors, which the admin router maps to status
codes (``UnknownTask`` 404, ``InvalidTransition`` 409, bad input 422).
"""

from __future__ import annotations

from taskqueue_fastapi.dependencies import get_queue, queue_of
from taskqueue_fastapi.lifespan import TaskQueueLifespan, taskqueue_lifespan
from taskqueue_fastapi.router import get_admin_router

__all__ = [
    "TaskQueueLifespan",
    "get_admin_router",
    "get_queue",
    "queue_of",
    "taskqueue_lifespan",
]
