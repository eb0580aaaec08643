"""Rows to ``Task``: the quick build through the slots gives what ``Task(...)`` gives."""

from __future__ import annotations

import dataclasses
import json

import asyncpg
import pytest

from taskqueue_core.models import FunctionRef, NewTask, Task, TaskState
from taskqueue_core.tortoise.postgres import PostgresRepository, codec
from taskqueue_core.tortoise.postgres.statements import SELECT_TASKS

pytestmark = pytest.mark.postgres


def by_name(row: asyncpg.Record) -> Task:
    """The ``Task`` of a row read by column name (``codec.task`` reads by position)."""
    columns = dict(row.items())
    blob = columns.pop("serialized_function")
    function = FunctionRef(
        columns.pop("module_name"),
        columns.pop("function_name"),
        None if blob is None else bytes(blob),
        columns.pop("signature"),
    )
    for column in ("args", "kwargs", "context", "result"):
        columns[column] = None if columns[column] is None else json.loads(columns[column])
    columns["state"] = TaskState(columns["state"])
    return Task(**columns, function=function)


async def test_a_row_with_every_column_set_decodes_as_read_by_name(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    function = FunctionRef(module_name="tests.postgres.test_codec", function_name="f")
    blob = FunctionRef(None, None, b"\x00dill", "sig")
    parent, task_id, other = await repo.create_tasks(
        [
            NewTask(name="parent", function=function),
            NewTask(
                name="full",
                function=function,
                args=[1, "two", [3]],
                kwargs={"k": {"v": None}},
                context={"step": 2},
                batch_parents=(0,),
                channel="c",
                priority=4,
                max_retries=5,
                timeout=1.5,
            ),
            NewTask(name="closure", function=blob),
        ]
    )
    await db.execute(
        """
        UPDATE queued_tasks SET state = 'failed', result = '{"r": [1, 2]}', retry_count = 2,
            date_started = now(), date_done = now(), date_failed = now(),
            date_cancelled = now(), date_stopped = now(), date_ended = now(),
            execution_time = 0.25, claimed_by = 'srv', exception_name = 'E',
            exception_message = 'm', exception_info = 'tb'
        WHERE id = $1
        """,
        task_id,
    )
    rows = await db.fetch(
        SELECT_TASKS + " WHERE id = ANY($1) ORDER BY id", [parent, task_id, other]
    )
    assert codec._build_task.__qualname__ == "build_Task"  # the twin applies
    for row in rows:
        built = codec.task(row)
        assert built == by_name(row)
        assert type(built) is Task
    full = codec.task(rows[1])
    assert (full.state, full.result, full.parent_task) == (TaskState.FAILED, {"r": [1, 2]}, parent)
    assert all(getattr(full, f.name) is not None for f in dataclasses.fields(Task))
    assert codec.task(rows[2]).function.serialized_function == b"\x00dill"
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.name = "changed"  # type: ignore[misc]
