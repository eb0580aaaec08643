"""Column limits: the values the storage holds are accepted at the call, the others refused
there, by the same rules the backends apply (``taskqueue_core.limits``)."""

from __future__ import annotations

import asyncio
import enum
import json
import types
from dataclasses import replace
from typing import Any

import pytest

from taskqueue_core import (
    ArgumentNotSerializable,
    FunctionNotSerializable,
    FunctionRef,
    HookRegistry,
    InvalidTaskError,
    NewTask,
    TaskCall,
    TaskQueue,
)
from taskqueue_core.arguments import to_json
from taskqueue_core.limits import (
    CHANNEL_MAX,
    INT32_MAX,
    INT32_MIN,
    NAME_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_columns,
    fits_int32,
    json_has_nul,
)
from taskqueue_core.testing import run_until_idle
from tests.core import tasks
from tests.core.conftest import CountingRepository
from tests.core.tasks import add, send_email

BASE = NewTask(
    name="task",
    function=FunctionRef(module_name="tests.core.tasks", function_name="add"),
    args=[1, 2],
)


class Level(enum.IntEnum):
    HIGH = 10


def test_fits_int32() -> None:
    assert fits_int32(INT32_MIN) and fits_int32(INT32_MAX) and fits_int32(Level.HIGH)
    assert not fits_int32(INT32_MIN - 1)
    assert not fits_int32(INT32_MAX + 1)
    assert not fits_int32(True)
    assert not fits_int32(1.0)
    assert not fits_int32("1")


@pytest.mark.parametrize(
    ("value", "nul"),
    [
        ("a\x00b", True),
        ({"k\x00": 1}, True),
        (["\\\x00"], True),  # a backslash, then NUL
        ("C:\\u0000", False),  # a backslash, then the letters u0000
        ("\\\\u0000", False),
        ("", False),
    ],
)
def test_json_has_nul_reads_escapes(value: Any, nul: bool) -> None:
    assert json_has_nul(json.dumps(value)) is nul


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "n" * (NAME_MAX + 1)}, "name"),
        ({"channel": "c" * (CHANNEL_MAX + 1)}, "channel"),
        ({"channel": ""}, "channel"),
        ({"priority": PRIORITY_MAX + 1}, "priority"),
        ({"priority": PRIORITY_MIN - 1}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"function": FunctionRef(module_name="m" * (NAME_MAX + 1), function_name="f")}, "module"),
        ({"function": FunctionRef(module_name="m", function_name="f" * 256)}, "function_name"),
        ({"function": FunctionRef(module_name="m", function_name="f", signature="s" * 65)}, "sig"),
        ({"function": FunctionRef(module_name="m")}, "import path or a serialized blob"),
    ],
)
def test_check_columns_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTaskError, match=rf"^task 7 \('x'\): .*{field}"):
        check_columns(replace(BASE, **change), "task 7 ('x')")


def test_check_columns_accepts_the_largest_values() -> None:
    check_columns(
        replace(
            BASE,
            name="n" * NAME_MAX,
            channel="c" * CHANNEL_MAX,
            priority=PRIORITY_MIN,
            max_retries=INT32_MAX,
        ),
        "task",
    )


# Values on both sides of each limit: add_task must accept exactly what the columns hold.
EDGES: list[tuple[str, Any]] = [
    ("name", "n" * NAME_MAX),
    ("name", "n" * (NAME_MAX + 1)),
    ("channel", "c"),
    ("channel", "c" * CHANNEL_MAX),
    ("channel", "c" * (CHANNEL_MAX + 1)),
    ("channel", ""),
    ("priority", INT32_MIN),  # the claim index negates priority: -INT32_MIN is out of range
    ("priority", PRIORITY_MIN),
    ("priority", PRIORITY_MAX),
    ("priority", PRIORITY_MAX + 1),
    ("max_retries", -1),
    ("max_retries", 0),
    ("max_retries", INT32_MAX),
    ("max_retries", INT32_MAX + 1),
]


@pytest.mark.parametrize("backend", ["memory"])
@pytest.mark.parametrize(("option", "value"), EDGES, ids=[f"{o}={str(v)[:12]}" for o, v in EDGES])
async def test_add_task_accepts_exactly_what_the_columns_hold(
    queue: TaskQueue, option: str, value: Any
) -> None:
    try:
        check_columns(replace(BASE, **{option: value}), "task")
    except InvalidTaskError:
        fits = False
    else:
        fits = True
    if fits:
        ref = queue.add_task(add, 1, 2, **{option: value})
        task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
        assert getattr(task, option) == value
    else:
        with pytest.raises(InvalidTaskError, match=rf"^add: {option} must be"):
            queue.add_task(add, 1, 2, **{option: value})
        assert queue.pending_count == 0


async def test_values_at_the_limits_are_written_and_read_back(queue: TaskQueue) -> None:
    accepted = {"name": "n" * NAME_MAX, "channel": "c" * CHANNEL_MAX, "max_retries": INT32_MAX}
    refs = [
        queue.add_task(add, 1, 2, priority=PRIORITY_MIN, **accepted),
        queue.add_task(add, 1, 2, priority=PRIORITY_MAX, **accepted),
    ]
    for ref, priority in zip(refs, (PRIORITY_MIN, PRIORITY_MAX), strict=True):
        task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
        assert (task.name, task.channel, task.max_retries) == tuple(accepted.values())
        assert task.priority == priority
    await run_until_idle(queue)  # a worker claims and runs them: the claim order holds them too
    assert [await ref.wait(timeout=10) for ref in refs] == [3, 3]


@pytest.mark.parametrize(
    "value",
    ["plain", "nul\x00", {"key\x00": 1}, {"deep": [{"x": "\x00"}]}, "C:\\u0000", 10**5000, 10**600],
    ids=["plain", "nul", "nul-key", "nul-deep", "escaped", "int-5000-digits", "int-600-digits"],
)
def test_to_json_refuses_what_a_json_column_refuses(value: Any) -> None:
    try:
        stored = json_has_nul(json.dumps(value)) is False
    except ValueError:  # an int longer than Python writes
        stored = False
    if stored:
        assert to_json(value, "f", 0) == value
    else:
        with pytest.raises(ArgumentNotSerializable, match=r"^f: positional argument 0"):
            to_json(value, "f", 0)


async def test_the_limits_hold_in_enqueue_and_enqueue_many(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    with pytest.raises(InvalidTaskError, match=r"^add: channel must be .* at most 64"):
        await queue.enqueue(add, 1, 2, channel="c" * 65)
    calls = [TaskCall(add, (1, 2)), TaskCall(send_email, ({"k\x00": "v"},))]
    with pytest.raises(ArgumentNotSerializable, match=r"^enqueue_many: item 1: send_email: "):
        await queue.enqueue_many(calls)
    assert counting.create_calls == []


async def test_an_import_path_longer_than_its_columns_is_refused_at_the_call(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_name = "f" * (NAME_MAX + 1)
    func = types.FunctionType(add.__code__, add.__globals__, long_name)
    func.__qualname__ = long_name
    func.__module__ = tasks.__name__
    monkeypatch.setattr(tasks, long_name, func, raising=False)
    with pytest.raises(FunctionNotSerializable, match=r"its name is longer than 255 characters"):
        queue.add_task(func, 1, 2)
    assert queue.pending_count == 0
    assert counting.create_calls == []


async def test_context_a_hook_sets_that_cannot_be_stored_is_dropped(
    queue: TaskQueue, hooks: HookRegistry, errors: list[str]
) -> None:
    @hooks.on_pre_create
    async def fill(task: NewTask) -> None:
        task.context.update({"kept": [1, "a"], "key\x00": 1, "value": "a\x00", "big": 10**5000})

    ref = queue.add_task(add, 1, 2)
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.context == {"kept": [1, "a"]}
    assert len([m for m in errors if "dropped context" in m]) == 3
