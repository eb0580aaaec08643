"""``taskq stats``: counts per state and channel."""

from __future__ import annotations

from taskqueue_core import TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.cli import tasks
from tests.cli.conftest import Console


def test_counts_per_state_and_channel(console: Console) -> None:
    async def seed(queue: TaskQueue) -> None:
        await queue.enqueue(tasks.add, 1, 2)
        await queue.enqueue(tasks.boom, channel="mail")
        await run_until_idle(queue)
        await queue.enqueue(tasks.add, 3, 4, channel="mail")
        await queue.enqueue(tasks.add, 5, 6, channel="mail")
        doomed = await queue.enqueue(tasks.add, 7, 8, channel="reports")
        await queue.cancel([await doomed.get_task_id()])

    console.seed(seed)
    result = console("stats --json")
    assert result.code == 0, result
    view = result.json()
    assert view["by_state"] == {
        "waiting": 0,
        "enqueued": 2,
        "doing": 0,
        "done": 1,
        "failed": 1,
        "cancelled": 1,
        "stopped": 0,
    }
    assert view["total"] == 5
    assert view["by_channel"]["default"]["done"] == 1
    assert view["by_channel"]["mail"]["failed"] == 1
    assert view["by_channel"]["mail"]["enqueued"] == 2
    assert view["by_channel"]["reports"]["cancelled"] == 1
    assert view["done_last_minute"] == 1
    assert view["failed_last_minute"] == 1

    table = console("stats")
    assert table.code == 0, table
    rows = {
        cells[0]: cells[1:]
        for line in table.out.splitlines()
        if line.startswith("|")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert rows["channel"] == [
        "waiting",
        "enqueued",
        "doing",
        "done",
        "failed",
        "cancelled",
        "stopped",
        "total",
    ]
    assert rows["mail"] == ["0", "2", "0", "0", "1", "0", "0", "3"]
    assert rows["(all)"] == ["0", "2", "0", "1", "1", "1", "0", "5"]
    assert "Last minute: 1 done, 1 failed." in table.out


def test_empty_database(console: Console) -> None:
    result = console("stats --json")
    assert result.code == 0, result
    assert result.json()["total"] == 0
    assert result.json()["by_channel"] == {}
