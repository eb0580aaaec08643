"""Tortoise models of the taskqueue tables: the schema that aerich migrates.

Table and column names are public (the SQL of the docs runs against them), so every one is
spelled out. The repositories do their hot paths in SQL; these models define the schema and
let applications query the tables with the ORM. The app label is ``taskqueue``.

Two partial indexes are not declared here, because the ORM cannot express them: the claim
index and the index of ``parent_task`` (non-null values only). The migrations create them
(PostgreSQL), and so does ``SqliteRepository.open`` (SQLite); see
``taskqueue_core.tortoise.schema``. Nor is ``queued_tasks.release_next``, a column of the
PostgreSQL repository's own (see ``postgres.releases``), which its migrations add.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

__all__ = ["QueuedTask", "QueuedTaskDependency", "QueuedTaskLog", "QueuedTaskWorker"]

APP_LABEL = "taskqueue"
MODELS_MODULE = "taskqueue_core.tortoise.models"


class QueuedTask(Model):
    """A task: what to run, where it is in its life, and what came of it."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=255)
    module_name = fields.CharField(max_length=255, null=True)
    function_name = fields.CharField(max_length=255, null=True)
    serialized_function = fields.BinaryField(null=True)
    signature = fields.CharField(max_length=64, null=True)
    state = fields.CharField(max_length=16, db_index=True)
    args: fields.JSONField[list[Any]] = fields.JSONField(default=list)
    kwargs: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    context: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    result: fields.JSONField[Any] = fields.JSONField(null=True)
    parent: fields.ForeignKeyNullableRelation[QueuedTask] = fields.ForeignKeyField(
        "taskqueue.QueuedTask",
        related_name="children",
        null=True,
        on_delete=fields.SET_NULL,
        source_field="parent_task",
        # Indexed by a partial index (``schema.PARENT_INDEX_SQL``): most tasks have no parent.
        db_index=False,
    )
    pending_parents = fields.IntField(default=0)
    channel = fields.CharField(max_length=64, default="default")
    priority = fields.IntField(default=0)
    retry_count = fields.IntField(default=0)
    max_retries = fields.IntField(default=3)
    timeout = fields.FloatField(null=True)
    date_enqueued = fields.DatetimeField(db_index=True)
    date_scheduled = fields.DatetimeField()
    date_started = fields.DatetimeField(null=True)
    date_done = fields.DatetimeField(null=True)
    date_failed = fields.DatetimeField(null=True)
    date_cancelled = fields.DatetimeField(null=True)
    date_stopped = fields.DatetimeField(null=True)
    date_ended = fields.DatetimeField(null=True)
    execution_time = fields.FloatField(null=True)
    claimed_by = fields.CharField(max_length=255, null=True)
    exception_name = fields.CharField(max_length=255, null=True)
    exception_message = fields.TextField(null=True)
    exception_info = fields.TextField(null=True)

    class Meta:
        app = APP_LABEL
        table = "queued_tasks"


class QueuedTaskDependency(Model):
    """An edge: ``task_id`` waits for ``parent_id``. One row per parent (fan-in)."""

    id = fields.BigIntField(primary_key=True)
    task: fields.ForeignKeyRelation[QueuedTask] = fields.ForeignKeyField(
        "taskqueue.QueuedTask",
        related_name="parent_edges",
        on_delete=fields.CASCADE,
        source_field="task_id",
    )
    parent: fields.ForeignKeyRelation[QueuedTask] = fields.ForeignKeyField(
        "taskqueue.QueuedTask",
        related_name="child_edges",
        on_delete=fields.CASCADE,
        source_field="parent_id",
    )

    class Meta:
        app = APP_LABEL
        table = "queued_task_dependencies"
        unique_together = (("task", "parent"),)
        # A parent's children in id order: releases walk them in chunks (``postgres.releases``).
        indexes = (
            Index(fields=("parent_id", "task_id"), name="queued_task_dependencies_children_idx"),
        )


class QueuedTaskLog(Model):
    """A log line written by a task."""

    id = fields.BigIntField(primary_key=True)
    queued_task: fields.ForeignKeyRelation[QueuedTask] = fields.ForeignKeyField(
        "taskqueue.QueuedTask",
        related_name="logs",
        on_delete=fields.CASCADE,
        source_field="queued_task_id",
        db_index=False,
    )
    type = fields.CharField(max_length=16)
    name = fields.CharField(max_length=255)
    message = fields.TextField()
    info: fields.JSONField[dict[str, Any] | None] = fields.JSONField(null=True)
    date_created = fields.DatetimeField()

    class Meta:
        app = APP_LABEL
        table = "queued_task_logs"
        indexes = (
            Index(fields=("queued_task_id", "date_created"), name="queued_task_logs_task_date_idx"),
        )


class QueuedTaskWorker(Model):
    """A running server: one process of workers, kept alive by heartbeats."""

    id = fields.BigIntField(primary_key=True)
    server_name = fields.CharField(max_length=255, unique=True)
    hostname = fields.CharField(max_length=255)
    pid = fields.IntField()
    max_workers = fields.IntField()
    active_workers = fields.IntField(default=0)
    idle_workers = fields.IntField(default=0)
    is_running = fields.BooleanField(default=True)
    last_heartbeat = fields.DatetimeField()
    started_at = fields.DatetimeField()
    version = fields.CharField(max_length=32, default="")

    class Meta:
        app = APP_LABEL
        table = "queued_task_workers"
