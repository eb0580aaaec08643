"""Core errors become HTTP errors here, and only here (the core knows nothing of HTTP).

``UnknownTask`` -> 404, ``InvalidTransition`` -> 409, refused input (``InvalidTaskError``,
``ConfigError``) -> 422, an unavailable queue or database (``QueueClosed``,
``RepositoryError``) -> 503. Bodies keep FastAPI's shape: ``{"detail": ...}``. A request body
that is not UTF-8 is a 422 as malformed JSON is (FastAPI itself would answer 400).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from taskqueue_core.exceptions import (
    ConfigError,
    InvalidTaskError,
    InvalidTransition,
    QueueClosed,
    RepositoryError,
    TaskQueueError,
    UnknownTask,
)

__all__ = ["AdminRoute", "TaskConflict", "status_of"]

_STATUS: tuple[tuple[type[TaskQueueError], int], ...] = (
    (UnknownTask, 404),
    (InvalidTransition, 409),
    (InvalidTaskError, 422),
    (ConfigError, 422),
    (QueueClosed, 503),
    (RepositoryError, 503),
)


def status_of(error: TaskQueueError) -> int | None:
    """The HTTP status a core error maps to, or None for errors that are server bugs (500)."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return None


class TaskConflict(HTTPException):
    """409 with a structured detail: which tasks refused the operation, in which state."""

    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(status_code=409, detail=detail)


class AdminRoute(APIRoute):
    """A route that answers core errors with their HTTP status instead of a 500.

    A route class (rather than application exception handlers) keeps the mapping inside the
    router: the host application's own error handling is left untouched.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except TaskQueueError as error:
                status = status_of(error)
                if status is None:
                    raise
                return JSONResponse({"detail": error.message}, status_code=status)
            except StarletteHTTPException as error:
                # FastAPI answers a body that is not UTF-8 with a 400 the schema does not
                # document; it is malformed JSON, which FastAPI refuses with a 422.
                if isinstance(error.__cause__, UnicodeDecodeError):
                    return _not_utf8(error.__cause__)
                raise

        return handle


def _not_utf8(error: UnicodeDecodeError) -> JSONResponse:
    """FastAPI's 422 for malformed JSON, for a body that is not UTF-8 text."""
    return JSONResponse(
        {
            "detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body"],
                    "msg": f"JSON decode error: the body is not UTF-8 text (byte {error.start})",
                    "input": {},
                }
            ]
        },
        status_code=422,
    )
