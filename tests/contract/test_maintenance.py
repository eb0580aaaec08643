"""delete_pending and prune."""

from __future__ import annotations

from taskqueue_core.models import NewLogRecord, Outcome, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import SERVER, create, get, new, run, start, tick


async def test_delete_pending_deletes_waiting_and_enqueued(repository: TaskRepository) -> None:
    doing, done, retried = await repository.create_tasks([new("doing"), new("done"), new("r")])
    waiting = await create(repository, parent_ids=(doing,))
    await start(repository, doing, done, retried)
    await repository.complete_tasks(
        SERVER, [Outcome(done, TaskState.DONE), Outcome(retried, TaskState.ENQUEUED)]
    )
    await repository.append_logs([NewLogRecord(retried, "info", "n", "gone")])

    assert await repository.delete_pending() == 2
    assert await repository.get_states([doing, done, retried, waiting]) == {
        doing: TaskState.DOING,
        done: TaskState.DONE,
    }
    assert await repository.get_logs(retried) == []
    assert await repository.claim_tasks("s", 10) == []
    assert await repository.delete_pending() == 0


async def test_delete_pending_of_one_channel(repository: TaskRepository) -> None:
    a1, a2, b1 = await repository.create_tasks(
        [new("a1", channel="a"), new("a2", channel="a", batch_parents=(0,)), new("b1", channel="b")]
    )
    assert await repository.delete_pending("a") == 2
    assert await repository.get_states([a1, a2, b1]) == {b1: TaskState.ENQUEUED}
    assert await repository.delete_pending("missing") == 0
    assert [t.id for t in await repository.claim_tasks("s", 10)] == [b1]


async def test_delete_pending_of_one_channel_takes_the_tasks_waiting_on_them_along(
    repository: TaskRepository,
) -> None:
    """A task of another channel waiting on a deleted task could never start: it goes too,
    with what waits on it; a task with a parent that is still running stays."""
    other_root = await create(repository, name="other-root", channel="a")
    await start(repository, other_root)
    root = await create(repository, name="root", channel="a")
    child, grandchild = await repository.create_tasks(
        [
            new("child", channel="b", parent_ids=(root,)),
            new("grandchild", channel="c", batch_parents=(0,)),
        ]
    )
    fan_in = await create(repository, name="fan-in", channel="b", parent_ids=(root, other_root))
    kept = await create(repository, name="kept", channel="b", parent_ids=(other_root,))
    free = await create(repository, name="free", channel="b")

    assert await repository.delete_pending("a") == 4
    assert await repository.get_states(
        [root, other_root, child, grandchild, fan_in, kept, free]
    ) == {other_root: TaskState.DOING, kept: TaskState.WAITING, free: TaskState.ENQUEUED}
    await repository.complete_tasks(SERVER, [Outcome(other_root, TaskState.DONE)])
    assert sorted(t.id for t in await repository.claim_tasks("s", 10)) == [kept, free]


async def test_prune_deletes_tasks_that_ended_before(repository: TaskRepository) -> None:
    old_done, old_failed, old_cancelled, running = await repository.create_tasks(
        [new("done"), new("failed"), new("cancelled"), new("running")]
    )
    child = await create(repository, name="child", parent_ids=(old_done,))
    await start(repository, old_done, old_failed, old_cancelled, running)
    await repository.complete_tasks(
        SERVER,
        [
            Outcome(old_done, TaskState.DONE),
            Outcome(old_failed, TaskState.FAILED, error_name="E"),
        ],
    )
    await repository.cancel_tasks([old_cancelled])
    await repository.append_logs([NewLogRecord(old_done, "info", "n", "old")])
    limit = tick()
    tick()
    await run(repository, child)  # ends after the limit
    recent = await create(repository, name="recent")
    await run(repository, recent)

    assert await repository.prune(limit) == 3
    remaining = await repository.get_states([old_done, old_failed, old_cancelled, running])
    assert remaining == {running: TaskState.DOING}
    assert await repository.get_logs(old_done) == []
    kept = await get(repository, child)
    assert kept.state is TaskState.DONE
    assert kept.parent_task is None  # its parent is gone
    assert (await repository.get_tree(child)).edges == []
    assert (await get(repository, recent)).state is TaskState.DONE
    assert await repository.prune(limit) == 0


async def test_prune_never_deletes_unfinished_tasks(repository: TaskRepository) -> None:
    enqueued, doing = await repository.create_tasks([new("q"), new("d", channel="x")])
    waiting = await create(repository, parent_ids=(doing,))
    await repository.claim_tasks("s", 1, channels=["x"])
    assert await repository.prune(tick()) == 0
    assert len(await repository.get_states([enqueued, doing, waiting])) == 3
