"""JSON values (arguments, context, result, log info) come back as they were given."""

from __future__ import annotations

from typing import Any

import pytest

from taskqueue_core.exceptions import TaskQueueError
from taskqueue_core.models import NewLogRecord, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import create, get, run

NESTED: dict[str, Any] = {
    "text": 'héllo wörld ✓ 日本語 🎉 "quoted" \\ back\nslash',
    "numbers": [0, -1, 2**62, 0.1, 1.5, -2.75, 3.141592653589793, 1e-7, 12345678.9],
    "flags": [True, False, None],
    "empty": {"list": [], "dict": {}, "string": ""},
    "deep": {"a": {"b": {"c": [{"d": [1, [2, [3]]]}]}}},
    "ключ": "значение",
}


def floats_stay_floats(value: Any) -> None:
    """Numbers keep their Python type: a float must not come back as an int."""
    for number, back in zip(NESTED["numbers"], value["numbers"], strict=True):
        assert type(back) is type(number), (number, back)


async def test_arguments_and_context_round_trip(repository: TaskRepository) -> None:
    task_id = await create(
        repository, args=[NESTED, [NESTED], "x"], kwargs={"payload": NESTED}, context=NESTED
    )
    task = await get(repository, task_id)
    assert task.args == [NESTED, [NESTED], "x"]
    assert task.kwargs == {"payload": NESTED}
    assert task.context == NESTED
    floats_stay_floats(task.args[0])
    floats_stay_floats(task.context)


@pytest.mark.parametrize(
    "result",
    [None, NESTED, [1, "two", None], "just text", 42, 2.5, True, {"none": None}],
    ids=["null", "nested", "list", "str", "int", "float", "bool", "dict-with-null"],
)
async def test_results_round_trip(repository: TaskRepository, result: Any) -> None:
    task_id = await create(repository)
    await run(repository, task_id, result=result)
    task = await get(repository, task_id)
    assert task.state is TaskState.DONE
    assert task.result == result
    assert type(task.result) is type(result)


async def test_contexts_round_trip_through_every_write(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await repository.update_contexts({task_id: NESTED})
    assert (await get(repository, task_id)).context == NESTED
    await run(repository, task_id, context={"final": NESTED})
    assert (await get(repository, task_id)).context == {"final": NESTED}


async def test_log_info_round_trips(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await repository.append_logs(
        [NewLogRecord(task_id, "warning", "n", "ünïcødé ✓ message", info=NESTED)]
    )
    (log,) = await repository.get_logs(task_id)
    assert log.message == "ünïcødé ✓ message"
    assert log.info == NESTED
    floats_stay_floats(log.info)


async def test_returned_values_are_not_shared_with_the_store(repository: TaskRepository) -> None:
    context = {"list": [1, 2]}
    task_id = await create(repository, context=context)
    context["list"].append(3)
    task = await get(repository, task_id)
    assert task.context == {"list": [1, 2]}
    task.context["list"].append(99)
    assert (await get(repository, task_id)).context == {"list": [1, 2]}


async def test_values_that_are_not_json_are_refused(repository: TaskRepository) -> None:
    # Any taskqueue error (the memory fake says ArgumentNotSerializable), never a driver's,
    # and nothing written.
    with pytest.raises(TaskQueueError):
        await create(repository, args=[{1, 2}])
    assert (await repository.list_tasks()).total == 0


@pytest.mark.parametrize(
    "options",
    [
        {"args": ["nul\x00inside"]},
        {"kwargs": {"key\x00": 1}},
        {"context": {"deep": ["\x00"]}},
    ],
    ids=["args", "kwargs-key", "context"],
)
async def test_nul_characters_are_refused(
    repository: TaskRepository, options: dict[str, Any]
) -> None:
    # PostgreSQL's jsonb cannot store NUL: every backend refuses it alike, nothing written.
    with pytest.raises(TaskQueueError):
        await create(repository, **options)
    assert (await repository.list_tasks()).total == 0


async def test_escaped_backslash_before_u0000_is_plain_text(repository: TaskRepository) -> None:
    text = "C:\\u0000\\dir \\\\u0000"  # backslashes followed by the letters u0000, no NUL
    task_id = await create(repository, args=[text], context={text: text})
    task = await get(repository, task_id)
    assert task.args == [text]
    assert task.context == {text: text}
