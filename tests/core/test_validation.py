"""Bad input to add_task/enqueue: a clear error at once, naming the problem; nothing written."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from taskqueue_core import (
    ArgumentNotSerializable,
    FunctionNotSerializable,
    InvalidTaskError,
    TaskCall,
    TaskQueue,
)
from tests.core.conftest import CountingRepository
from tests.core.tasks import Mailer, add, send_email, takes_options


def _looped() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _closure_over_a_generator() -> Callable[[], int]:
    numbers = (i for i in range(3))
    return lambda: next(numbers)


# (call args for add_task, expected exception, regex its message must match)
BAD: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    (
        "datetime positional",
        (send_email, datetime(2024, 1, 1)),
        {},
        ArgumentNotSerializable,
        r"send_email: positional argument 0 is of type datetime\.datetime, which is not JSON",
    ),
    (
        "set keyword",
        (send_email, "a"),
        {"subject": {1, 2}},
        ArgumentNotSerializable,
        r"keyword argument 'subject' is of type set",
    ),
    (
        "nested object",
        (send_email, {"a": [1, object()]}),
        {},
        ArgumentNotSerializable,
        r"positional argument 0 at \['a'\]\[1\] is of type object",
    ),
    (
        "int dict key",
        (send_email, {1: "x"}),
        {},
        ArgumentNotSerializable,
        r"positional argument 0 has a key 1 of type int \(JSON keys are str\)",
    ),
    (
        "int key in a nested dict",
        (send_email, {"ok": {1: "x"}}),
        {},
        ArgumentNotSerializable,
        r"positional argument 0 at \['ok'\] has a key 1 of type int",
    ),
    ("nan", (add, math.nan, 1), {}, ArgumentNotSerializable, r"argument 0 is nan"),
    ("bytes", (send_email, b"x"), {}, ArgumentNotSerializable, r"is of type bytes"),
    ("nul", (send_email, "a\x00b"), {}, ArgumentNotSerializable, r"NUL character"),
    ("cycle", (send_email, _looped()), {}, ArgumentNotSerializable, r"nested too deeply"),
    (
        "nul in a key",
        (send_email, {"ok": {"a\x00": 1}}),
        {},
        ArgumentNotSerializable,
        r"positional argument 0 at \['ok'\] has a key 'a\\x00' containing a NUL character",
    ),
    (
        "nul in a keyword name",
        (send_email, "a"),
        {"b\x00": 1},
        ArgumentNotSerializable,
        r"send_email: keyword name 'b\\x00' contains a NUL character",
    ),
    (
        "int too long for JSON",
        (send_email, [10**5000]),
        {},
        ArgumentNotSerializable,
        r"positional argument 0 at \[0\] is an int too long to write as JSON",
    ),
    (
        "bound method",
        (Mailer().send, "a"),
        {},
        FunctionNotSerializable,
        r"Mailer\.send is a bound method",
    ),
    (
        "undillable closure",
        (_closure_over_a_generator(),),
        {},
        FunctionNotSerializable,
        r"<lambda> cannot be serialized with dill: TypeError: cannot pickle 'generator'",
    ),
    ("not callable", ("send_email",), {}, FunctionNotSerializable, r"must be callable, got str"),
    (
        "signature: missing",
        (send_email,),
        {},
        InvalidTaskError,
        r"send_email\(recipient, subject='hello'\): missing a required argument: 'recipient'",
    ),
    (
        "signature: unexpected keyword",
        (send_email, "a"),
        {"cc": "b"},
        InvalidTaskError,
        r"unexpected keyword argument 'cc'",
    ),
    ("priority str", (add, 1, 2), {"priority": "high"}, InvalidTaskError, r"priority must be"),
    ("priority bool", (add, 1, 2), {"priority": True}, InvalidTaskError, r"priority must be"),
    ("priority huge", (add, 1, 2), {"priority": 2**40}, InvalidTaskError, r"priority must be"),
    (
        "priority above int32",
        (add, 1, 2),
        {"priority": 2**31},
        InvalidTaskError,
        r"add: priority must be a whole number from -2147483647 to 2147483647, got 2147483648",
    ),
    (
        "priority below int32",
        (add, 1, 2),
        {"priority": -(2**31)},
        InvalidTaskError,
        r"priority must be a whole number from -2147483647 to 2147483647, got -2147483648",
    ),
    (
        "max_retries negative",
        (add, 1, 2),
        {"max_retries": -1},
        InvalidTaskError,
        r"max_retries must be a whole number, 0 or more, got -1",
    ),
    ("max_retries float", (add, 1, 2), {"max_retries": 1.5}, InvalidTaskError, r"max_retries"),
    (
        "max_retries above int32",
        (add, 1, 2),
        {"max_retries": 2**31},
        InvalidTaskError,
        r"add: max_retries must be a whole number of at most 2147483647, got 2147483648",
    ),
    (
        "timeout str",
        (add, 1, 2),
        {"timeout": "x"},
        InvalidTaskError,
        r"timeout must be a number of seconds greater than 0, got 'x'",
    ),
    ("timeout zero", (add, 1, 2), {"timeout": 0}, InvalidTaskError, r"timeout must be"),
    ("timeout inf", (add, 1, 2), {"timeout": math.inf}, InvalidTaskError, r"timeout must be"),
    (
        "timeout int beyond float",
        (add, 1, 2),
        {"timeout": 10**400},
        InvalidTaskError,
        r"timeout must be a number of seconds greater than 0",
    ),
    ("channel empty", (add, 1, 2), {"channel": ""}, InvalidTaskError, r"channel must be"),
    ("channel int", (add, 1, 2), {"channel": 5}, InvalidTaskError, r"channel must be.*got 5"),
    ("channel long", (add, 1, 2), {"channel": "c" * 65}, InvalidTaskError, r"at most 64"),
    ("channel nul", (add, 1, 2), {"channel": "c\x00"}, InvalidTaskError, r"channel must be"),
    ("name nul", (add, 1, 2), {"name": "n\x00"}, InvalidTaskError, r"without NUL"),
    ("name empty", (add, 1, 2), {"name": " "}, InvalidTaskError, r"name must be a non-empty"),
    ("name int", (add, 1, 2), {"name": 5}, InvalidTaskError, r"name must be"),
    ("name long", (add, 1, 2), {"name": "n" * 256}, InvalidTaskError, r"at most 255"),
    (
        "delay and eta",
        (add, 1, 2),
        {"delay": 5, "eta": datetime.now(UTC)},
        InvalidTaskError,
        r"add: give delay or eta, not both",
    ),
    ("delay negative", (add, 1, 2), {"delay": -1}, InvalidTaskError, r"delay must be 0 or more"),
    (
        "delay negative timedelta",
        (add, 1, 2),
        {"delay": timedelta(seconds=-1)},
        InvalidTaskError,
        r"delay must be",
    ),
    ("delay str", (add, 1, 2), {"delay": "soon"}, InvalidTaskError, r"delay must be a number"),
    (
        "delay beyond year 9999",
        (add, 1, 2),
        {"delay": 1e12},
        InvalidTaskError,
        r"add: delay must be short enough to end before the year 10000, got 1000000000000\.0",
    ),
    (
        "delay beyond timedelta",
        (add, 1, 2),
        {"delay": 10**400},
        InvalidTaskError,
        r"delay must be short enough to end before the year 10000",
    ),
    ("delay inf", (add, 1, 2), {"delay": math.inf}, InvalidTaskError, r"before the year 10000"),
    ("delay nan", (add, 1, 2), {"delay": math.nan}, InvalidTaskError, r"delay must be 0 or more"),
    (
        "eta beyond year 9999 in UTC",
        (add, 1, 2),
        {"eta": datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))},
        InvalidTaskError,
        r"eta must be a datetime within the years 1 to 9999 in UTC",
    ),
    (
        "eta naive",
        (add, 1, 2),
        {"eta": datetime(2030, 1, 1)},
        InvalidTaskError,
        r"eta must be a timezone-aware datetime",
    ),
    ("eta str", (add, 1, 2), {"eta": "tomorrow"}, InvalidTaskError, r"eta must be a datetime"),
    (
        "parent str",
        (add, 1, 2),
        {"parent": "3"},
        InvalidTaskError,
        r"parent must be a TaskRef, a task id or a list of them, got str",
    ),
    ("parent in list", (add, 1, 2), {"parent": [1, "x"]}, InvalidTaskError, r"got str 'x'"),
    ("parent zero", (add, 1, 2), {"parent": 0}, InvalidTaskError, r"an int > 0\).*got int 0"),
    ("parent bool", (add, 1, 2), {"parent": True}, InvalidTaskError, r"got bool True"),
    ("parent float", (add, 1, 2), {"parent": 1.5}, InvalidTaskError, r"got float"),
    (
        "TaskCall args str",
        (TaskCall(add, "ab"),),
        {},
        InvalidTaskError,
        r"args must be a list or tuple, got str",
    ),
    (
        "TaskCall and options",
        (TaskCall(add, (1, 2)),),
        {"priority": 3},
        InvalidTaskError,
        r"pass either a TaskCall alone",
    ),
]


@pytest.mark.parametrize("backend", ["memory"])
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [pytest.param(a, k, e, m, id=name) for name, a, k, e, m in BAD],
)
async def test_add_task_refuses_bad_input_at_once(
    queue: TaskQueue,
    counting: CountingRepository,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        queue.add_task(*args, **kwargs)
    with pytest.raises(error, match=message):
        await queue.enqueue(*args, **kwargs)
    assert queue.pending_count == 0
    await queue.flush()
    assert counting.create_calls == []
    assert (await queue.list_tasks()).total == 0


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
async def test_no_bad_input_reaches_the_database(
    queue: TaskQueue, counting: CountingRepository, pg_url: str
) -> None:
    """Every case above, on one PostgreSQL database: refused, and not a row written."""
    import asyncpg

    from tests.conftest import _asyncpg_url

    for case, args, kwargs, error, message in BAD:
        with pytest.raises(error, match=message):
            queue.add_task(*args, **kwargs)
        with pytest.raises(error, match=message):
            await queue.enqueue(*args, **kwargs)
        assert queue.pending_count == 0, case
    await asyncio.wait_for(queue.flush(), 30)
    assert counting.create_calls == []
    conn = await asyncpg.connect(_asyncpg_url(pg_url))
    try:
        for table in ("queued_tasks", "queued_task_dependencies", "queued_task_logs"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()


async def test_coroutine_instead_of_function_is_refused_and_closed(queue: TaskQueue) -> None:
    coroutine = send_email("a")
    with pytest.raises(FunctionNotSerializable, match=r"add_task\(send_email, to\)"):
        queue.add_task(coroutine)  # type: ignore[arg-type]
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning later


async def test_a_bad_task_does_not_stop_the_good_ones_of_the_same_tick(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    good = queue.add_task(add, 1, 2)
    with pytest.raises(ArgumentNotSerializable):
        queue.add_task(add, 1, object())
    other = queue.add_task(add, 3, 4)
    await asyncio.wait_for(queue.flush(), 30)
    assert [len(c) for c in counting.create_calls] == [2]
    page = await queue.list_tasks()
    assert page.total == 2
    assert {t.id for t in page.tasks} == {await good.get_task_id(), await other.get_task_id()}


async def test_enqueue_many_validates_every_call_before_writing(
    queue: TaskQueue, counting: CountingRepository
) -> None:
    calls = [TaskCall(add, (1, 2)), TaskCall(add, (1, 2), priority="x")]  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match=r"enqueue_many: item 1: add: priority must be"):
        await queue.enqueue_many(calls)
    with pytest.raises(InvalidTaskError, match=r"item 0 is a function, not a TaskCall"):
        await queue.enqueue_many([add])  # type: ignore[list-item]
    assert counting.create_calls == []
    assert (await queue.list_tasks()).total == 0


async def test_option_names_are_reserved_but_reachable_through_taskcall(queue: TaskQueue) -> None:
    # name=/priority=/channel= are options of add_task, not arguments of the function ...
    with pytest.raises(InvalidTaskError, match="missing a required argument"):
        queue.add_task(takes_options, name="n", priority=1, channel="c")
    # ... so arguments with those names travel in a TaskCall.
    ref = queue.add_task(
        TaskCall(takes_options, kwargs={"name": "n", "priority": 1, "channel": "c"}, priority=9)
    )
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.kwargs == {"name": "n", "priority": 1, "channel": "c"}
    assert task.priority == 9 and task.channel == "default"
    assert task.name == "tests.core.tasks.takes_options"


async def test_a_taskcall_changed_after_use_changes_no_created_task(queue: TaskQueue) -> None:
    call = TaskCall(add, [1, 2], kwargs={}, priority=3)
    [first] = await queue.enqueue_many([call])
    ref = queue.add_task(call)
    # The queue read the call when it was given; changing it (and its argument list) now
    # describes another task.
    call.priority = 7
    call.args[0] = 5  # type: ignore[index]
    [third] = await queue.enqueue_many([call])
    refs = (first, ref, third)
    tasks = [await queue.get_task(await asyncio.wait_for(r.get_task_id(), 30)) for r in refs]
    assert [(t.args, t.priority) for t in tasks] == [([1, 2], 3), ([1, 2], 3), ([5, 2], 7)]


async def test_local_functions_and_enum_arguments_are_accepted(queue: TaskQueue) -> None:
    import enum

    class Color(enum.StrEnum):
        RED = "red"

    factor = 3

    async def scale(values: list[int], color: str) -> list[int]:
        return [v * factor for v in values]

    ref = queue.add_task(scale, (1, 2), Color.RED)
    task = await queue.get_task(await asyncio.wait_for(ref.get_task_id(), 30))
    assert task.args == [[1, 2], "red"]
    assert task.function.serialized_function is not None
    loaded = queue.codec.load(task.function)
    assert await loaded([1, 2], "red") == [3, 6]
