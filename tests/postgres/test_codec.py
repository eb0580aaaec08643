"""Rows to ``Task``: the quick build through the slots gives what ``Task(...)`` gives."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest

from taskqueue_core.models import FunctionRef, NewTask, Task, TaskState
from taskqueue_core.tortoise.postgres import PostgresRepository, codec
from taskqueue_core.tortoise.postgres.statements import SELECT_TASKS

pytestmark = pytest.mark.postgres


async def test_a_row_with_every_column_set_decodes_as_through_init(
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
    assert codec._TASK_SETTERS is not None  # the quick way applies to Task as it is
    for row in rows:
        built = codec.task(row)
        assert built == codec._task_by_init(row)
        assert type(built) is Task
    full = codec.task(rows[1])
    assert (full.state, full.result, full.parent_task) == (TaskState.FAILED, {"r": [1, 2]}, parent)
    assert all(getattr(full, f.name) is not None for f in dataclasses.fields(Task))
    assert codec.task(rows[2]).function.serialized_function == b"\x00dill"
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.name = "changed"  # type: ignore[misc]
