"""complete_tasks: outcomes, the guard, releasing children and cascading failures."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from taskqueue_core.limits import NAME_MAX
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, Outcome, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import (
    SERVER,
    WAIT,
    EventRecorder,
    assert_recent,
    create,
    finish,
    get,
    new,
    run,
    start,
    states,
    utcnow,
)


def names(task_id: int, message: str | None) -> bool:
    """True when ``message`` mentions ``task_id`` as a number of its own."""
    return re.search(rf"(?<!\d){task_id}(?!\d)", message or "") is not None


async def test_done_stores_result_and_dates(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await start(repository, task_id)
    changed = await finish(repository, task_id, result={"rows": 3}, execution_time=0.25)
    assert changed == [task_id]
    task = await get(repository, task_id)
    assert task.state is TaskState.DONE
    assert task.result == {"rows": 3}
    assert task.execution_time == 0.25
    assert_recent(task.date_done)
    assert task.date_ended == task.date_done
    assert task.date_failed is None and task.exception_name is None


async def test_done_releases_a_waiting_child(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await run(repository, parent)
    task = await get(repository, child)
    assert task.state is TaskState.ENQUEUED
    assert task.pending_parents == 0
    assert [t.id for t in await repository.claim_tasks("s", 5)] == [child]


async def test_done_releases_every_child_of_a_big_fan_out(repository: TaskRepository) -> None:
    # More children than one statement releases on PostgreSQL (``RELEASE_CHUNK``: the rest
    # are released in the background, each chunk with its "created" event), some of them
    # waiting for a second parent too: each edge is counted once.
    parent, other = await repository.create_tasks([new("parent"), new("other")])
    alone = await repository.create_tasks([new("alone", parent_ids=(parent,))] * 2_300)
    both = await repository.create_tasks([new("both", parent_ids=(parent, other))] * 200)
    recorder = EventRecorder()
    subscription = await repository.subscribe(recorder)
    try:
        await start(repository, parent, other)
        assert await finish(repository, parent) == [parent]
        await until_all(repository, recorder, alone, TaskState.ENQUEUED)
        assert set(await states(repository, *both)) == {TaskState.WAITING}
        assert {(await get(repository, i)).pending_parents for i in both[::50]} == {1}
        assert await finish(repository, other) == [other]
        assert set(await states(repository, *both)) == {TaskState.ENQUEUED}
    finally:
        await subscription.close()
    claimed = await repository.claim_tasks("s", 5_000)
    assert sorted(t.id for t in claimed) == sorted([*alone, *both])


async def until_all(
    repository: TaskRepository, recorder: EventRecorder, task_ids: list[int], state: TaskState
) -> None:
    """Wait until every one of ``task_ids`` is in ``state``, looking again at each "created"
    event (every release sends one after its commit); bounded."""
    async with asyncio.timeout(WAIT):
        while set(await states(repository, *task_ids)) != {state}:
            await recorder.wait_for(lambda event: event.kind == "created")


async def test_fan_in_waits_for_every_parent(repository: TaskRepository) -> None:
    p1, p2, p3 = await repository.create_tasks([new("p1"), new("p2"), new("p3")])
    child = await create(repository, parent_ids=(p1, p2, p3))
    await start(repository, p1, p2, p3)
    assert await finish(repository, p1) == [p1]
    assert (await get(repository, child)).pending_parents == 2
    assert await finish(repository, p3) == [p3]
    task = await get(repository, child)
    assert (task.state, task.pending_parents) == (TaskState.WAITING, 1)
    assert await finish(repository, p2) == [p2]
    task = await get(repository, child)
    assert (task.state, task.pending_parents) == (TaskState.ENQUEUED, 0)


async def test_several_outcomes_in_one_call(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks([new("a"), new("b"), new("c")])
    child = await create(repository, parent_ids=(a, b))
    await start(repository, a, b, c)
    changed = await repository.complete_tasks(
        SERVER,
        [
            Outcome(a, TaskState.DONE, result=1),
            Outcome(b, TaskState.DONE, result=2),
            Outcome(c, TaskState.FAILED, error_name="KeyError", error_message="'k'"),
        ],
    )
    assert sorted(changed) == [a, b, c]
    assert await states(repository, a, b, c, child) == [
        TaskState.DONE,
        TaskState.DONE,
        TaskState.FAILED,
        TaskState.ENQUEUED,
    ]


async def test_failure_stores_the_error(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await start(repository, task_id)
    await finish(
        repository,
        task_id,
        TaskState.FAILED,
        error_name="ZeroDivisionError",
        error_message="division by zero",
        error_info="Traceback (most recent call last):\n  ...",
        execution_time=1.5,
    )
    task = await get(repository, task_id)
    assert task.state is TaskState.FAILED
    assert task.exception_name == "ZeroDivisionError"
    assert task.exception_message == "division by zero"
    assert task.exception_info == "Traceback (most recent call last):\n  ..."
    assert task.execution_time == 1.5
    assert_recent(task.date_failed)
    assert task.date_ended == task.date_failed
    assert task.date_done is None


async def test_failure_cascades_down_a_chain(repository: TaskRepository) -> None:
    a, b, c, bystander = await repository.create_tasks(
        [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,)), new("x")]
    )
    await start(repository, a, bystander)
    assert await finish(repository, a, TaskState.FAILED, error_name="RuntimeError") == [a]
    for descendant in await repository.get_tasks([b, c]):
        assert descendant.state is TaskState.FAILED
        assert descendant.exception_name == PARENT_FAILED
        # Decision: the message names the task whose own failure started the cascade.
        assert names(a, descendant.exception_message), descendant.exception_message
        assert_recent(descendant.date_failed)
        assert descendant.date_ended is not None
    assert (await get(repository, bystander)).state is TaskState.DOING


async def test_failure_cascades_through_a_diamond(repository: TaskRepository) -> None:
    a, b, c, d = await repository.create_tasks(
        [
            new("a"),
            new("b", batch_parents=(0,)),
            new("c", batch_parents=(0,)),
            new("d", batch_parents=(1, 2)),
        ]
    )
    await run(repository, a, TaskState.FAILED, error_name="RuntimeError")
    tasks = await repository.get_tasks([b, c, d])
    assert [t.state for t in tasks] == [TaskState.FAILED] * 3
    assert all(t.exception_name == PARENT_FAILED for t in tasks)
    assert all(names(a, t.exception_message) for t in tasks)


async def test_failure_of_one_fan_in_parent_fails_the_child(repository: TaskRepository) -> None:
    p1, p2 = await repository.create_tasks([new("p1"), new("p2")])
    child = await create(repository, parent_ids=(p1, p2))
    await start(repository, p1, p2)
    await finish(repository, p1)
    await finish(repository, p2, TaskState.FAILED, error_name="E")
    task = await get(repository, child)
    assert task.state is TaskState.FAILED
    assert task.exception_name == PARENT_FAILED
    assert names(p2, task.exception_message)


async def test_retry_outcome_reschedules_and_counts(repository: TaskRepository) -> None:
    task_id = await create(repository, max_retries=3)
    await start(repository, task_id)
    retry_at = (utcnow() + timedelta(hours=1)).replace(microsecond=500)
    changed = await finish(
        repository,
        task_id,
        TaskState.ENQUEUED,
        retry_at=retry_at,
        error_name="TimeoutError",
        error_message="too slow",
    )
    assert changed == [task_id]
    task = await get(repository, task_id)
    assert task.state is TaskState.ENQUEUED
    assert task.retry_count == 1
    assert task.date_scheduled == retry_at
    assert task.exception_name == "TimeoutError"  # kept for display
    assert task.exception_message == "too slow"
    assert task.date_ended is None
    assert await repository.claim_tasks("s", 5) == []  # not before retry_at


async def test_retry_outcome_without_date_is_due_now(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await start(repository, task_id)
    await finish(repository, task_id, TaskState.ENQUEUED, error_name="E")
    (again,) = await repository.claim_tasks("server-b", 5)
    assert (again.id, again.retry_count, again.claimed_by) == (task_id, 1, "server-b")
    assert await finish(repository, task_id, TaskState.ENQUEUED, server="server-b") == [task_id]
    assert (await get(repository, task_id)).retry_count == 2


async def test_hand_back_does_not_count_an_attempt(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await start(repository, task_id)
    await finish(repository, task_id, TaskState.ENQUEUED, count_attempt=False)
    task = await get(repository, task_id)
    assert (task.state, task.retry_count) == (TaskState.ENQUEUED, 0)
    assert [t.id for t in await repository.claim_tasks("s", 5)] == [task_id]


async def test_cancelled_outcome_cancels_waiting_descendants(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks(
        [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
    )
    await run(repository, a, TaskState.CANCELLED)
    task = await get(repository, a)
    assert task.state is TaskState.CANCELLED
    assert_recent(task.date_cancelled)
    assert task.date_ended == task.date_cancelled
    for descendant in await repository.get_tasks([b, c]):
        assert descendant.state is TaskState.CANCELLED
        assert descendant.exception_name == PARENT_CANCELLED


async def test_stopped_outcome_leaves_children_waiting(repository: TaskRepository) -> None:
    parent = await create(repository)
    child = await create(repository, parent_ids=(parent,))
    await run(repository, parent, TaskState.STOPPED)
    task = await get(repository, parent)
    assert task.state is TaskState.STOPPED
    assert_recent(task.date_stopped)
    assert task.date_ended == task.date_stopped
    child_task = await get(repository, child)
    assert (child_task.state, child_task.pending_parents) == (TaskState.WAITING, 1)


async def test_outcome_context_replaces_the_stored_one(repository: TaskRepository) -> None:
    task_id = await create(repository, context={"before": 1, "kept": False})
    await start(repository, task_id)
    await finish(repository, task_id, result="ok", context={"after": {"step": 3}})
    assert (await get(repository, task_id)).context == {"after": {"step": 3}}


async def test_outcome_without_context_keeps_the_stored_one(repository: TaskRepository) -> None:
    task_id = await create(repository, context={"a": 1})
    await start(repository, task_id)
    await repository.update_contexts({task_id: {"a": 2}})
    await finish(repository, task_id, TaskState.FAILED, error_name="E")
    assert (await get(repository, task_id)).context == {"a": 2}


async def test_outcome_of_another_server_is_ignored(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await start(repository, task_id, server="owner")
    assert await finish(repository, task_id, server="intruder", result=1) == []
    task = await get(repository, task_id)
    assert (task.state, task.claimed_by, task.result) == (TaskState.DOING, "owner", None)
    assert await finish(repository, task_id, server="owner", result=2) == [task_id]


async def test_outcome_of_a_task_no_longer_doing_is_ignored(repository: TaskRepository) -> None:
    cancelled, stopped, done = await repository.create_tasks([new("c"), new("s"), new("d")])
    child = await create(repository, parent_ids=(cancelled,))
    await start(repository, cancelled, stopped, done)
    await repository.cancel_tasks([cancelled])
    await repository.stop_tasks([stopped])
    assert await finish(repository, done) == [done]
    changed = await repository.complete_tasks(
        SERVER,
        [
            Outcome(cancelled, TaskState.DONE, result="late"),
            Outcome(stopped, TaskState.FAILED, error_name="E"),
            Outcome(done, TaskState.FAILED, error_name="E"),
        ],
    )
    assert changed == []
    tasks = await repository.get_tasks([cancelled, stopped, done, child])
    assert [t.state for t in tasks] == [
        TaskState.CANCELLED,
        TaskState.STOPPED,
        TaskState.DONE,
        TaskState.CANCELLED,
    ]
    assert tasks[0].result is None
    assert tasks[2].exception_name is None


async def test_outcome_for_a_missing_task_is_ignored(repository: TaskRepository) -> None:
    assert await finish(repository, 424242) == []


async def test_error_texts_keep_their_nul_characters_as_replacement_characters(
    repository: TaskRepository,
) -> None:
    # Decision (the database columns): an error is stored whatever it says, as log lines
    # are, with NUL replaced by U+FFFD, for a retry as for a final failure.
    retried, failed = await repository.create_tasks([new("retried"), new("failed")])
    await start(repository, retried, failed)
    texts = {"error_name": "E\x00", "error_message": "bad\x00byte", "error_info": "trace\x00"}
    await repository.complete_tasks(
        SERVER,
        [
            Outcome(retried, TaskState.ENQUEUED, **texts),
            Outcome(failed, TaskState.FAILED, **texts),
        ],
    )
    for task_id in (retried, failed):
        task = await get(repository, task_id)
        assert (task.exception_name, task.exception_message, task.exception_info) == (
            "E\ufffd",
            "bad\ufffdbyte",
            "trace\ufffd",
        )


async def test_an_error_name_longer_than_its_column_is_cut_to_fit(
    repository: TaskRepository,
) -> None:
    # An exception class may have any name; exception_name holds NAME_MAX characters.
    retried, failed = await repository.create_tasks([new("retried"), new("failed")])
    await start(repository, retried, failed)
    long_name = "E" * (NAME_MAX - 1) + "\x00" + "F" * 50
    await repository.complete_tasks(
        SERVER,
        [
            Outcome(retried, TaskState.ENQUEUED, error_name=long_name, error_message="m"),
            Outcome(failed, TaskState.FAILED, error_name=long_name, error_message="m"),
        ],
    )
    for task_id in (retried, failed):
        task = await get(repository, task_id)
        assert task.exception_name == "E" * (NAME_MAX - 1) + "\ufffd"
        assert task.exception_message == "m"
