"""Hooks registered in ``default_hooks`` by decorators when this module is imported (seed §6)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from taskqueue_core import NewTask, Task, on_post_create, on_post_run, on_pre_create, on_pre_run

current_workspace: ContextVar[str | None] = ContextVar("current_workspace", default=None)
seen: list[tuple[str, Any]] = []


@on_pre_create
async def capture_workspace_context(task: NewTask) -> None:
    """Capture the current workspace when the task is created (before it is written)."""
    task.context.update({"workspace_id": current_workspace.get()})


@on_post_create
def remember_created(task: NewTask, task_id: int) -> None:
    seen.append(("post_create", task_id))


@on_pre_run
async def restore_workspace_context(task: Task) -> None:
    """Restore the workspace before the task runs."""
    current_workspace.set(task.context.get("workspace_id"))
    seen.append(("pre_run", task.id))


@on_post_run
async def cleanup_context(
    task: Task, result: Any = None, error: BaseException | None = None
) -> None:
    current_workspace.set(None)
    seen.append(("post_run", (task.id, result, error)))


ALL = [
    ("pre_create", capture_workspace_context),
    ("post_create", remember_created),
    ("pre_run", restore_workspace_context),
    ("post_run", cleanup_context),
]
