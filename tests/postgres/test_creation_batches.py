"""create_tasks on PostgreSQL: batches travel by column, and their cost stays linear.

A batch sends a column as one value when every task has the same one and the JSON columns as
one document each; these tests mix tasks so that every column takes both forms, and check
that each task reads back exactly as given, that a bad task is named by its position with
nothing written, and that the statement's plan stays cheap for large batches (its estimates
once exploded and switched JIT compilation on).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from taskqueue_core.exceptions import ArgumentNotSerializable, InvalidTaskError
from taskqueue_core.models import Event, FunctionRef, NewTask, Outcome, TaskState
from taskqueue_core.tortoise.postgres import PostgresRepository, batches
from taskqueue_core.tortoise.postgres.inserts import CREATE_FREE_SQL, CREATE_SQL

pytestmark = pytest.mark.postgres

BY_PATH = FunctionRef(module_name="tests.postgres.test_creation_batches", function_name="noop")
SIGNED = FunctionRef(
    module_name="tests.postgres.test_creation_batches", function_name="noop", signature="ab" * 32
)
BLOB = FunctionRef(serialized_function=b"\x80\x04blob\x00bytes", signature="cd" * 32)


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


def _mixed(count: int) -> list[NewTask]:
    """Tasks whose every column varies somewhere in the batch (and repeats elsewhere)."""
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    tasks = []
    for i in range(count):
        tasks.append(
            NewTask(
                name=f"task-{i % 3}",
                function=(BY_PATH, SIGNED, BLOB)[i % 3],
                args=[[i], [], ["é", None, 1.5, {"k": [True]}]][i % 3],
                kwargs={} if i % 4 else {"i": i, "nested": {"a": [1, 2]}},
                context={} if i % 5 else {"step": i},
                channel=("default", "other")[i % 2],
                priority=(0, -5, 2**31 - 1)[i % 3],
                max_retries=(3, 0)[i % 2],
                timeout=(None, 2.5, 10)[i % 3],
                date_scheduled=(None, when, when.astimezone(tz=None))[i % 3],
            )
        )
    return tasks


def _stored_as_given(given: NewTask, task: Any) -> None:
    assert task.name == given.name
    assert task.function.module_name == given.function.module_name
    assert task.function.function_name == given.function.function_name
    assert task.function.signature == given.function.signature
    if given.function.serialized_function is None:
        assert task.function.serialized_function is None
    else:
        assert bytes(task.function.serialized_function) == given.function.serialized_function
    assert json.dumps(task.args) == json.dumps(given.args)
    assert task.kwargs == given.kwargs
    assert task.context == given.context
    assert task.channel == given.channel
    assert task.priority == given.priority
    assert task.max_retries == given.max_retries
    assert task.timeout == (None if given.timeout is None else float(given.timeout))
    if given.date_scheduled is not None:
        assert task.date_scheduled == given.date_scheduled
    assert task.state is TaskState.ENQUEUED
    assert task.pending_parents == 0
    assert task.parent_task is None


def _node_types(plan: dict[str, Any]) -> set[str]:
    """Every node type of an EXPLAIN (FORMAT JSON) plan."""
    types = {plan["Node Type"]}
    for child in plan.get("Plans", []):
        types |= _node_types(child)
    return types


@pytest.mark.parametrize("count", [1, 2, 7, 300])
async def test_every_task_of_a_batch_is_stored_as_given(
    repo: PostgresRepository, count: int
) -> None:
    given = _mixed(count)
    ids = await repo.create_tasks(given)
    assert len(set(ids)) == count and ids == sorted(ids)
    stored = await repo.get_tasks(ids)
    assert [t.id for t in stored] == ids
    for new, task in zip(given, stored, strict=True):
        _stored_as_given(new, task)


def test_mixed_batches_take_the_column_path() -> None:
    # (So that the test above covers it: anything unusual takes the task-by-task path.)
    assert batches._batch_by_column(_mixed(300)) is not None
    assert batches._batch_of_one(_mixed(1)[0]) is not None
    assert batches._batch_of_one(NewTask("child", BY_PATH, parent_ids=(5,))) is not None


class Name(str):
    """A str subclass: valid, but the column checks leave it to the task-by-task path."""


async def test_unusual_values_take_the_task_path_and_are_stored_as_given(
    repo: PostgresRepository,
) -> None:
    given = _mixed(5)
    given[2] = NewTask(Name("named"), BY_PATH, args=(1, "two"), kwargs={"k": Name("v")})
    assert batches._batch_by_column(given) is None
    ids = await repo.create_tasks(given)
    stored = await repo.get_tasks(ids)
    for new, task in zip(given, stored, strict=True):
        _stored_as_given(new, task)
    [single] = await repo.get_tasks(await repo.create_tasks([given[2]]))
    _stored_as_given(given[2], single)


async def test_a_uniform_batch_is_stored_as_given(repo: PostgresRepository) -> None:
    given = [NewTask("same", SIGNED, args=[], channel="uniform") for _ in range(50)]
    ids = await repo.create_tasks(given)
    stored = await repo.get_tasks(ids)
    assert len(stored) == 50
    for new, task in zip(given, stored, strict=True):
        _stored_as_given(new, task)


async def test_json_values_python_finds_equal_stay_distinct(repo: PostgresRepository) -> None:
    # 1 == 1.0 == True in Python, but not in JSON: a batch must not merge them.
    given = [
        NewTask("t", BY_PATH, args=[1], kwargs={"v": 1}),
        NewTask("t", BY_PATH, args=[True], kwargs={"v": True}),
        NewTask("t", BY_PATH, args=[1.0], kwargs={"v": 1.0}),
    ]
    stored = await repo.get_tasks(await repo.create_tasks(given))
    assert [json.dumps(t.args) for t in stored] == ["[1]", "[true]", "[1.0]"]
    assert [json.dumps(t.kwargs) for t in stored] == ['{"v": 1}', '{"v": true}', '{"v": 1.0}']


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ({"priority": 3.0}, InvalidTaskError, r"task 3 \('t3'\): priority must be an int"),
        ({"max_retries": True}, InvalidTaskError, r"task 3 \('t3'\): max_retries must be an int"),
        ({"priority": 2**31}, InvalidTaskError, r"task 3 \('t3'\): priority is out of range"),
        ({"channel": "c" * 65}, InvalidTaskError, r"task 3 \('t3'\): channel must be a string"),
        ({"name": "n" * 256}, InvalidTaskError, r"task 3 \('n+'\): name must be a string"),
        ({"kwargs": {"k": "a\x00b"}}, ArgumentNotSerializable, r"task 3 \('t3'\): kwargs"),
        ({"args": [float("nan")]}, ArgumentNotSerializable, r"task 3 \('t3'\): args"),
        ({"context": {"x": object()}}, ArgumentNotSerializable, r"task 3 \('t3'\): context"),
        ({"batch_parents": (5,)}, InvalidTaskError, r"task 3 \('t3'\): batch_parents entry 5"),
        ({"parent_ids": ("1",)}, InvalidTaskError, r"task 3 \('t3'\): parent id '1'"),
        ({"timeout": "5"}, InvalidTaskError, r"task 3 \('t3'\): timeout must be a number"),
        ({"timeout": 10**400}, InvalidTaskError, r"task 3 \('t3'\): timeout must be a number"),
    ],
)
async def test_a_bad_task_is_named_by_position_and_nothing_is_written(
    repo: PostgresRepository, bad: dict[str, Any], error: type[Exception], message: str
) -> None:
    given = [NewTask(f"t{i}", BY_PATH, args=[i], priority=3, max_retries=3) for i in range(6)]
    fields: dict[str, Any] = {"name": "t3", "function": BY_PATH, "args": [3], **bad}
    fields.setdefault("priority", 3)
    given[3] = NewTask(**fields)
    with pytest.raises(error, match=message):
        await repo.create_tasks(given)
    assert (await repo.list_tasks()).total == 0


async def test_parents_in_and_out_of_the_batch(repo: PostgresRepository) -> None:
    [done, running] = await repo.create_tasks([NewTask("done", BY_PATH), NewTask("run", BY_PATH)])
    claimed = await repo.claim_tasks("s", 1)
    assert [t.id for t in claimed] == [done]
    await repo.complete_tasks("s", [Outcome(done, TaskState.DONE)])
    given = [
        NewTask("free", BY_PATH),
        NewTask("after-done", BY_PATH, parent_ids=(done,)),
        NewTask("after-both", BY_PATH, parent_ids=(done, running)),
        NewTask("after-free", BY_PATH, batch_parents=(0,)),
        NewTask("after-two", BY_PATH, parent_ids=(running,), batch_parents=(0, 3)),
    ]
    ids = await repo.create_tasks(given)
    stored = {t.name: t for t in await repo.get_tasks(ids)}
    assert stored["free"].state is TaskState.ENQUEUED
    assert (stored["after-done"].state, stored["after-done"].pending_parents) == (
        TaskState.ENQUEUED,
        0,
    )
    assert stored["after-done"].parent_task == done
    assert (stored["after-both"].state, stored["after-both"].pending_parents) == (
        TaskState.WAITING,
        1,
    )
    assert stored["after-free"].parent_task == ids[0]
    assert stored["after-free"].pending_parents == 1
    assert stored["after-two"].parent_task == running
    assert stored["after-two"].pending_parents == 3
    tree = await repo.get_tree(ids[0])
    assert {t.name for t in tree.tasks} == {"free", "after-free", "after-two"}


async def test_a_single_task_sends_its_event(repo: PostgresRepository) -> None:
    seen: asyncio.Queue[Event] = asyncio.Queue()
    subscription = await repo.subscribe(seen.put_nowait)
    try:
        await repo.create_tasks([NewTask("one", BY_PATH, channel="solo")])
        event = await asyncio.wait_for(seen.get(), 10)
        while event.kind != "created":
            event = await asyncio.wait_for(seen.get(), 10)
        assert event.channels == ("solo",)
    finally:
        await subscription.close()


async def test_a_large_batch_is_one_linear_statement(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    # The plan of a 50,000-task batch: no join (positions are array subscripts), and an
    # estimated cost far below the point where PostgreSQL would JIT-compile it.
    batch = batches.batch_of([NewTask("t", BY_PATH, args=[i]) for i in range(50_000)])
    jit_above = float(await db.fetchval("SHOW jit_above_cost"))
    statements = [
        (CREATE_SQL, repo._create_args(batch, {})),
        (CREATE_FREE_SQL, [*repo._columns_args(batch), "queue_new_task", ["{}"]]),
    ]
    for mode in ("auto", "force_generic_plan"):
        await db.execute(f"SET plan_cache_mode = {mode}")
        for sql, arguments in statements:
            statement = await db.prepare("EXPLAIN (FORMAT JSON) " + sql)
            plan = json.loads(await statement.fetchval(*arguments))[0]["Plan"]
            assert plan["Total Cost"] < jit_above / 10, plan["Total Cost"]
            assert not _node_types(plan) & {"Hash Join", "Merge Join"}, plan
    started = datetime.now(UTC)
    ids = await repo.create_tasks([NewTask("t", BY_PATH, args=[i]) for i in range(20_000)])
    assert len(set(ids)) == 20_000 and ids == sorted(ids)
    assert await db.fetchval("SELECT count(*) FROM queued_tasks") == 20_000
    first, last = await repo.get_tasks([ids[0], ids[-1]])
    assert (first.args, last.args) == ([0], [19_999])
    assert datetime.now(UTC) - started < timedelta(seconds=60)


def _count_rows_in_a_thread(url: str, wanted: int, seconds: float) -> int:
    """From a thread of its own (its own loop and connection): poll the number of tasks until
    it is ``wanted`` or ``seconds`` have passed; return the last count."""
    import threading

    seen = [-1]

    async def poll() -> None:
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            deadline = asyncio.get_running_loop().time() + seconds
            while True:
                seen[0] = await conn.fetchval("SELECT count(*) FROM queued_tasks")
                if seen[0] >= wanted or asyncio.get_running_loop().time() > deadline:
                    return
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    thread = threading.Thread(target=asyncio.run, args=(poll(),), name="count-rows")
    thread.start()
    thread.join(seconds + 10)
    return seen[0]


async def test_a_full_batch_of_add_task_reaches_the_server_before_the_burst_ends(
    pg_url: str,
) -> None:
    """The add_task that fills a batch sends its statement at once (the queue's opening
    prepared it): the server writes the batch while this test still holds the event loop."""
    from taskqueue_core import HookRegistry, QueueConfig, TaskQueue
    from taskqueue_core.creation import MAX_BATCH_SIZE

    config = QueueConfig(database_url=pg_url, secret_key="creation-tests")
    # A registry of its own: a pre_create hook (of another test, in the process-wide one)
    # would run first, when the loop runs.
    async with TaskQueue(config, hooks=HookRegistry()) as queue:
        refs = [queue.add_task(noop) for _ in range(MAX_BATCH_SIZE)]
        # Blocks the loop: the rows can only come from the statement already sent.
        assert _count_rows_in_a_thread(pg_url, MAX_BATCH_SIZE, 30) == MAX_BATCH_SIZE
        ids = await asyncio.wait_for(asyncio.gather(*(r.get_task_id() for r in refs)), 60)
    assert len(set(ids)) == MAX_BATCH_SIZE
