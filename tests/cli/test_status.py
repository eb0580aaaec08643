"""``taskq status``: pending tasks, servers alive, workers."""

from __future__ import annotations

from datetime import UTC, datetime

from taskqueue_core import ServerInfo, TaskQueue
from tests.cli import tasks
from tests.cli.conftest import Console


def test_empty_queue(console: Console) -> None:
    result = console("status --json")
    assert result.code == 0, result
    view = result.json()
    assert view["pending"] == 0
    assert view["servers_alive"] == 0
    assert view["workers"] == {"total": 0, "active": 0, "idle": 0}
    assert result.err == ""


def test_counts_pending_tasks_and_workers(console: Console) -> None:
    async def seed(queue: TaskQueue) -> None:
        parent = await queue.enqueue(tasks.add, 1, 2)
        await queue.enqueue(tasks.add, 3, 4, parent=parent)  # waits for its parent
        await queue.enqueue(tasks.add, 5, 6, channel="mail")
        await queue.repository.register_server(
            ServerInfo(
                server_name="web-1",
                hostname="web",
                pid=1,
                max_workers=4,
                started_at=datetime.now(UTC),
            )
        )
        assert await queue.repository.heartbeat("web-1", active_workers=1, idle_workers=3)

    console.seed(seed)
    result = console("status --json")
    assert result.code == 0, result
    view = result.json()
    assert (view["pending"], view["enqueued"], view["waiting"], view["doing"]) == (3, 2, 1, 0)
    assert view["servers_alive"] == 1
    assert view["workers"] == {"total": 4, "active": 1, "idle": 3}

    table = console("status")
    assert table.code == 0, table
    lines = {line.strip("| ").split("|")[0].strip(): line for line in table.out.splitlines()}
    assert lines["Pending tasks"].rstrip(" |").endswith("3")
    assert lines["Servers alive"].rstrip(" |").endswith("1")
    assert table.err == ""


def test_warns_when_tasks_pend_and_no_server_runs(console: Console) -> None:
    console.seed(lambda queue: queue.enqueue(tasks.add, 1, 2))
    result = console("status")
    assert result.code == 0, result
    assert "warning: 1 task is pending and no server is alive" in result.err
