"""Per-task logs: levels, names, extra fields, tracebacks, loguru, threads, 10,000 lines."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from loguru import logger as loguru_logger

from taskqueue_core import logging as task_logging
from taskqueue_core.logging import LogBuffer, TaskLogger, get_logger, getLogger, install_task_sink
from taskqueue_core.models import LogRecord, NewLogRecord
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.execution import tasks
from tests.execution.conftest import counting


async def _all_logs(queue: TaskQueue, task_id: int) -> list[LogRecord]:
    rows: list[LogRecord] = []
    after: int | None = None
    while True:
        page = await queue.get_logs(task_id, after_id=after, limit=1000)
        if not page:
            return rows
        rows.extend(page)
        after = page[-1].id


@pytest.fixture
def console_at_warning() -> Iterator[list[str]]:
    """loguru's console handler replaced, for the test, by one that prints WARNING and above
    (into the list it yields): lines below WARNING are stored without going through loguru."""
    install_task_sink()
    consoles = [
        i
        for i in loguru_logger._core.handlers  # type: ignore[attr-defined]
        if i != task_logging._sink_id
    ]
    for handler_id in consoles:
        loguru_logger.remove(handler_id)
    printed: list[str] = []
    sink = loguru_logger.add(lambda m: printed.append(m.record["message"]), level="WARNING")
    try:
        yield printed
    finally:
        loguru_logger.remove(sink)
        if consoles:
            # A console at DEBUG again; it looks sys.stderr up on every line, as pytest swaps
            # it per test.
            loguru_logger.add(lambda m: print(m, end="", file=sys.stderr), level="DEBUG")


@pytest.fixture(params=["console", "warning-console"])
def console(request: pytest.FixtureRequest) -> Iterator[list[str] | None]:
    """Each test twice: with loguru's console handler (every line goes through loguru), and
    with a console at WARNING (lines below are only stored, see ``console_at_warning``)."""
    if request.param == "console":
        yield None
    else:
        yield request.getfixturevalue("console_at_warning")


async def test_task_logs_reach_the_table_with_levels_names_extra_and_tracebacks(
    queue_all: TaskQueue, console: list[str] | None
) -> None:
    queue = queue_all
    ref = queue.add_task(tasks.log_everything, "x")
    await run_until_idle(queue)
    assert await ref.wait(5) == "x"
    # Stored before the outcome: readable as soon as wait() returns.
    rows = await _all_logs(queue, await ref.get_task_id())
    summary = [(r.type, r.name, r.message) for r in rows]
    assert summary == [
        ("debug", "tests.logging", "debug x"),
        ("info", "tests.logging", "info x"),
        ("warning", "tests.logging", "warning {braces} kept"),
        ("error", "tests.logging", "Task failed"),
        ("error", "tests.logging", "caught it"),
        ("info", "tests.execution.tasks", "straight from loguru x"),
        ("critical", "tests.logging", "critical"),
    ]
    info = {r.message: r.info for r in rows}
    assert info["debug x"] is None
    assert info["info x"] == {"user": 7, "tags": ["a", "b"]}
    assert info["Task failed"] == {"context": {"step": "validation"}}
    traceback = info["caught it"]
    assert traceback is not None
    assert "ZeroDivisionError: boom" in traceback["traceback"]
    assert "log_everything" in traceback["traceback"]
    assert info["straight from loguru x"] == {"origin": "loguru"}
    assert all(r.date_created.tzinfo is not None for r in rows)


async def test_loguru_context_fields_are_stored_and_trace_lines_are_not(
    queue: TaskQueue, console: list[str] | None
) -> None:
    ref = queue.add_task(tasks.log_with_loguru_context, "r-1")
    await run_until_idle(queue)
    assert await ref.wait(5) == "r-1"
    rows = await _all_logs(queue, await ref.get_task_id())
    assert [(r.type, r.name, r.message, r.info) for r in rows] == [
        ("info", "tests.contextualized", "with context", {"request": "r-1"}),
        ("info", "tests.execution.tasks", "loguru with context", {"request": "r-1"}),
        ("info", "tests.contextualized", "plain", None),
    ]


async def test_a_line_that_cannot_be_stored_does_not_fail_the_task(
    queue: TaskQueue, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(record: object) -> None:
        raise RuntimeError("storage refused")

    monkeypatch.setattr(task_logging, "_store", refuse)
    ref = queue.add_task(tasks.log_with_loguru_context, "r-2")
    await run_until_idle(queue)
    assert await ref.wait(5) == "r-2"
    assert "storage refused" in capsys.readouterr().err


async def test_a_message_that_cannot_be_formatted_is_stored_as_it_is_and_the_task_goes_on(
    queue_all: TaskQueue,
) -> None:
    ref = queue_all.add_task(tasks.log_badly, "x")
    await run_until_idle(queue_all)
    assert await ref.wait(5) == "x"
    rows = await _all_logs(queue_all, await ref.get_task_id())
    assert [(r.type, r.message) for r in rows] == [
        (
            "info",
            "%s and %s (the message could not be formatted with its arguments ('x'): "
            "TypeError: not enough arguments for format string)",
        ),
        (
            "warning",
            "%(missing)s (the message could not be formatted with its arguments "
            "({'present': 1}): KeyError: 'missing')",
        ),
        (
            "error",
            "%d items (the message could not be formatted with its arguments ('many'): "
            "TypeError: %d format: a real number is required, not str)",
        ),
        ("info", "<NoStr> (the message could not be made text: RuntimeError: no str)"),
        ("info", rows[4].message),
        ("info", "fine x"),
    ]
    # (The end of the message is Python's own.)
    assert rows[4].message.startswith(
        "%s (the message could not be formatted with its arguments "
        "(<int of 16610 bits, too long to write>): ValueError: "
    )


async def test_extra_values_with_no_json_and_no_repr_are_stored_as_descriptions(
    queue_all: TaskQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = queue_all.add_task(tasks.log_unwritable_extra, "x")
    await run_until_idle(queue_all)
    assert await ref.wait(5) == "x"
    rows = await _all_logs(queue_all, await ref.get_task_id())
    huge = "<int of 16610 bits, too long to write>"
    assert [(r.name, r.message, r.info) for r in rows] == [
        (
            "tests.unwritable",
            "huge x",
            {
                "n": huge,
                "kept": 1,
                "deep": {"n": [huge, 2]},
                "odd": "<_NoRepr object, whose repr() failed>",
            },
        ),
        ("tests.execution.tasks", "loguru huge x", {"n": huge}),
    ]
    assert "could not be stored" not in capsys.readouterr().err


async def test_nul_characters_a_task_produces_are_stored_as_replacement_characters(
    queue_all: TaskQueue,
) -> None:
    """No text column holds NUL: an error or a log line with one is stored with U+FFFD in its
    place, instead of a write that fails and holds back the worker's other outcomes."""
    queue = queue_all
    failing = queue.add_task(tasks.produce_nul, True, max_retries=0)
    passing = queue.add_task(tasks.produce_nul, False)
    after = queue.add_task(tasks.noop)
    await run_until_idle(queue, timeout=30)
    task = await queue.get_task(await failing.get_task_id())
    assert task.state == "failed"
    assert task.exception_message == "bad\ufffdbyte"
    assert task.exception_info is not None and "bad\ufffdbyte" in task.exception_info
    assert await passing.wait(5) == "ok"
    await after.wait(5)
    for ref in (failing, passing):
        [row] = await _all_logs(queue, await ref.get_task_id())
        assert (row.name, row.message, row.info) == (
            "nul\ufffdname",
            "line\ufffdone",
            {"k\ufffd": ["v\ufffd"]},
        )


async def test_logs_from_a_thread_task_are_stored(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.sync_log, "t")
    await run_until_idle(queue)
    await ref.wait(5)
    rows = await _all_logs(queue, await ref.get_task_id())
    assert [(r.type, r.name, r.message) for r in rows] == [
        ("info", "tests.thread", "from a thread: t"),
        ("warning", "tests.execution.tasks", "loguru from a thread"),
    ]


async def test_ten_thousand_lines_are_all_stored_in_batches(queue: TaskQueue) -> None:
    ref = queue.add_task(tasks.log_many, 10_000)
    await run_until_idle(queue, timeout=120)
    assert await ref.wait(5) == 10_000
    rows = await _all_logs(queue, await ref.get_task_id())
    assert [r.message for r in rows] == [f"line {i}" for i in range(10_000)]
    repo = counting(queue)
    assert sum(repo.sizes["append_logs"]) == 10_000
    assert repo.calls["append_logs"] <= 15


async def test_logging_outside_a_task_goes_to_the_console_only(queue: TaskQueue) -> None:
    lines: list[str] = []
    sink = loguru_logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    try:
        getLogger("outside").info("not in a task %d", 1)
        ref = queue.add_task(tasks.noop)
        await run_until_idle(queue)
        await ref.wait(5)
    finally:
        loguru_logger.remove(sink)
    assert "not in a task 1" in lines
    assert await _all_logs(queue, await ref.get_task_id()) == []
    assert counting(queue).calls["append_logs"] == 0


def test_the_logger_api_is_the_standard_librarys() -> None:
    lines: list[tuple[str, str, dict[str, object]]] = []
    sink = loguru_logger.add(
        lambda m: lines.append((m.record["level"].name, m.record["message"], m.record["extra"])),
        level="DEBUG",
    )
    try:
        log = getLogger("api")
        assert getLogger("api") is log and get_logger("api") is log
        assert isinstance(log, TaskLogger) and log.name == "api"
        log.info("%(who)s says %(what)s", {"who": "a", "what": "hi"})
        log.log(30, "level %s", "by number")
        log.warning("extra", extra={"k": 1})
        try:
            raise KeyError("k")
        except KeyError as exc:
            log.error("with exc_info", exc_info=exc)
    finally:
        loguru_logger.remove(sink)
    assert [(level, message) for level, message, _ in lines] == [
        ("INFO", "a says hi"),
        ("WARNING", "level by number"),
        ("WARNING", "extra"),
        ("ERROR", "with exc_info"),
    ]
    assert lines[2][2]["k"] == 1


def _log_from_here(log: TaskLogger, stacklevel: int) -> None:
    log.info("who called", stacklevel=stacklevel)


def test_stacklevel_and_stack_info_name_the_frames_as_the_standard_library_does() -> None:
    records: list[dict[str, object]] = []
    sink = loguru_logger.add(lambda m: records.append(m.record), level="DEBUG")
    try:
        log = getLogger("stack")
        _log_from_here(log, 1)
        _log_from_here(log, 2)  # the caller of _log_from_here: this test
        log.info("with its stack", stack_info=True)
        # Deeper than the stack: the outermost frame, not an error.
        log.info("deeper than the stack", stack_info=True, stacklevel=10_000)
    finally:
        loguru_logger.remove(sink)
    assert [r["function"] for r in records[:2]] == [
        "_log_from_here",
        "test_stacklevel_and_stack_info_name_the_frames_as_the_standard_library_does",
    ]
    with_stack = str(records[2]["message"])
    assert with_stack.startswith("with its stack\nStack (most recent call last):\n")
    assert "test_stacklevel_and_stack_info_name_the_frames" in with_stack
    deepest = str(records[3]["message"])
    assert deepest.startswith("deeper than the stack\nStack (most recent call last):\n")
    assert "test_stacklevel_and_stack_info" not in deepest


async def test_lines_no_handler_prints_are_stored_alike_and_the_rest_still_printed(
    queue: TaskQueue, console_at_warning: list[str]
) -> None:
    ref = queue.add_task(tasks.log_plain, "p")
    await run_until_idle(queue)
    assert await ref.wait(5) == "p"
    rows = await _all_logs(queue, await ref.get_task_id())
    assert [(r.type, r.name, r.message, r.info) for r in rows] == [
        ("debug", "tests.plain", "debug p", None),
        ("info", "tests.plain", "info p", None),
        ("warning", "tests.plain", "warning p", None),
        ("info", "tests.plain", "success p", None),
        ("critical", "tests.plain", "critical p", None),
    ]
    assert all(r.date_created.tzinfo is not None for r in rows)
    dates = [r.date_created for r in rows]
    assert dates == sorted(dates)
    # The console still prints what its level takes, and only that.
    assert console_at_warning == ["warning p", "critical p"]


async def test_fields_loguru_adds_to_every_record_keep_lines_going_through_loguru(
    queue: TaskQueue, console_at_warning: list[str]
) -> None:
    loguru_logger.configure(extra={"service": "billing"})
    try:
        ref = queue.add_task(tasks.log_plain, "q")
        await run_until_idle(queue)
        assert await ref.wait(5) == "q"
    finally:
        loguru_logger.configure(extra={})
    rows = await _all_logs(queue, await ref.get_task_id())
    assert {r.message: r.info for r in rows}["info q"] == {"service": "billing"}


def test_a_line_is_stored_directly_while_nothing_global_would_change_its_record(
    console_at_warning: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    route = task_logging._route
    assert route(20) == task_logging._STORED
    assert route(30) == task_logging._STORED_AND_PRINTED
    sink = loguru_logger.add(lambda m: None, level="DEBUG")
    try:
        assert route(20) == task_logging._STORED_AND_PRINTED  # a handler added is seen at once
    finally:
        loguru_logger.remove(sink)
    assert route(20) == task_logging._STORED
    with loguru_logger.contextualize(request="r"):
        assert route(20) == task_logging._THROUGH_LOGURU
        assert route(30) == task_logging._THROUGH_LOGURU
    # What ``logger.configure(patcher=...)`` and ``logger.disable("somewhere")`` leave in
    # loguru's core; neither has an undo, so the test sets and restores them itself.
    core = loguru_logger._core  # type: ignore[attr-defined]
    with monkeypatch.context() as patched:
        patched.setattr(core, "patcher", lambda record: None)
        assert route(30) == task_logging._THROUGH_LOGURU
    with monkeypatch.context() as patched:
        patched.setattr(core, "activation_list", [("somewhere.", False)])
        assert route(30) == task_logging._THROUGH_LOGURU
    assert route(30) == task_logging._STORED_AND_PRINTED
    # A loguru without what is read here: every line goes through loguru.
    monkeypatch.setattr(task_logging, "_loguru_context", None)
    assert route(30) == task_logging._THROUGH_LOGURU


async def test_a_line_stored_directly_and_printed_is_stored_once_and_printed_at_its_caller(
    queue: TaskQueue,
) -> None:
    printed: list[tuple[str, str, str, int]] = []
    console = loguru_logger.add(
        lambda m: printed.append(
            (m.record["level"].name, m.record["message"], m.record["function"], m.record["line"])
        ),
        level="INFO",
    )
    try:
        ref = queue.add_task(tasks.log_plain, "s")
        await run_until_idle(queue)
        assert await ref.wait(5) == "s"
    finally:
        loguru_logger.remove(console)
    rows = await _all_logs(queue, await ref.get_task_id())
    assert [(r.type, r.message) for r in rows] == [
        ("debug", "debug s"),
        ("info", "info s"),
        ("warning", "warning s"),
        ("info", "success s"),
        ("critical", "critical s"),
    ]
    assert [p[:3] for p in printed] == [
        ("INFO", "info s", "log_plain"),
        ("WARNING", "warning s", "log_plain"),
        ("SUCCESS", "success s", "log_plain"),
        ("CRITICAL", "critical s", "log_plain"),
    ]
    lines = [p[3] for p in printed]
    assert lines == sorted(lines) and len(set(lines)) == 4


def test_install_task_sink_is_idempotent() -> None:
    before = len(loguru_logger._core.handlers)  # type: ignore[attr-defined]
    install_task_sink()
    install_task_sink()
    assert len(loguru_logger._core.handlers) == before  # type: ignore[attr-defined]


def test_a_full_buffer_drops_and_reports_instead_of_blocking() -> None:
    woken: list[int] = []
    buffer = LogBuffer(limit=5, batch_size=2, on_batch=lambda: woken.append(len(buffer)))
    for i in range(8):
        buffer.add(NewLogRecord(task_id=1, type="info", name="n", message=str(i)))
    assert woken == [2, 4]
    drained = buffer.drain(100)
    assert [r.message for r in drained[:5]] == ["0", "1", "2", "3", "4"]
    assert drained[5].type == "warning" and drained[5].info == {"dropped": 3}
    assert "3 log lines" in drained[5].message
    assert buffer.drain(100) == []
    with pytest.raises(ValueError):
        LogBuffer(limit=0)


def test_a_stored_line_is_a_plain_new_log_record() -> None:
    """Lines are built through ``NewLogRecord``'s twin; the result is the same value as its
    constructor's, equal, hashable and frozen."""
    from datetime import UTC, datetime

    assert task_logging._log_record.__qualname__ == "build_NewLogRecord"  # the twin applies
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    values = (7, "info", "app.step", "hello", {"k": 1}, when)
    built = task_logging._log_record(*values)
    assert type(built) is NewLogRecord
    assert built == NewLogRecord(*values)
    assert repr(built) == repr(NewLogRecord(*values))
    assert hash(task_logging._log_record(7, "info", "n", "m", None, when)) == hash(
        NewLogRecord(7, "info", "n", "m", None, when)
    )
    with pytest.raises(AttributeError):
        built.message = "changed"  # type: ignore[misc]


def test_extra_values_that_hold_themselves_or_are_shared_are_described_in_bounded_time() -> None:
    """A value that holds itself, or one shared along many paths, with something inside
    that has no repr: each container is opened once per path at most, and only so many."""
    huge = 10**5000
    wide: list[object] = []
    wide.extend([wide] * 3)  # every path through it is a cycle, three ways at each level
    holder: list[object] = [huge]
    holder.append(holder)
    shared: list[object] = [huge]
    for _ in range(40):  # 2**40 paths to the same int
        shared = [shared, shared]
    assert task_logging._jsonable({"wide": wide, "holder": holder, "k": 1}) == {
        "wide": ["[[...], [...], [...]]"] * 3,
        "holder": ["<int of 16610 bits, too long to write>", "<list object, whose repr() failed>"],
        "k": 1,
    }
    stored = task_logging._jsonable({"shared": shared})
    text = repr(stored)
    assert text.count("<int of 16610 bits") <= task_logging._WALK_MAX + 1
    assert text.startswith("{'shared': [[[[")
