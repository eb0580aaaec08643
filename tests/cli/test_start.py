"""``taskq start`` end to end on PostgreSQL: the installed script, status, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from taskqueue_core import ServerInfo, TaskQueue, TaskState
from tests.cli import tasks
from tests.cli.conftest import Console
from tests.cli.process import ROOT, environment, taskq, taskq_command, wait_until

pytestmark = pytest.mark.postgres


def _servers(console: Console) -> list[ServerInfo]:
    async def read(queue: TaskQueue) -> list[ServerInfo]:
        return await queue.servers()

    return console.seed(read)


def _states(console: Console, ids: list[int]) -> dict[int, TaskState]:
    async def read(queue: TaskQueue) -> dict[int, TaskState]:
        return await queue.repository.get_states(ids)

    return console.seed(read)


def _enqueue(console: Console, func: object, *args: object, count: int = 1) -> list[int]:
    async def create(queue: TaskQueue) -> list[int]:
        refs = [await queue.enqueue(func, *args) for _ in range(count)]  # type: ignore[arg-type]
        return [await ref.get_task_id() for ref in refs]

    return console.seed(create)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*taskq_command(), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_start_runs_tasks_reports_and_finishes_them_on_sigterm(
    pg_console: Console, tmp_path: Path
) -> None:
    env = environment(pg_console.url, server_name="cli-e2e", shutdown_grace="30")
    with taskq(
        ["start", "--workers=2", "--import", "tests.cli.tasks"], env, tmp_path / "start"
    ) as worker:
        wait_until(lambda: _servers(pg_console), timeout=30, what="the server row", running=worker)
        summary = worker.out
        assert "taskq starting workers" in summary
        assert "server     cli-e2e" in summary
        assert "workers    2 per process" in summary
        assert "notify     on (LISTEN queue_new_task" in summary
        assert "imports    tests.cli.tasks" in summary

        async def add(queue: TaskQueue) -> object:
            ref = await queue.enqueue(tasks.add, 2, 3)
            return await ref.wait(timeout=30)

        assert pg_console.seed(add) == 5

        status = _run(["status", "--json"], env)
        assert status.returncode == 0, status.stderr
        view = json.loads(status.stdout)
        assert view["servers_alive"] == 1
        assert view["workers"]["total"] == 2
        servers = json.loads(_run(["servers", "--json"], env).stdout)
        assert [s["server_name"] for s in servers] == ["cli-e2e"]

        # Two tasks running when SIGTERM arrives: with a 30 s grace they finish.
        held = _enqueue(pg_console, tasks.hold, 1.0, count=2)
        wait_until(
            lambda: set(_states(pg_console, held).values()) == {TaskState.DOING},
            timeout=30,
            what="both tasks to run",
            running=worker,
        )
        assert worker.terminate(timeout=30) == 0, worker.err
    assert _states(pg_console, held) == {task_id: TaskState.DONE for task_id in held}
    assert _servers(pg_console) == []
    assert worker.out.rstrip().endswith("taskq stopped")
    assert "Traceback" not in worker.err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_hands_unfinished_tasks_back(
    pg_console: Console, tmp_path: Path, sig: signal.Signals
) -> None:
    env = environment(pg_console.url, shutdown_grace="0.2")
    with taskq(
        ["start", "--workers=3", "-i", "tests.cli.tasks"], env, tmp_path / "start"
    ) as worker:
        wait_until(lambda: _servers(pg_console), timeout=30, what="the server row", running=worker)
        held = _enqueue(pg_console, tasks.hold, 120.0, count=3)
        wait_until(
            lambda: set(_states(pg_console, held).values()) == {TaskState.DOING},
            timeout=30,
            what="the tasks to run",
            running=worker,
        )
        assert worker.terminate(timeout=20, sig=sig) == 0, worker.err

    async def read(queue: TaskQueue) -> list[tuple[TaskState, int, str | None]]:
        found = await queue.repository.get_tasks(held)
        return [(t.state, t.retry_count, t.claimed_by) for t in found]

    # Back in the queue, without an attempt counted, claimed by nobody.
    assert pg_console.seed(read) == [(TaskState.ENQUEUED, 0, None)] * 3
    assert _servers(pg_console) == []


def test_processes_each_register_and_unregister(pg_console: Console, tmp_path: Path) -> None:
    env = environment(pg_console.url, shutdown_grace="5")
    with taskq(
        ["start", "--workers=1", "--processes=2", "--import=tests.cli.tasks"],
        env,
        tmp_path / "start",
    ) as worker:
        servers = wait_until(
            lambda: len(_servers(pg_console)) == 2 and _servers(pg_console),
            timeout=60,
            what="two server rows",
            running=worker,
        )
        assert all(s.max_workers == 1 for s in servers)
        assert "processes  2" in worker.out

        async def add(queue: TaskQueue) -> list[object]:
            refs = [await queue.enqueue(tasks.add, n, n) for n in range(4)]
            return [await ref.wait(timeout=30) for ref in refs]

        assert pg_console.seed(add) == [0, 2, 4, 6]
        assert worker.terminate(timeout=30) == 0, worker.err
    assert _servers(pg_console) == []


def test_start_refuses_bad_options(memory_console: Console) -> None:
    for args, message in [
        ("start --workers=abc", "error: --workers must be a whole number of at least 1, got 'abc'"),
        ("start --workers=0", "error: --workers must be a whole number of at least 1, got '0'"),
        ("start --processes=-1", "error: --processes must be a whole number from 1 to 256"),
        ("start --channel=", "error: --channel must name a channel"),
    ]:
        result = memory_console(args)
        assert result.code == 2, (args, result)
        assert result.err.startswith(message), (args, result)
        assert result.err.count("\n") == 1


def test_start_reports_a_module_that_does_not_import(pg_console: Console) -> None:
    result = pg_console("start --import tests.cli.no_such_tasks")
    assert result.code == 1
    assert result.err.startswith(
        "error: cannot import 'tests.cli.no_such_tasks' (--import): ModuleNotFoundError"
    )
    assert _servers(pg_console) == []


def test_queue_imports_setting_is_imported(pg_console: Console) -> None:
    env = environment(pg_console.url, imports="tests.cli.no_such_tasks")
    result = _run(["start"], env)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot import 'tests.cli.no_such_tasks' (QUEUE_IMPORTS)"
    )
