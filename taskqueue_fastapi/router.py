"""``get_admin_router``: the JSON admin API of a task queue, and its dashboard page.

Mount it under a prefix of your choice, behind your own access dependency::

    app.include_router(
        get_admin_router(dependencies=[Depends(require_admin)]), prefix="/admin"
    )

Routes (relative to the prefix): ``GET /`` the dashboard; under ``/api``: ``GET tasks``
(filters and pages), ``GET tasks/{id}``, ``GET tasks/{id}/tree``, ``GET tasks/{id}/logs``,
``POST tasks/cancel|stop|retry`` (``{"ids": [...]}``), ``POST tasks/clear``, ``GET stats``,
``GET servers``. ``read_only=True`` leaves out every POST.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.params import Depends as DependsParam
from starlette.responses import JSONResponse, Response

from taskqueue_core.exceptions import ConfigError, UnknownTask
from taskqueue_core.models import TaskFilter, TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_fastapi.dashboard import add_dashboard_routes
from taskqueue_fastapi.dependencies import get_queue as default_get_queue
from taskqueue_fastapi.errors import AdminRoute, TaskConflict
from taskqueue_fastapi.schemas import (
    MAX_TASK_ID,
    ActionRequest,
    ActionResult,
    ClearRequest,
    ClearResult,
    ConflictBody,
    ConflictDetail,
    EdgeOut,
    ErrorBody,
    LogOut,
    LogPage,
    LogQuery,
    RefusedTask,
    ServerOut,
    StatsOut,
    TaskDetail,
    TaskListQuery,
    TaskPageOut,
    TaskSummary,
    TaskTreeOut,
)

__all__ = ["get_admin_router"]

TaskId = Annotated[int, Path(ge=1, le=MAX_TASK_ID, description="The task's id.")]

_ACTIVE = frozenset({TaskState.WAITING, TaskState.ENQUEUED, TaskState.DOING})
_FINISHED_NOT_DONE = frozenset({TaskState.FAILED, TaskState.CANCELLED, TaskState.STOPPED})

# What each admin verb applies to, as the repository defines it.
_ALLOWED: dict[str, frozenset[TaskState]] = {
    "cancel": _ACTIVE,
    "stop": _ACTIVE,
    "retry": _FINISHED_NOT_DONE,
}

Responses = dict[int | str, dict[str, Any]]

_NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No task has this id."}}
_UNAVAILABLE: Responses = {
    503: {"model": ErrorBody, "description": "The queue or its database is down."}
}


def get_admin_router(
    *,
    dependencies: Sequence[DependsParam] | None = None,
    public: bool = False,
    read_only: bool = False,
    get_queue: Callable[..., Any] = default_get_queue,
    dashboard: bool = True,
) -> APIRouter:
    """The admin API (and dashboard) of the application's task queue.

    - ``dependencies``: access checks run before every API endpoint, e.g.
      ``[Depends(require_admin)]``. Required: without any, this raises ``ConfigError``
      unless ``public=True`` says that the admin API may be open to anyone who can reach it.
    - ``read_only``: leave out cancel, stop, retry and clear (the dashboard hides its buttons).
    - ``get_queue``: the dependency that provides the ``TaskQueue`` (default: the lifespan's).
    - ``dashboard``: serve the dashboard page at ``GET /`` of the router. The page and its
      assets are static (no task data) and are served without ``dependencies``, so that a
      token sent in a header can protect the data from a browser; every request the page
      makes for data goes through them.

    Raises ``ConfigError`` when no access dependency is given and ``public`` is False.
    """
    access = list(dependencies or [])
    if not access and not public:
        raise ConfigError(
            "get_admin_router() needs an access dependency, e.g. "
            "get_admin_router(dependencies=[Depends(require_admin)]); it lets anyone who can "
            "reach it cancel tasks and read their arguments and results. Pass public=True to "
            "serve it without access control on purpose."
        )
    for dependency in access:
        if not isinstance(dependency, DependsParam):
            raise ConfigError(
                f"get_admin_router(dependencies=...) takes Depends(...) values, got {dependency!r}"
            )

    router = APIRouter(route_class=AdminRoute)
    api = APIRouter(route_class=AdminRoute, dependencies=access, responses=dict(_UNAVAILABLE))
    # Annotations are strings (PEP 563) that FastAPI resolves in this module's globals, so
    # the queue dependency is a default value (closing over get_queue), not a local alias.
    provide = Depends(get_queue)

    # Before "/tasks/{task_id}", whose path also matches "/tasks/cancel": Starlette answers a
    # request no route takes (OPTIONS, PUT...) with the methods of the first route whose path
    # matches, so the 405 of an action must come from the action's own routes.
    if not read_only:
        _add_control_routes(api, provide)

    @api.get("/tasks", response_model=TaskPageOut, summary="List tasks")
    async def list_tasks(
        query: Annotated[TaskListQuery, Query()], queue: TaskQueue = provide
    ) -> TaskPageOut:
        """Tasks matching every filter given, newest first, one page at a time."""
        task_filter = TaskFilter(
            states=tuple(query.state) or None,
            name=query.name or None,
            channel=query.channel,
            parent_task=query.parent,
            enqueued_after=query.enqueued_after,
            enqueued_before=query.enqueued_before,
        )
        page = await queue.list_tasks(task_filter, limit=query.limit, offset=query.offset)
        return TaskPageOut(
            items=[TaskSummary.of(task) for task in page.tasks],
            total=page.total,
            limit=query.limit,
            offset=query.offset,
        )

    @api.get(
        "/tasks/{task_id}", response_model=TaskDetail, responses=_NOT_FOUND, summary="Task detail"
    )
    async def get_task(task_id: TaskId, queue: TaskQueue = provide) -> TaskDetail:
        """Arguments, context, result, error, timings and the ids of the task's children."""
        tree = await queue.get_tree(task_id)
        task = next((t for t in tree.tasks if t.id == task_id), None)
        if task is None:
            raise UnknownTask(f"no task has id {task_id}")
        children = sorted(child for child, parent in tree.edges if parent == task_id)
        return TaskDetail.build(task, children)

    @api.get(
        "/tasks/{task_id}/tree",
        response_model=TaskTreeOut,
        responses=_NOT_FOUND,
        summary="Task tree",
    )
    async def get_tree(task_id: TaskId, queue: TaskQueue = provide) -> TaskTreeOut:
        """The task, every descendant, and the dependency edges between them."""
        tree = await queue.get_tree(task_id)
        return TaskTreeOut(
            root_id=task_id,
            tasks=[TaskSummary.of(task) for task in tree.tasks],
            edges=[EdgeOut(child_id=c, parent_id=p) for c, p in tree.edges],
        )

    @api.get(
        "/tasks/{task_id}/logs", response_model=LogPage, responses=_NOT_FOUND, summary="Task logs"
    )
    async def get_logs(
        task_id: TaskId, query: Annotated[LogQuery, Query()], queue: TaskQueue = provide
    ) -> LogPage:
        """Log lines of the task, oldest first. To follow a running task, pass the
        ``next_after_id`` of the previous page as ``after_id``."""
        await _require_tasks(queue, [task_id])
        records = await queue.get_logs(task_id, after_id=query.after_id, limit=query.limit)
        return LogPage(
            items=[LogOut.of(record) for record in records],
            next_after_id=records[-1].id if records else query.after_id,
            has_more=len(records) == query.limit,
        )

    @api.get("/stats", response_model=StatsOut, summary="Queue statistics")
    async def get_stats(queue: TaskQueue = provide) -> StatsOut:
        """Counts by state and by channel, tasks done and failed in the last minute, workers."""
        return StatsOut.of(await queue.stats())

    @api.get("/servers", response_model=list[ServerOut], summary="Worker servers")
    async def list_servers(queue: TaskQueue = provide) -> list[ServerOut]:
        """Every registered worker process, with its heartbeat and slot counts."""
        now = datetime.now(UTC)
        stale_after = queue.config.stale_after
        return [
            ServerOut.of(server, stale_after=stale_after, now=now)
            for server in await queue.servers()
        ]

    if dashboard:
        add_dashboard_routes(router, read_only=read_only)
    router.include_router(api, prefix="/api", tags=["taskqueue"])
    return router


def _add_control_routes(api: APIRouter, provide: Any) -> None:
    """The mutating endpoints: cancel, stop, retry and clear."""
    conflict: Responses = {
        409: {
            "model": ConflictBody,
            "description": "Some tasks are not in a state that allows the operation.",
        }
    }
    action_responses: Responses = {
        404: {"model": ErrorBody, "description": "Some ids name no task; nothing was changed."},
        **conflict,
    }

    @api.post(
        "/tasks/cancel",
        response_model=ActionResult,
        responses=action_responses,
        summary="Cancel tasks",
    )
    async def cancel_tasks(body: ActionRequest, queue: TaskQueue = provide) -> ActionResult:
        """Cancel waiting, enqueued or running tasks; their waiting descendants are cancelled
        too (and listed in ``changed``). A running task is interrupted."""
        return await _apply(queue, "cancel", body.ids)

    @api.post(
        "/tasks/stop", response_model=ActionResult, responses=action_responses, summary="Stop tasks"
    )
    async def stop_tasks(body: ActionRequest, queue: TaskQueue = provide) -> ActionResult:
        """Stop waiting, enqueued or running tasks; their descendants keep waiting until the
        task is retried."""
        return await _apply(queue, "stop", body.ids)

    @api.post(
        "/tasks/retry",
        response_model=ActionResult,
        responses=action_responses,
        summary="Retry tasks",
    )
    async def retry_tasks(body: ActionRequest, queue: TaskQueue = provide) -> ActionResult:
        """Put failed, cancelled or stopped tasks back in the queue, with the descendants that
        had failed or been cancelled because of them."""
        return await _apply(queue, "retry", body.ids)

    @api.post("/tasks/clear", response_model=ClearResult, summary="Clear pending tasks")
    async def clear_pending(
        body: ClearRequest | None = None, queue: TaskQueue = provide
    ) -> ClearResult:
        """Delete every waiting and enqueued task (of one channel, or all)."""
        channel = body.channel if body is not None else None
        return ClearResult(deleted=await queue.clear(channel))

    # A GET of an action would otherwise be taken by GET "/tasks/{task_id}" and refused as a
    # bad task id; it is a method the action does not take.
    for verb in ("cancel", "stop", "retry", "clear"):
        api.add_api_route(
            f"/tasks/{verb}", _post_only, methods=["GET", "HEAD"], include_in_schema=False
        )


async def _post_only() -> Response:
    """The 405 Starlette gives a method a route does not take."""
    return JSONResponse(
        {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "POST"}
    )


async def _require_tasks(queue: TaskQueue, task_ids: Sequence[int]) -> dict[int, TaskState]:
    """The states of ``task_ids``; raises ``UnknownTask`` naming the ids that do not exist."""
    states = await queue.repository.get_states(task_ids)
    missing = [task_id for task_id in task_ids if task_id not in states]
    if missing:
        names = ", ".join(str(task_id) for task_id in missing)
        raise UnknownTask(f"no task has id {names}" if len(missing) == 1 else f"no tasks {names}")
    return states


async def _apply(queue: TaskQueue, verb: str, task_ids: list[int]) -> ActionResult:
    """Run ``verb`` on ``task_ids`` if every one exists and is in a state that allows it.

    Nothing is written when an id is unknown (404) or in the wrong state (409). A task that
    changes state between that check and the write is reported as a 409 that also lists the
    tasks that were changed.
    """
    allowed = _ALLOWED[verb]
    states = await _require_tasks(queue, task_ids)
    refused = [RefusedTask(id=i, state=states[i]) for i in task_ids if states[i] not in allowed]
    if refused:
        raise TaskConflict(
            ConflictDetail(message=_refusal(verb, refused, allowed), refused=refused).model_dump(
                mode="json"
            )
        )
    changed: list[int] = await getattr(queue, verb)(task_ids)
    late = [task_id for task_id in task_ids if task_id not in set(changed)]
    if late:
        now = await queue.repository.get_states(late)
        refused = [RefusedTask(id=i, state=now[i]) for i in late if i in now]
        raise TaskConflict(
            ConflictDetail(
                message=_refusal(verb, refused, allowed), refused=refused, changed=changed
            ).model_dump(mode="json")
        )
    return ActionResult(changed=changed)


def _refusal(verb: str, refused: list[RefusedTask], allowed: frozenset[TaskState]) -> str:
    which = ", ".join(f"{r.id} is {r.state.value}" for r in refused)
    states = ", ".join(state.value for state in TaskState if state in allowed)
    return f"cannot {verb} tasks that are not {states}: {which}"
