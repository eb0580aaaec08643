"""Every error taskqueue raises, under one root.

    TaskQueueError
    ├── ConfigError              a QUEUE_* setting or option is invalid
    ├── InvalidTaskError         add_task/enqueue refused its input (nothing was written)
    │   ├── ArgumentNotSerializable   an argument, keyword or result is not JSON
    │   ├── FunctionNotSerializable   the function cannot be stored (bound method, dill failure)
    │   └── UnknownParent             a parent id does not exist, or its creation failed
    ├── UnknownTask              no task has this id
    ├── InvalidTransition        the task is not in a state that allows the operation
    ├── FunctionRefused          a stored function reference failed its signature or import
    ├── TaskFailed               wait() on a task that ended failed (carries the remote error)
    ├── TaskTimeout              wait(timeout=) ran out before the task ended
    ├── QueueClosed              the queue is not open (or already closed)
    └── RepositoryError          the storage backend failed (the driver's error is __cause__)

The docstring of each class is its default message, so ``raise UnknownTask()`` still says
something useful; pass a message to be more precise.
"""

from __future__ import annotations

__all__ = [
    "ArgumentNotSerializable",
    "ConfigError",
    "FunctionNotSerializable",
    "FunctionRefused",
    "InvalidTaskError",
    "InvalidTransition",
    "QueueClosed",
    "RepositoryError",
    "TaskFailed",
    "TaskQueueError",
    "TaskTimeout",
    "UnknownParent",
    "UnknownTask",
]


class TaskQueueError(Exception):
    """A taskqueue error."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ConfigError(TaskQueueError, ValueError):
    """A taskqueue setting is invalid."""


class InvalidTaskError(TaskQueueError, ValueError):
    """The task cannot be created as given; nothing was written."""


class ArgumentNotSerializable(InvalidTaskError, TypeError):
    """A task argument is not JSON-serializable."""


class FunctionNotSerializable(InvalidTaskError, TypeError):
    """The task function cannot be stored."""


class UnknownParent(InvalidTaskError):
    """A parent task does not exist."""


class UnknownTask(TaskQueueError, LookupError):
    """No task has this id."""


class InvalidTransition(TaskQueueError):
    """The task is not in a state that allows this operation."""


class FunctionRefused(TaskQueueError):
    """The stored function reference was refused: bad signature or it no longer resolves."""


class TaskFailed(TaskQueueError):
    """The task failed.

    Attributes name the remote exception: ``exception_name``, ``exception_message`` and
    ``exception_info`` (the traceback text), as stored on the task row.
    """

    def __init__(
        self,
        task_id: int,
        exception_name: str | None = None,
        exception_message: str | None = None,
        exception_info: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.exception_name = exception_name
        self.exception_message = exception_message
        self.exception_info = exception_info
        super().__init__(f"task {task_id} failed: {exception_name}: {exception_message}")


class TaskTimeout(TaskQueueError, TimeoutError):
    """Waiting for the task timed out before it ended."""


class QueueClosed(TaskQueueError, RuntimeError):
    """The task queue is not open."""


class RepositoryError(TaskQueueError):
    """The task storage backend failed."""
