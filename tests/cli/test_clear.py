"""``taskq clear [--channel=...]``: confirmation, refusal without a terminal, scope."""

from __future__ import annotations

import pytest

from taskqueue_core import TaskQueue, TaskState
from taskqueue_core.testing import run_until_idle
from tests.cli import tasks
from tests.cli.conftest import Console
from tests.cli.process import environment, run_on_terminal


def _seed(console: Console) -> dict[str, list[int]]:
    """Two pending tasks on default (one waiting), one on mail, one done."""

    async def seed(queue: TaskQueue) -> dict[str, list[int]]:
        done = await queue.enqueue(tasks.add, 0, 0)
        await run_until_idle(queue)
        parent = await queue.enqueue(tasks.add, 1, 2)
        child = await queue.enqueue(tasks.add, 3, 4, parent=parent)
        mail = await queue.enqueue(tasks.add, 5, 6, channel="mail")
        return {
            "done": [await done.get_task_id()],
            "default": [await parent.get_task_id(), await child.get_task_id()],
            "mail": [await mail.get_task_id()],
        }

    return console.seed(seed)


def _existing(console: Console, ids: list[int]) -> dict[int, TaskState]:
    async def read(queue: TaskQueue) -> dict[int, TaskState]:
        return await queue.repository.get_states(ids)

    return console.seed(read)


def test_refuses_without_a_terminal_or_yes(console: Console) -> None:
    ids = _seed(console)
    result = console("clear", interactive=False)
    assert result.code == 2
    assert result.err.strip() == (
        "error: refusing to delete 3 pending tasks without confirmation: pass --yes"
    )
    assert len(_existing(console, [i for group in ids.values() for i in group])) == 4


def test_asks_and_respects_no(console: Console) -> None:
    ids = _seed(console)
    result = console("clear", interactive=True, inputs="no\n")
    assert result.code == 1
    assert "Delete 3 pending tasks? (yes/no) [no]" in result.err
    assert "Nothing deleted." in result.out
    assert len(_existing(console, [i for group in ids.values() for i in group])) == 4


def test_asks_and_deletes_pending_only(console: Console) -> None:
    ids = _seed(console)
    result = console("clear", interactive=True, inputs="yes\n")
    assert result.code == 0, result
    assert "Deleted 3 pending tasks." in result.out
    remaining = _existing(console, [i for group in ids.values() for i in group])
    assert remaining == {ids["done"][0]: TaskState.DONE}


def test_one_channel_with_yes(console: Console) -> None:
    ids = _seed(console)
    result = console("clear --channel=mail --yes --json")
    assert result.code == 0, result
    assert result.json() == {"deleted": 1, "channel": "mail"}
    remaining = _existing(console, [i for group in ids.values() for i in group])
    assert set(remaining) == {*ids["done"], *ids["default"]}


def test_one_channel_takes_the_tasks_waiting_on_it_along(console: Console) -> None:
    async def seed(queue: TaskQueue) -> list[int]:
        mail = await queue.enqueue(tasks.add, 1, 2, channel="mail")
        report = await queue.enqueue(tasks.add, 3, 4, parent=mail)  # on default
        free = await queue.enqueue(tasks.add, 5, 6)
        return [await ref.get_task_id() for ref in (mail, report, free)]

    mail, report, free = console.seed(seed)
    result = console("clear --channel=mail", interactive=True, inputs="yes\n")
    assert result.code == 0, result
    assert (
        "Delete 1 pending task in channel 'mail', and the tasks waiting on it in other "
        "channels? (yes/no) [no]"
    ) in result.err
    assert "Deleted 2 pending tasks in channel 'mail'." in result.out
    assert _existing(console, [mail, report, free]) == {free: TaskState.ENQUEUED}


def test_nothing_pending(console: Console) -> None:
    result = console("clear", interactive=False)
    assert result.code == 0, result
    assert result.out.strip() == "No pending tasks."
    assert console("clear -c mail").out.strip() == "No pending tasks in channel 'mail'."


@pytest.mark.postgres
def test_progress_bar_and_confirmation_on_a_terminal(pg_console: Console) -> None:
    _seed(pg_console)
    env = environment(pg_console.url)
    code, output = run_on_terminal(["clear", "--yes"], env, timeout=60)
    assert code == 0, output
    assert "3/3" in output and "100%" in output
    assert "Deleted 3 pending tasks." in output
