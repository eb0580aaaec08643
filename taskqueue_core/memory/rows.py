"""The stored forms of tasks and log rows, and how values are encoded into them.

``Row`` and ``LogRow`` are mutable; ``snapshot()`` turns them into the frozen ``Task`` and
``LogRecord`` that callers get. JSON values are kept as text (``limits.json_text``, which
refuses what PostgreSQL's jsonb refuses) and decoded on each read (``decode``). ``Changes``
collects what one verb changed, for the events it emits once the change is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskqueue_core.limits import storable_name, storable_text
from taskqueue_core.models import FunctionRef, LogRecord, Task, TaskState


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(slots=True)
class Row:
    """The mutable stored form of a task; ``snapshot()`` turns it into a frozen ``Task``."""

    id: int
    name: str
    function: FunctionRef
    state: TaskState
    args: str
    kwargs: str
    context: str
    result: str | None
    parent_task: int | None
    pending_parents: int
    channel: str
    priority: int
    retry_count: int
    max_retries: int
    timeout: float | None
    date_enqueued: datetime
    date_scheduled: datetime
    date_started: datetime | None = None
    date_done: datetime | None = None
    date_failed: datetime | None = None
    date_cancelled: datetime | None = None
    date_stopped: datetime | None = None
    date_ended: datetime | None = None
    execution_time: float | None = None
    claimed_by: str | None = None
    exception_name: str | None = None
    exception_message: str | None = None
    exception_info: str | None = None
    generation: int = 0

    def snapshot(self) -> Task:
        return Task(
            id=self.id,
            name=self.name,
            function=self.function,
            state=self.state,
            args=json.loads(self.args),
            kwargs=json.loads(self.kwargs),
            context=json.loads(self.context),
            result=decode(self.result),
            parent_task=self.parent_task,
            pending_parents=self.pending_parents,
            channel=self.channel,
            priority=self.priority,
            retry_count=self.retry_count,
            max_retries=self.max_retries,
            timeout=self.timeout,
            date_enqueued=self.date_enqueued,
            date_scheduled=self.date_scheduled,
            date_started=self.date_started,
            date_done=self.date_done,
            date_failed=self.date_failed,
            date_cancelled=self.date_cancelled,
            date_stopped=self.date_stopped,
            date_ended=self.date_ended,
            execution_time=self.execution_time,
            claimed_by=self.claimed_by,
            exception_name=self.exception_name,
            exception_message=self.exception_message,
            exception_info=self.exception_info,
        )

    def set_error(self, name: str | None, message: str | None, info: str | None) -> None:
        self.exception_name = storable_name(name)
        self.exception_message = storable_text(message)
        self.exception_info = storable_text(info)

    def clear_end(self) -> None:
        """Forget how the task last ended (before it runs again)."""
        self.set_error(None, None, None)
        self.date_done = self.date_failed = self.date_cancelled = None
        self.date_stopped = self.date_ended = None


@dataclass(slots=True)
class LogRow:
    id: int
    type: str
    name: str
    message: str
    info: str | None
    date_created: datetime

    def snapshot(self, task_id: int) -> LogRecord:
        return LogRecord(
            id=self.id,
            task_id=task_id,
            type=self.type,
            name=self.name,
            message=self.message,
            info=decode(self.info),
            date_created=self.date_created,
        )


@dataclass(slots=True)
class Changes:
    """What one verb changed, for the events it emits once the change is complete."""

    ended: list[int]
    control: list[int]
    channels: set[str]

    @classmethod
    def empty(cls) -> Changes:
        return cls([], [], set())
