"""get_states, update_contexts, append_logs and get_logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from taskqueue_core.models import NewLogRecord, TaskState
from taskqueue_core.repository import TaskRepository
from tests.contract.helpers import assert_recent, create, get, new, run, utcnow


async def test_get_states_leaves_missing_ids_out(repository: TaskRepository) -> None:
    a, b = await repository.create_tasks([new("a"), new("b", batch_parents=(0,))])
    assert await repository.get_states([b, 999999, a]) == {
        a: TaskState.ENQUEUED,
        b: TaskState.WAITING,
    }
    assert await repository.get_states([]) == {}


async def test_update_contexts_replaces_whole_contexts(repository: TaskRepository) -> None:
    a, b, untouched = await repository.create_tasks(
        [new("a", context={"old": 1}), new("b"), new("c", context={"same": True})]
    )
    await repository.update_contexts({a: {"new": {"deep": [1, 2]}}, b: {"x": None}, 999999: {}})
    tasks = await repository.get_tasks([a, b, untouched])
    assert [t.context for t in tasks] == [{"new": {"deep": [1, 2]}}, {"x": None}, {"same": True}]


async def test_update_contexts_applies_in_any_state(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await run(repository, task_id)
    await repository.update_contexts({task_id: {"after": "done"}})
    assert (await get(repository, task_id)).context == {"after": "done"}
    await repository.update_contexts({})


async def test_logs_are_stored_and_read_oldest_first(repository: TaskRepository) -> None:
    task_id = await create(repository)
    other = await create(repository)
    stamp = (utcnow() - timedelta(minutes=3)).replace(microsecond=250000)
    await repository.append_logs(
        [
            NewLogRecord(task_id, "info", "app.step", "first"),
            NewLogRecord(other, "info", "app.step", "elsewhere"),
            NewLogRecord(
                task_id,
                "error",
                "app.fail",
                "second",
                info={"exc": "Traceback...", "n": 2},
                date_created=stamp,
            ),
        ]
    )
    await repository.append_logs([NewLogRecord(task_id, "debug", "app", "third")])
    logs = await repository.get_logs(task_id)
    assert [log.message for log in logs] == ["first", "second", "third"]
    assert [log.id for log in logs] == sorted(log.id for log in logs)
    assert len({log.id for log in logs}) == 3
    first, second, third = logs
    assert (first.task_id, first.type, first.name, first.info) == (
        task_id,
        "info",
        "app.step",
        None,
    )
    assert_recent(first.date_created)
    assert (second.type, second.name, second.info) == (
        "error",
        "app.fail",
        {"exc": "Traceback...", "n": 2},
    )
    assert second.date_created == stamp
    assert third.type == "debug"
    assert [log.message for log in await repository.get_logs(other)] == ["elsewhere"]


async def test_logs_page_with_after_id_and_limit(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await repository.append_logs(
        [NewLogRecord(task_id, "info", "n", f"line {i}") for i in range(7)]
    )
    pages = []
    after: int | None = None
    while True:
        page = await repository.get_logs(task_id, after_id=after, limit=3)
        if not page:
            break
        assert len(page) <= 3
        pages.append([log.message for log in page])
        after = page[-1].id
    assert pages == [
        ["line 0", "line 1", "line 2"],
        ["line 3", "line 4", "line 5"],
        ["line 6"],
    ]
    every = await repository.get_logs(task_id)
    assert await repository.get_logs(task_id, after_id=every[-1].id) == []
    assert await repository.get_logs(task_id, after_id=0) == every


async def test_log_order_follows_insertion_not_given_dates(repository: TaskRepository) -> None:
    # Decision: "oldest first" is insertion (id) order, so that after_id paging is exact
    # even when writers pass their own date_created.
    task_id = await create(repository)
    now = utcnow()
    await repository.append_logs(
        [
            NewLogRecord(task_id, "info", "n", "written first", date_created=now),
            NewLogRecord(
                task_id, "info", "n", "written second", date_created=now - timedelta(hours=1)
            ),
        ]
    )
    logs = await repository.get_logs(task_id)
    assert [log.message for log in logs] == ["written first", "written second"]


async def test_a_log_date_in_any_zone_is_stored_as_that_instant(
    repository: TaskRepository,
) -> None:
    # The worker passes loguru's record time as it is: aware, in the local zone.
    task_id = await create(repository)
    local = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=5), "X"))
    await repository.append_logs([NewLogRecord(task_id, "info", "n", "m", date_created=local)])
    [log] = await repository.get_logs(task_id)
    assert log.date_created == local
    assert log.date_created.utcoffset() == timedelta(0)
    assert log.date_created == datetime(2026, 3, 1, 9, 30, 5, 123456, tzinfo=UTC)
    # Far from today, to the microsecond; a naive date is taken as UTC.
    far = [
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 30, 5, 654321),
    ]
    await repository.append_logs(
        [NewLogRecord(task_id, "info", "n", "m", date_created=d) for d in far]
    )
    stored = [log.date_created for log in (await repository.get_logs(task_id))[1:]]
    assert stored == [*far[:3], far[3].replace(tzinfo=UTC)]


async def test_logs_of_missing_tasks_are_dropped(repository: TaskRepository) -> None:
    task_id = await create(repository)
    await repository.append_logs(
        [
            NewLogRecord(999999, "info", "n", "lost"),
            NewLogRecord(task_id, "info", "n", "kept"),
        ]
    )
    assert [log.message for log in await repository.get_logs(task_id)] == ["kept"]
    assert await repository.get_logs(999999) == []
    await repository.append_logs([])


async def test_log_lines_are_kept_even_when_odd(repository: TaskRepository) -> None:
    # Decision (the database columns): type and name are cut to 16 and 255 characters and
    # NUL is replaced by U+FFFD, rather than losing the line.
    task_id = await create(repository)
    await repository.append_logs(
        [NewLogRecord(task_id, "t" * 20, "n" * 300 + "\x00", "before\x00after")]
    )
    (log,) = await repository.get_logs(task_id)
    assert log.type == "t" * 16
    assert log.name == "n" * 255
    assert log.message == "before\ufffdafter"
