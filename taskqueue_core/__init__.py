"""taskqueue: a PostgreSQL-backed task queue for FastAPI applications.

The public API, importable from ``taskqueue_core``::

    from taskqueue_core import TaskQueue, on_pre_create, set_context, getLogger

    async with TaskQueue() as queue:
        ref = queue.add_task(send_email, "ada@example.com", "Welcome!")
        print(await ref.wait(timeout=60))

Importing the package connects to nothing and imports no ORM or driver.
"""

from __future__ import annotations

from taskqueue_core.config import QueueConfig
from taskqueue_core.context import (
    current_task_id,
    get_context,
    get_full_context,
    save_context,
    set_context,
)
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
from taskqueue_core.logging import get_logger, getLogger
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
from taskqueue_core.pool import WorkerPool
from taskqueue_core.queue import RESERVED_OPTIONS, TaskCall, TaskQueue
from taskqueue_core.ref import TaskRef
from taskqueue_core.repository import Subscription, TaskRepository
from taskqueue_core.worker import Worker

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
    "WorkerPool",
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
