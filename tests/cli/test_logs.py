"""``taskq logs ID [--follow]``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from cleo.io.inputs.string_input import StringInput
from cleo.io.outputs.stream_output import StreamOutput

import taskqueue_core.cli.logs as logs_module
from taskqueue_core import NewLogRecord, Outcome, TaskQueue, TaskState
from taskqueue_core.testing import run_until_idle
from tests.cli import tasks
from tests.cli.conftest import Console


def _chatty(console: Console, lines: int) -> int:
    async def seed(queue: TaskQueue) -> int:
        ref = await queue.enqueue(tasks.chatty, lines)
        await run_until_idle(queue)
        return await ref.get_task_id()

    return console.seed(seed)


def test_prints_lines_oldest_first_with_tracebacks(console: Console) -> None:
    task_id = _chatty(console, 3)
    result = console(f"logs {task_id}")
    assert result.code == 0, result
    lines = result.out.splitlines()
    messages = [line for line in lines if " tests.cli: " in line]
    assert [m.split("tests.cli: ", 1)[1] for m in messages] == [
        "line 0 <not a tag>",
        "line 1 <not a tag>",
        "line 2 <not a tag>",
        "caught it",
    ]
    assert "INFO" in messages[0] and "ERROR" in messages[3]
    trace = "\n".join(lines[lines.index(messages[3]) + 1 :])
    assert "Traceback" in trace and "KeyError: 'missing'" in trace


def test_json_lines(console: Console) -> None:
    task_id = _chatty(console, 2)
    result = console(f"logs {task_id} --json")
    assert result.code == 0, result
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["message"] for r in records] == [
        "line 0 <not a tag>",
        "line 1 <not a tag>",
        "caught it",
    ]
    assert [r["type"] for r in records] == ["info", "info", "error"]
    assert all(r["task_id"] == task_id for r in records)
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    assert "KeyError" in records[2]["info"]["traceback"]


def test_reads_every_page(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = _chatty(console, 7)
    monkeypatch.setattr(logs_module, "PAGE", 2)
    result = console(f"logs {task_id} --json")
    assert [json.loads(line)["message"] for line in result.out.splitlines()] == [
        *(f"line {n} <not a tag>" for n in range(7)),
        "caught it",
    ]


def test_unknown_task(console: Console) -> None:
    result = console("logs 424242")
    assert result.code == 1
    assert result.err.strip() == "error: no task has id 424242"


def test_bad_interval(memory_console: Console) -> None:
    result = memory_console("logs 1 --follow --interval=abc")
    assert result.code == 2
    assert "--interval must be a number of seconds" in result.err


def test_follow_ends_at_once_on_an_ended_task(console: Console) -> None:
    task_id = _chatty(console, 1)
    started = time.monotonic()
    result = console(f"logs {task_id} --follow --interval=0.05")
    assert result.code == 0, result
    assert result.out.count(" tests.cli: ") == 2
    assert time.monotonic() - started < 5


def test_follow_prints_new_lines_until_the_task_ends(console: Console, tmp_path: Path) -> None:
    """A task runs (claimed by a stand-in server); lines are appended while ``logs --follow``
    reads; it prints each line once, then exits 0 when the task is done."""
    server = "follow-test"

    async def create(queue: TaskQueue) -> int:
        ref = await queue.enqueue(tasks.add, 1, 2)
        task_id = await ref.get_task_id()
        claimed = await queue.repository.claim_tasks(server, 10)
        assert [t.id for t in claimed] == [task_id]
        await queue.repository.append_logs(
            [NewLogRecord(task_id=task_id, type="info", name="run", message="first")]
        )
        return task_id

    task_id = console.seed(create)
    out_path = tmp_path / "out.txt"
    outcome: list[int] = []
    with out_path.open("w") as out, (tmp_path / "err.txt").open("w") as err:
        application = console.application()
        application.auto_exits(False)
        runner = threading.Thread(
            target=lambda: outcome.append(
                application.run(
                    StringInput(
                        f"logs {task_id} --follow --interval=0.05 --database-url {console.url}"
                    ),
                    StreamOutput(out),
                    StreamOutput(err),
                )
            ),
            name="logs-follow",
        )
        runner.start()
        try:
            deadline = time.monotonic() + 10
            while "first" not in out_path.read_text():
                assert time.monotonic() < deadline, "the first line never appeared"
                time.sleep(0.02)

            async def finish(queue: TaskQueue) -> None:
                await queue.repository.append_logs(
                    [NewLogRecord(task_id=task_id, type="warning", name="run", message="second")]
                )
                done = await queue.repository.complete_tasks(
                    server, [Outcome(task_id=task_id, state=TaskState.DONE, result=3)]
                )
                assert done == [task_id]

            console.seed(finish)
        finally:
            runner.join(timeout=15)
    assert not runner.is_alive(), "logs --follow did not end after the task ended"
    assert outcome == [0]
    output = out_path.read_text()
    assert output.count("first") == 1
    assert output.count("second") == 1
    assert "WARNING" in output
