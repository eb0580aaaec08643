"""Pydantic models of the admin API: what it accepts and what it returns.

They are built from the core's frozen dataclasses (``Task``, ``LogRecord``, ``Stats``,
``ServerInfo``) and never carry a serialized function or its signature: a task's function is
shown as its import path, or flagged as a serialized local function.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from taskqueue_core.limits import CHANNEL_MAX, NAME_MAX
from taskqueue_core.models import LogRecord, ServerInfo, Stats, Task, TaskState

__all__ = [
    "MAX_TASK_ID",
    "ActionRequest",
    "ActionResult",
    "ClearRequest",
    "ClearResult",
    "ConflictBody",
    "ConflictDetail",
    "EdgeOut",
    "ErrorBody",
    "FunctionOut",
    "LogOut",
    "LogPage",
    "LogQuery",
    "RefusedTask",
    "ServerOut",
    "StatsOut",
    "TaskDetail",
    "TaskListQuery",
    "TaskPageOut",
    "TaskSummary",
    "TaskTreeOut",
    "progress_of",
]

MAX_TASK_ID = 2**63 - 1
"""Task ids are PostgreSQL bigints; a larger id is bad input, not a database error."""

MAX_PAGE = 500
"""Largest page the listing endpoints return."""

MAX_LOG_PAGE = 1000
"""Most log lines one request returns."""

MAX_ACTION_IDS = 1000
"""Most ids one cancel/stop/retry request may name."""


def progress_of(context: dict[str, Any]) -> float | None:
    """The progress percentage (0-100) a task's context reports, or None.

    Understood shapes (the ones the docs show): ``progress`` as a number (a percentage),
    ``progress.percentage``, ``progress.completed`` / ``progress.total``, and a top-level
    ``percentage``.
    """
    value: Any = None
    progress = context.get("progress")
    if _is_number(progress):
        value = progress
    elif isinstance(progress, dict):
        if _is_number(progress.get("percentage")):
            value = progress["percentage"]
        elif _is_number(progress.get("completed")) and _is_number(progress.get("total")):
            total = progress["total"]
            value = 100.0 * progress["completed"] / total if total else None
    if value is None and _is_number(context.get("percentage")):
        value = context["percentage"]
    if value is None:
        return None
    return max(0.0, min(100.0, float(value)))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL: say so here rather than fail in the database.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# -- requests ---------------------------------------------------------------------------------


class TaskListQuery(BaseModel):
    """Filters and page of the task listing (query parameters; unknown ones are refused)."""

    model_config = ConfigDict(extra="forbid")

    state: list[TaskState] = Field(
        default_factory=list,
        description="Only tasks in one of these states (repeat the parameter for several).",
    )
    name: str | None = Field(
        default=None,
        max_length=NAME_MAX,
        description="Substring of the task name (case-insensitive).",
    )
    channel: str | None = Field(
        default=None, max_length=CHANNEL_MAX, description="Only this channel."
    )
    parent: int | None = Field(
        default=None, ge=1, le=MAX_TASK_ID, description="Only children of this task."
    )
    enqueued_after: datetime | None = Field(
        default=None,
        description="Only tasks enqueued at or after this time (ISO 8601; UTC if naive).",
    )
    enqueued_before: datetime | None = Field(
        default=None, description="Only tasks enqueued before this time (ISO 8601; UTC if naive)."
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE, description="Page size.")
    offset: int = Field(
        default=0, ge=0, le=MAX_TASK_ID, description="Tasks to skip (newest first)."
    )

    _text = field_validator("name", "channel")(_no_nul)

    @field_validator("enqueued_after", "enqueued_before", mode="before")
    @classmethod
    def _not_a_number(cls, value: Any) -> Any:
        # Pydantic would read a number as seconds since 1970, so "2024" would mean 00:33:44
        # on 1 January 1970: the filter takes ISO 8601 only, as documented.
        if isinstance(value, int | float) or (isinstance(value, str) and _is_number_text(value)):
            raise ValueError(
                "must be a date and time in ISO 8601 format, e.g. 2030-01-31T12:00:00Z, "
                "not a number"
            )
        return value

    @field_validator("enqueued_after", "enqueued_before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _range(self) -> TaskListQuery:
        if (
            self.enqueued_after is not None
            and self.enqueued_before is not None
            and self.enqueued_after >= self.enqueued_before
        ):
            raise ValueError("enqueued_after must be earlier than enqueued_before")
        return self


class LogQuery(BaseModel):
    """Which log lines to return (query parameters; unknown ones are refused)."""

    model_config = ConfigDict(extra="forbid")

    after_id: int | None = Field(
        default=None, ge=0, le=MAX_TASK_ID, description="Only lines with a greater id (follow)."
    )
    limit: int = Field(default=200, ge=1, le=MAX_LOG_PAGE, description="Most lines returned.")


class ActionRequest(BaseModel):
    """The tasks a cancel, stop or retry applies to."""

    model_config = ConfigDict(extra="forbid")

    ids: list[StrictInt] = Field(
        min_length=1,
        max_length=MAX_ACTION_IDS,
        description=f"Task ids (1 to {MAX_ACTION_IDS}).",
        examples=[[12, 13]],
        # The bounds _valid_ids enforces, stated in the schema too (it checks them itself to
        # name every bad id in one message). The OpenAPI document holds nested bounds as
        # floats, and 2**63 - 1 would round up to 2**63: an exclusive 2**63 stays exact.
        json_schema_extra={
            "items": {"type": "integer", "minimum": 1, "exclusiveMaximum": MAX_TASK_ID + 1}
        },
    )

    @field_validator("ids")
    @classmethod
    def _valid_ids(cls, ids: list[int]) -> list[int]:
        bad = [i for i in ids if not 1 <= i <= MAX_TASK_ID]
        if bad:
            raise ValueError(f"task ids must be positive 64-bit integers, got {bad}")
        # Keep the caller's order, drop repeats: each id is acted on once.
        return list(dict.fromkeys(ids))


class ClearRequest(BaseModel):
    """Which pending tasks to delete."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(
        default=None,
        max_length=CHANNEL_MAX,
        description="Only this channel (default: every channel).",
        # Not blank: the rule _not_blank enforces, stated in the schema too.
        pattern=r"\S",
    )

    _text = field_validator("channel")(_no_nul)

    @field_validator("channel", mode="before")
    @classmethod
    def _not_blank(cls, value: Any) -> Any:
        # The core refuses a blank channel; refuse it here, in the request's terms (a 422
        # naming body.channel) and before the pattern's less telling message.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be blank")
        return value


# -- responses --------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """An error: ``detail`` says what is wrong."""

    detail: str


class RefusedTask(BaseModel):
    """A task the operation does not apply to, and the state that refuses it."""

    id: int
    state: TaskState


class ConflictDetail(BaseModel):
    """Why a cancel, stop or retry was refused."""

    message: str
    refused: list[RefusedTask]
    changed: list[int] = Field(
        default_factory=list,
        description="Tasks changed anyway (only when a task changed state during the request).",
    )


class ConflictBody(BaseModel):
    """409: some tasks are not in a state that allows the operation."""

    detail: ConflictDetail


class ActionResult(BaseModel):
    """The tasks a cancel, stop or retry changed (cancel also lists cascaded descendants)."""

    changed: list[int]


class ClearResult(BaseModel):
    """How many pending (waiting and enqueued) tasks were deleted."""

    deleted: int


class FunctionOut(BaseModel):
    """What runs: an import path, or a serialized local function (never its bytes)."""

    module_name: str | None
    function_name: str | None
    serialized: bool = Field(description="True for a local function, closure or lambda.")


class TaskSummary(BaseModel):
    """A task as listed: identity, state, timings and error name."""

    id: int
    name: str
    state: TaskState
    channel: str
    priority: int
    parent_task: int | None
    retry_count: int
    max_retries: int
    date_enqueued: datetime
    date_scheduled: datetime | None
    date_started: datetime | None
    date_ended: datetime | None
    execution_time: float | None
    claimed_by: str | None
    exception_name: str | None
    progress: float | None = Field(
        description="Progress percentage reported through the task's context, if any."
    )

    @classmethod
    def of(cls, task: Task) -> TaskSummary:
        """The summary of ``task``."""
        return cls(
            id=task.id,
            name=task.name,
            state=task.state,
            channel=task.channel,
            priority=task.priority,
            parent_task=task.parent_task,
            retry_count=task.retry_count,
            max_retries=task.max_retries,
            date_enqueued=task.date_enqueued,
            date_scheduled=task.date_scheduled,
            date_started=task.date_started,
            date_ended=task.date_ended,
            execution_time=task.execution_time,
            claimed_by=task.claimed_by,
            exception_name=task.exception_name,
            progress=progress_of(task.context),
        )


class TaskDetail(TaskSummary):
    """Everything about a task except its stored function bytes and signature."""

    function: FunctionOut
    args: list[Any]
    kwargs: dict[str, Any]
    context: dict[str, Any]
    result: Any
    pending_parents: int
    timeout: float | None
    date_done: datetime | None
    date_failed: datetime | None
    date_cancelled: datetime | None
    date_stopped: datetime | None
    exception_message: str | None
    exception_info: str | None = Field(description="Traceback text of the last error.")
    children: list[int] = Field(description="Ids of the tasks that depend on this one.")

    @classmethod
    def build(cls, task: Task, children: list[int]) -> TaskDetail:
        """The detail of ``task`` with the ids of its direct ``children``."""
        summary = TaskSummary.of(task).model_dump()
        return cls(
            **summary,
            function=FunctionOut(
                module_name=task.function.module_name,
                function_name=task.function.function_name,
                serialized=task.function.serialized_function is not None,
            ),
            args=task.args,
            kwargs=task.kwargs,
            context=task.context,
            result=task.result,
            pending_parents=task.pending_parents,
            timeout=task.timeout,
            date_done=task.date_done,
            date_failed=task.date_failed,
            date_cancelled=task.date_cancelled,
            date_stopped=task.date_stopped,
            exception_message=task.exception_message,
            exception_info=task.exception_info,
            children=children,
        )


class TaskPageOut(BaseModel):
    """One page of tasks, newest first, and how many match in total."""

    items: list[TaskSummary]
    total: int
    limit: int
    offset: int


class EdgeOut(BaseModel):
    """A dependency: ``child_id`` waits for ``parent_id``."""

    child_id: int
    parent_id: int


class TaskTreeOut(BaseModel):
    """A task, every descendant, and the dependency edges between them."""

    root_id: int
    tasks: list[TaskSummary]
    edges: list[EdgeOut]


class LogOut(BaseModel):
    """A log line written by a task."""

    id: int
    task_id: int
    type: str
    name: str
    message: str
    info: dict[str, Any] | None
    date_created: datetime

    @classmethod
    def of(cls, record: LogRecord) -> LogOut:
        """The API form of ``record``."""
        return cls(
            id=record.id,
            task_id=record.task_id,
            type=record.type,
            name=record.name,
            message=record.message,
            info=record.info,
            date_created=record.date_created,
        )


class LogPage(BaseModel):
    """Log lines oldest first; pass ``next_after_id`` as ``after_id`` to get the next ones."""

    items: list[LogOut]
    next_after_id: int | None = Field(
        description="The id to pass as after_id for the following lines (unchanged when none)."
    )
    has_more: bool = Field(description="True when the page is full: more lines may follow.")


class StatsOut(BaseModel):
    """Counts by state and channel, recent throughput and worker totals."""

    by_state: dict[str, int]
    by_channel: dict[str, dict[str, int]] = Field(description="channel -> state -> count")
    done_last_minute: int
    failed_last_minute: int
    servers_running: int
    workers_total: int
    workers_active: int
    workers_idle: int

    @classmethod
    def of(cls, stats: Stats) -> StatsOut:
        """The API form of ``stats``, with every state present in ``by_state``."""
        by_state = {state.value: 0 for state in TaskState}
        by_state.update(stats.by_state)
        return cls(
            by_state=by_state,
            by_channel=stats.by_channel,
            done_last_minute=stats.done_last_minute,
            failed_last_minute=stats.failed_last_minute,
            servers_running=stats.servers_running,
            workers_total=stats.workers_total,
            workers_active=stats.workers_active,
            workers_idle=stats.workers_idle,
        )


class ServerOut(BaseModel):
    """A running worker process and its heartbeat."""

    server_name: str
    hostname: str
    pid: int
    max_workers: int
    active_workers: int
    idle_workers: int
    is_running: bool
    last_heartbeat: datetime | None
    started_at: datetime | None
    version: str
    stale: bool = Field(description="True when the last heartbeat is older than stale_after.")

    @classmethod
    def of(cls, server: ServerInfo, *, stale_after: float, now: datetime) -> ServerOut:
        """The API form of ``server``, judged stale against ``now``."""
        stale = (
            server.last_heartbeat is None
            or (now - server.last_heartbeat).total_seconds() > stale_after
        )
        return cls(
            server_name=server.server_name,
            hostname=server.hostname,
            pid=server.pid,
            max_workers=server.max_workers,
            active_workers=server.active_workers,
            idle_workers=server.idle_workers,
            is_running=server.is_running,
            last_heartbeat=server.last_heartbeat,
            started_at=server.started_at,
            version=server.version,
            stale=stale,
        )
