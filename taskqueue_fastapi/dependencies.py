"""``Depends(get_queue)``: the application's TaskQueue, flushed before the response is sent.

The queue is the one opened by ``taskqueue_lifespan`` and kept in ``app.state.taskqueue`` (and
in the lifespan state, which reaches mounted sub-applications). Tests and special setups swap
it with ``app.dependency_overrides[get_queue] = ...``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import Depends, Request

from taskqueue_core.exceptions import QueueClosed

# Imported at run time: FastAPI resolves the (string) annotations of dependencies.
from taskqueue_core.queue import TaskQueue

__all__ = ["STATE_KEY", "get_queue", "queue_of"]

_log = logging.getLogger("taskqueue.fastapi")

STATE_KEY = "taskqueue"
"""Name of the queue in ``app.state`` and in the lifespan state."""


def queue_of(request: Request) -> TaskQueue:
    """The queue opened for the application serving ``request``.

    Raises ``QueueClosed`` when no ``taskqueue_lifespan`` runs for this application.
    """
    queue: TaskQueue | None = getattr(request.app.state, STATE_KEY, None)
    if queue is None:
        # A sub-application mounted under the host has its own app.state; the lifespan
        # state (copied into every request's state) still carries the host's queue.
        queue = getattr(request.state, STATE_KEY, None)
    if queue is None:
        raise QueueClosed(
            "no task queue is open for this application: create it with "
            "FastAPI(lifespan=taskqueue_lifespan()) or enter taskqueue_lifespan()(app) "
            "in your own lifespan"
        )
    return queue


async def _flushing_queue(request: Request) -> AsyncIterator[TaskQueue]:
    """Yield the queue; once the endpoint has returned, write every add_task it made.

    Used with ``scope="function"``: FastAPI runs the code after ``yield`` when the endpoint
    function returns, before the response is sent (the default "request" scope would run it
    after the response is sent, too late to promise the client that its tasks exist).
    """
    queue = queue_of(request)
    try:
        yield queue
    except BaseException:
        # The endpoint failed: the tasks it added are still created (add_task never loses
        # them), but a flush error must not hide the endpoint's own error.
        try:
            await queue.flush()
        except Exception:
            _log.warning("flushing task creations after a failed request failed", exc_info=True)
        raise
    await queue.flush()


def get_queue(queue: TaskQueue = Depends(_flushing_queue, scope="function")) -> TaskQueue:
    """The application's task queue: ``queue: TaskQueue = Depends(get_queue)``.

    Every ``queue.add_task`` made during the request is stored before the response is sent.
    Raises ``QueueClosed`` when the application runs no ``taskqueue_lifespan``.
    """
    return queue
