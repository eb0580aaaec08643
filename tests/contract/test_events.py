"""subscribe / publish: the events every write emits reach subscribers in this process."""

from __future__ import annotations

from taskqueue_core.models import Event, Outcome, TaskState
from taskqueue_core.repository import Subscription, TaskRepository
from tests.contract.helpers import (
    SERVER,
    EventRecorder,
    create,
    created,
    new,
    start,
    wait_ids,
)


async def subscribe(repository: TaskRepository) -> tuple[EventRecorder, Subscription]:
    recorder = EventRecorder()
    subscription = await repository.subscribe(recorder)
    assert isinstance(subscription, Subscription)
    assert subscription.healthy is True
    return recorder, subscription


async def test_created_names_the_channels_of_ready_tasks(repository: TaskRepository) -> None:
    recorder, subscription = await subscribe(repository)
    try:
        await repository.create_tasks([new("a", channel="alpha"), new("b", channel="beta")])
        await recorder.wait_for(created("alpha", "beta"))
    finally:
        await subscription.close()


async def test_created_when_a_child_is_released(repository: TaskRepository) -> None:
    parent = await create(repository)
    await create(repository, parent_ids=(parent,), channel="children")
    recorder, subscription = await subscribe(repository)
    try:
        await start(repository, parent)
        await repository.complete_tasks(SERVER, [Outcome(parent, TaskState.DONE)])
        await recorder.wait_for(created("children"))
        await wait_ids(recorder, "ended", parent)
    finally:
        await subscription.close()


async def test_ended_names_failed_descendants(repository: TaskRepository) -> None:
    a, b, c = await repository.create_tasks(
        [new("a"), new("b", batch_parents=(0,)), new("c", batch_parents=(1,))]
    )
    await start(repository, a)
    recorder, subscription = await subscribe(repository)
    try:
        await repository.complete_tasks(SERVER, [Outcome(a, TaskState.FAILED, error_name="E")])
        await wait_ids(recorder, "ended", a, b, c)
    finally:
        await subscription.close()


async def test_cancel_emits_control_for_doing_tasks(repository: TaskRepository) -> None:
    doing, queued = await repository.create_tasks([new("doing"), new("queued", channel="q")])
    child = await create(repository, parent_ids=(queued,))
    await repository.claim_tasks(SERVER, 1, channels=["default"])
    recorder, subscription = await subscribe(repository)
    try:
        await repository.cancel_tasks([doing, queued])
        await wait_ids(recorder, "control", doing)
        await wait_ids(recorder, "ended", doing, queued, child)
        controlled = {i for e in recorder.drain() if e.kind == "control" for i in e.task_ids}
        assert queued not in controlled and child not in controlled
    finally:
        await subscription.close()


async def test_stop_emits_control_and_ended(repository: TaskRepository) -> None:
    doing, queued = await repository.create_tasks([new("doing"), new("queued", channel="q")])
    await repository.claim_tasks(SERVER, 1, channels=["default"])
    recorder, subscription = await subscribe(repository)
    try:
        await repository.stop_tasks([doing, queued])
        await wait_ids(recorder, "control", doing)
        await wait_ids(recorder, "ended", doing, queued)
    finally:
        await subscription.close()


async def test_retry_emits_created(repository: TaskRepository) -> None:
    task_id = await create(repository, channel="again")
    await repository.cancel_tasks([task_id])
    recorder, subscription = await subscribe(repository)
    try:
        await repository.retry_tasks([task_id])
        await recorder.wait_for(created("again"))
    finally:
        await subscription.close()


async def test_published_events_reach_every_subscriber(repository: TaskRepository) -> None:
    first, sub1 = await subscribe(repository)
    second, sub2 = await subscribe(repository)
    try:
        event = Event("control", task_ids=(41, 42))
        await repository.publish(event)
        assert await first.wait_for(lambda e: e.kind == "control") == event
        assert await second.wait_for(lambda e: e.kind == "control") == event
    finally:
        await sub1.close()
        await sub2.close()


async def test_closed_subscription_receives_nothing(repository: TaskRepository) -> None:
    closed, sub_closed = await subscribe(repository)
    witness, sub_witness = await subscribe(repository)
    try:
        await sub_closed.close()
        await sub_closed.close()  # idempotent
        await repository.create_tasks([new("after-close", channel="late")])
        # The witness is still subscribed: once it has the event, the closed one would have
        # had it too.
        await witness.wait_for(created("late"))
        assert [e for e in closed.drain() if e.kind == "created"] == []
    finally:
        await sub_witness.close()
