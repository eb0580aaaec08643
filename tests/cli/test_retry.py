"""``taskq retry [IDS...] [--failed] [--since=...]``."""

from __future__ import annotations

import subprocess

import asyncpg
import pytest

from taskqueue_core import TaskQueue, TaskState
from taskqueue_core.testing import run_until_idle
from tests.cli import tasks
from tests.cli.conftest import SECRET, Console
from tests.cli.process import environment, run_on_terminal, taskq_command
from tests.conftest import _asyncpg_url


def _states(console: Console, ids: list[int]) -> dict[int, TaskState]:
    async def read(queue: TaskQueue) -> dict[int, TaskState]:
        return await queue.repository.get_states(ids)

    return console.seed(read)


def _failures(console: Console, count: int) -> list[int]:
    async def seed(queue: TaskQueue) -> list[int]:
        refs = [await queue.enqueue(tasks.boom, f"failure {n}") for n in range(count)]
        await run_until_idle(queue)
        return [await ref.get_task_id() for ref in refs]

    return console.seed(seed)


def test_bare_retry_puts_every_failed_task_back(console: Console) -> None:
    failed = _failures(console, 3)

    async def seed(queue: TaskQueue) -> int:
        ref = await queue.enqueue(tasks.add, 1, 2)
        await run_until_idle(queue)
        return await ref.get_task_id()

    done = console.seed(seed)
    result = console("retry")
    assert result.code == 0, result
    assert result.out.strip() == "Retried 3 tasks (3 failed tasks selected)."
    states = _states(console, [*failed, done])
    assert [states[i] for i in failed] == [TaskState.ENQUEUED] * 3
    assert states[done] == TaskState.DONE
    again = console("retry --failed --json")
    assert again.json() == {"selected": 0, "retried": []}
    assert console("retry").out.strip() == "No failed tasks."


def test_failed_parent_brings_its_children_back_to_waiting(console: Console) -> None:
    async def seed(queue: TaskQueue) -> list[int]:
        parent = await queue.enqueue(tasks.boom)
        child = await queue.enqueue(tasks.add, 1, 2, parent=parent)
        await run_until_idle(queue)
        return [await parent.get_task_id(), await child.get_task_id()]

    parent, child = console.seed(seed)
    assert _states(console, [parent, child]) == {
        parent: TaskState.FAILED,
        child: TaskState.FAILED,
    }
    result = console("retry --failed --json")
    assert result.code == 0, result
    assert result.json() == {"selected": 2, "retried": sorted([parent, child])}
    assert _states(console, [parent, child]) == {
        parent: TaskState.ENQUEUED,
        child: TaskState.WAITING,
    }


def test_since_filters_on_failure_time(console: Console) -> None:
    _failures(console, 2)
    future = console("retry --since=2999-01-01T00:00 --json")
    assert future.code == 0, future
    assert future.json() == {"selected": 0, "retried": []}
    recent = console("retry --since=1h")
    assert recent.code == 0, recent
    assert recent.out.startswith("Retried 2 tasks (2 failed tasks since ")


@pytest.mark.postgres
def test_since_leaves_older_failures_alone(pg_console: Console) -> None:
    old, recent = _failures(pg_console, 2)

    async def age(queue: TaskQueue) -> None:
        conn = await asyncpg.connect(_asyncpg_url(pg_console.url))
        try:
            await conn.execute(
                "UPDATE queued_tasks SET date_failed = now() - interval '3 hours', "
                "date_ended = now() - interval '3 hours' WHERE id = $1",
                old,
            )
        finally:
            await conn.close()

    pg_console.seed(age)
    result = pg_console("retry --since=90m --json")
    assert result.json() == {"selected": 1, "retried": [recent]}
    assert _states(pg_console, [old, recent]) == {
        old: TaskState.FAILED,
        recent: TaskState.ENQUEUED,
    }


def test_retry_ids(console: Console) -> None:
    (failed,) = _failures(console, 1)

    async def seed(queue: TaskQueue) -> list[int]:
        done = await queue.enqueue(tasks.add, 1, 2)
        await run_until_idle(queue)
        cancelled = await queue.enqueue(tasks.add, 3, 4)
        await queue.cancel([await cancelled.get_task_id()])
        return [await done.get_task_id(), await cancelled.get_task_id()]

    done, cancelled = console.seed(seed)
    result = console(f"retry {failed} {cancelled}")
    assert result.code == 0, result
    assert result.out.strip() == f"Retried 2 tasks: {failed}, {cancelled}."
    refused = console(f"retry {done} --json")
    assert refused.code == 1
    assert refused.json() == {"retried": [], "restored": [], "not_retried": {str(done): "done"}}
    text = console(f"retry {done}")
    assert text.err.strip() == (
        f"error: task {done} is done: only failed, cancelled or stopped tasks can be retried"
    )
    unknown = console(f"retry {failed} 999999")
    assert unknown.code == 1
    assert unknown.err.strip() == "error: no task has id 999999; nothing was retried"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("retry 1 --failed", "error: give task ids, or --failed/--since, not both"),
        ("retry 1 --since=1h", "error: give task ids, or --failed/--since, not both"),
        ("retry --since=yesterday", "error: --since must be a duration like 30m, 1h or 2d"),
        ("retry x", "error: a task id must be a positive whole number, got 'x'"),
    ],
)
def test_bad_arguments(memory_console: Console, args: str, message: str) -> None:
    result = memory_console(args)
    assert result.code == 2, result
    assert result.err.startswith(message)
    assert result.err.count("\n") == 1


@pytest.mark.postgres
def test_progress_bar_on_a_terminal(pg_console: Console) -> None:
    """On a terminal ``retry --failed`` draws a progress bar; through a pipe it does not."""
    _failures(pg_console, 3)
    env = environment(pg_console.url, secret_key=SECRET)
    code, output = run_on_terminal(["retry", "--failed"], env, timeout=60)
    assert code == 0, output
    assert "3/3" in output and "100%" in output
    assert "Retried 3 tasks" in output

    _failures(pg_console, 1)  # (its worker also fails the 3 retried tasks again)
    piped = subprocess.run(
        [*taskq_command(), "retry", "--failed"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "Retried 4 tasks (4 failed tasks selected)."
