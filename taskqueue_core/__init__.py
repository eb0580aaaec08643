"""taskqueue: a PostgreSQL-backed task queue for FastAPI applications.

The public API, importable from ``taskqueue_core``::

    from taskqueue_core import TaskQueue, on_pre_create, set_context, getLogger

    async with TaskQueue() as queue:
        ref = queue.add_task(send_email, "ada@example.com", "Welcome!")
        print(await ref.wait(timeout=60))

Importing the package connects to nothing and imports no ORM or driver. The context, logging
and worker names are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import (
    ArgumentNotSerializable,
    ConfigError,
    FunctionNotSerializable,
    FunctionRefused,
    InvalidTaskError,
    InvalidTransition,
    QueueClosed,
    RepositoryError,
    TaskFailed,
    TaskQueueError,
    TaskTimeout,
    UnknownParent,
    UnknownTask,
)
from taskqueue_core.hooks import (
    HookRegistry,
    default_hooks,
    on_post_create,
    on_post_run,
    on_pre_create,
    on_pre_run,
)
from taskqueue_core.models import (
    Event,
    FunctionRef,
    LogRecord,
    NewLogRecord,
    NewTask,
    Outcome,
    ServerInfo,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskState,
    TaskTree,
)
from taskqueue_core.queue import RESERVED_OPTIONS, TaskCall, TaskQueue
from taskqueue_core.ref import TaskRef
from taskqueue_core.repository import Subscription, TaskRepository

__all__ = [
    "RESERVED_OPTIONS",
    "ArgumentNotSerializable",
    "ConfigError",
    "Event",
    "FunctionNotSerializable",
    "FunctionRef",
    "FunctionRefused",
    "HookRegistry",
    "InvalidTaskError",
    "InvalidTransition",
    "LogRecord",
    "NewLogRecord",
    "NewTask",
    "Outcome",
    "QueueClosed",
    "QueueConfig",
    "RepositoryError",
    "ServerInfo",
    "Stats",
    "Subscription",
    "Task",
    "TaskCall",
    "TaskFailed",
    "TaskFilter",
    "TaskPage",
    "TaskQueue",
    "TaskQueueError",
    "TaskRef",
    "TaskRepository",
    "TaskState",
    "TaskTimeout",
    "TaskTree",
    "UnknownParent",
    "UnknownTask",
    "Worker",
    "current_task_id",
    "default_hooks",
    "getLogger",
    "get_context",
    "get_full_context",
    "get_logger",
    "on_post_create",
    "on_post_run",
    "on_pre_create",
    "on_pre_run",
    "save_context",
    "set_context",
]

# Loaded on first access: they pull in loguru sinks and the worker machinery, which a
# process that only creates tasks does not need.
_LAZY = {
    "set_context": "taskqueue_core.context",
    "get_context": "taskqueue_core.context",
    "get_full_context": "taskqueue_core.context",
    "save_context": "taskqueue_core.context",
    "current_task_id": "taskqueue_core.context",
    "getLogger": "taskqueue_core.logging",
    "get_logger": "taskqueue_core.logging",
    "Worker": "taskqueue_core.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskqueue_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
