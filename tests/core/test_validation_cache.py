"""What validation remembers per function gives the same answers as looking anew each time.

The argument check that skips ``inspect.Signature.bind`` must accept exactly what ``bind``
accepts; a remembered import path must be dropped once it no longer leads to the function;
plain argument values are copied without a walk, everything else as before.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import inspect
import itertools
import weakref
from datetime import UTC, datetime
from typing import Any

import pytest

from taskqueue_core import InvalidTaskError, QueueConfig, TaskCall, TaskQueue
from taskqueue_core.arguments import to_json_args, to_json_kwargs
from taskqueue_core.exceptions import ArgumentNotSerializable
from taskqueue_core.functions import FunctionCodec
from taskqueue_core.validation import Validator
from tests.core import tasks
from tests.core.conftest import CountingRepository


def _plain(a, b):  # type: ignore[no-untyped-def]
    return a, b


def _defaults(a, b=1, *, c=2):  # type: ignore[no-untyped-def]
    return a, b, c


def _star(a, *rest, key, **extra):  # type: ignore[no-untyped-def]
    return a, rest, key, extra


def _only_positional(a, b=1, /, c=2):  # type: ignore[no-untyped-def]
    return a, b, c


def _keywords(*, x, y=0):  # type: ignore[no-untyped-def]
    return x, y


def _anything(*args, **kwargs):  # type: ignore[no-untyped-def]
    return args, kwargs


def _catch_all_named(a, **a_and_more):  # type: ignore[no-untyped-def]
    return a, a_and_more


def _nothing():  # type: ignore[no-untyped-def]
    return None


FUNCTIONS = [
    _plain,
    _defaults,
    _star,
    _only_positional,
    _keywords,
    _anything,
    _catch_all_named,
    _nothing,
]
NAMES = ["a", "b", "c", "x", "y", "key", "rest", "extra", "args", "kwargs", "a_and_more", "z"]


def _binds(func: Any, count: int, keywords: tuple[str, ...]) -> bool:
    try:
        inspect.signature(func).bind(*range(count), **dict.fromkeys(keywords, 0))
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: f.__name__)
def test_the_quick_argument_check_never_accepts_what_bind_refuses(func: Any) -> None:
    validator = Validator()
    codec = FunctionCodec("k")
    config = QueueConfig(database_url="memory://", secret_key="k")
    calls = 0
    for count in range(4):
        for size in range(3):
            for keywords in itertools.combinations(NAMES, size):
                call = TaskCall(func, tuple(range(count)), dict.fromkeys(keywords, 0))
                expected = _binds(func, count, keywords)
                try:
                    validator.prepare(call, config, codec)
                except InvalidTaskError:
                    assert not expected, (func.__name__, count, keywords)
                else:
                    assert expected, (func.__name__, count, keywords)
                calls += 1
    assert calls > 100


async def test_a_path_that_now_leads_elsewhere_is_not_reused(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = tasks.add
    await queue.enqueue(original, 1, 2)
    await queue.enqueue(original, 1, 2)  # remembered
    monkeypatch.setattr(tasks, "add", lambda a, b: a - b)
    await queue.enqueue(original, 1, 2)
    refs = [call[0].function for call in counting.create_calls]
    assert refs[0] is refs[1]
    assert refs[0].module_name == "tests.core.tasks" and refs[0].function_name == "add"
    # The path now names another function: the original is serialized instead.
    assert refs[2].module_name is None and refs[2].serialized_function is not None
    monkeypatch.undo()
    await queue.enqueue(original, 1, 2)
    assert counting.create_calls[-1][0].function.module_name == "tests.core.tasks"


def test_what_is_remembered_does_not_keep_a_function_alive() -> None:
    validator = Validator()
    codec = FunctionCodec("k")
    config = QueueConfig(database_url="memory://", secret_key="k")

    def local(a: int) -> int:
        return a

    validator.prepare(TaskCall(local, (1,)), config, codec)
    assert len(validator._functions) == 1
    gone = weakref.ref(local)
    del local
    gc.collect()
    assert gone() is None
    assert validator._functions == {}


def test_a_remembered_function_still_gets_every_check() -> None:
    validator = Validator()
    codec = FunctionCodec("k")
    config = QueueConfig(database_url="memory://", secret_key="k")
    validator.prepare(TaskCall(tasks.add, (1, 2)), config, codec)
    with pytest.raises(InvalidTaskError, match=r"^add\(a, b\): missing a required argument"):
        validator.prepare(TaskCall(tasks.add, (1,)), config, codec)
    with pytest.raises(InvalidTaskError, match=r"^add: priority must be"):
        validator.prepare(TaskCall(tasks.add, (1, 2), priority=1.5), config, codec)  # type: ignore[arg-type]
    with pytest.raises(ArgumentNotSerializable, match=r"^add: positional argument 1 is nan"):
        validator.prepare(TaskCall(tasks.add, (1, float("nan"))), config, codec)
    task = validator.prepare(TaskCall(tasks.add, (1, 2), name="mine"), config, codec)
    assert (task.name, task.args) == ("mine", [1, 2])
    task = validator.prepare(TaskCall(tasks.add, (1, 2)), config, codec)
    assert task.name == "tests.core.tasks.add"


class Color(enum.IntEnum):
    RED = 1


class Label(enum.StrEnum):
    HIGH = "high"


def test_plain_values_are_copied_as_they_are_and_the_rest_as_json() -> None:
    nested = [1, {"a": (2, 3)}]
    out = to_json_args(("s", 7, 1.5, True, None, Color.RED, Label.HIGH, nested, 10**700), "f")
    assert out[:5] == ["s", 7, 1.5, True, None]
    assert type(out[5]) is int and out[5] == 1
    assert type(out[6]) is str and out[6] == "high"
    assert out[7] == [1, {"a": [2, 3]}] and out[7] is not nested
    assert out[8] == 10**700
    with pytest.raises(ArgumentNotSerializable, match=r"^f: positional argument 1 is inf"):
        to_json_args(["ok", float("inf")], "f")
    with pytest.raises(ArgumentNotSerializable, match=r"NUL character"):
        to_json_args(["a\x00"], "f")
    assert to_json_kwargs({"k": Color.RED, "s": "v"}, "f") == {"k": 1, "s": "v"}
    with pytest.raises(ArgumentNotSerializable, match=r"^f: keyword names must be strings"):
        to_json_kwargs({1: 2}, "f")


def test_the_task_validation_builds_equals_the_dataclass_built_the_usual_way() -> None:
    from taskqueue_core import validation
    from taskqueue_core.models import NewTask

    assert validation._build_new_task.__qualname__ == "build_NewTask"  # the twin applies
    ref = FunctionCodec("k").dump(tasks.add)
    built = validation._build_new_task("n", ref, [1], {"k": 2}, {}, (), (), "c", 3, 4, 5.0, None)
    assert built == NewTask(
        name="n",
        function=ref,
        args=[1],
        kwargs={"k": 2},
        context={},
        channel="c",
        priority=3,
        max_retries=4,
        timeout=5.0,
        date_scheduled=None,
    )
    with pytest.raises(AttributeError):
        built.name = "changed"  # type: ignore[misc]
    built.context["hook"] = 1  # what pre_create hooks do
    assert built.context == {"hook": 1}


def test_enqueue_many_s_shared_checks_build_what_prepare_builds() -> None:
    validator = Validator()
    codec = FunctionCodec("k")
    config = QueueConfig(database_url="memory://", secret_key="k")
    base = 10

    def closure(a: int) -> int:
        return a + base

    eta = datetime(2030, 1, 1, tzinfo=UTC)
    calls = [
        *(TaskCall(tasks.add, (i, i)) for i in range(3)),
        TaskCall(tasks.add, (1,), {"b": 2}, priority=5),  # options change: a new run
        TaskCall(tasks.add, (1,), {"b": 3}, priority=5),
        TaskCall(tasks.add, (1, 2), name="named", channel="other", eta=eta, max_retries=1),
        TaskCall(tasks.add, (Color.RED, [1, (2,)]), timeout=3.5, parent=7),
        TaskCall(closure, (1,)),  # dumped at each call, never shared
        TaskCall(closure, (2,)),
        TaskCall(_defaults, (1,), {"c": 4}),
        TaskCall(tasks.add, (4, 4)),
    ]
    expected = [validator.prepare(call, config, codec) for call in calls]
    assert Validator().prepare_many(calls, config, codec, "enqueue_many") == expected
    assert validator.prepare_many(calls, config, codec, "enqueue_many") == expected


def test_each_call_of_a_run_still_gets_its_own_checks() -> None:
    validator = Validator()
    codec = FunctionCodec("k")
    config = QueueConfig(database_url="memory://", secret_key="k")
    good = [TaskCall(tasks.add, (i, i)) for i in range(4)]
    with pytest.raises(
        ArgumentNotSerializable, match=r"^verb: item 3: add: positional argument 1 is nan"
    ):
        validator.prepare_many(
            [*good[:3], TaskCall(tasks.add, (1, float("nan")))], config, codec, "verb"
        )
    with pytest.raises(InvalidTaskError, match=r"^verb: item 2: add\(a, b\): missing a required"):
        validator.prepare_many([*good[:2], TaskCall(tasks.add, (1,))], config, codec, "verb")
    with pytest.raises(InvalidTaskError, match=r"^verb: item 1: add: kwargs must be a dict"):
        validator.prepare_many([good[0], TaskCall(tasks.add, (1, 2), 3)], config, codec, "verb")  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match=r"^verb: item 1: add: parent must be a TaskRef"):
        validator.prepare_many(
            [good[0], TaskCall(tasks.add, (1, 2), parent=0)], config, codec, "verb"
        )
    with pytest.raises(InvalidTaskError, match=r"^verb: item 1 is a int, not a TaskCall"):
        validator.prepare_many([good[0], 5], config, codec, "verb")


async def test_enqueue_many_serializes_a_function_whose_path_now_leads_elsewhere(
    queue: TaskQueue, counting: CountingRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = tasks.add
    await queue.enqueue_many([TaskCall(original, (1, 2)), TaskCall(original, (3, 4))])
    monkeypatch.setattr(tasks, "add", lambda a, b: a - b)
    await queue.enqueue_many([TaskCall(original, (1, 2)), TaskCall(original, (3, 4))])
    before, after = counting.create_calls
    assert {t.function.module_name for t in before} == {"tests.core.tasks"}
    assert {t.function.module_name for t in after} == {None}
    assert all(t.function.serialized_function for t in after)


def test_a_slot_builder_builds_the_dataclass_or_calls_a_class_of_another_shape() -> None:
    from taskqueue_core.models import slot_builder

    @dataclasses.dataclass(frozen=True, slots=True)
    class Plain:
        a: int
        b: list[int]

    checked: list[int] = []

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int
        b: int

        def __post_init__(self) -> None:
            checked.append(self.a)

    @dataclasses.dataclass(frozen=True, slots=True, weakref_slot=True)
    class Weak:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Clashing:
        _tq_obj: int

    build = slot_builder(Plain)
    assert build.__qualname__ == "build_Plain"
    built = build(1, [2])
    assert type(built) is Plain
    assert built == Plain(1, [2]) and repr(built) == repr(Plain(1, [2]))
    assert hash(slot_builder(Checked)(1, 2)) == hash(Checked(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.a = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        build(1)  # every field, positionally
    # Classes the twin cannot stand for are called, by field name.
    assert slot_builder(Checked)(5, 6) == Checked(5, 6) and checked.count(5) == 2
    assert slot_builder(Weak)(1) == Weak(1)  # another layout: its __weakref__ slot
    assert slot_builder(Clashing)(4) == Clashing(4)  # a field named like the builder's own
    for cls in (Checked, Weak, Clashing):
        assert "build_" not in slot_builder(cls).__qualname__
