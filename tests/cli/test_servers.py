"""``taskq servers``: one row per server, heartbeat age, stale detection."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from taskqueue_core import ServerInfo, TaskQueue
from tests.cli.conftest import Console
from tests.conftest import _asyncpg_url


def _server(name: str, max_workers: int = 4) -> ServerInfo:
    return ServerInfo(
        server_name=name,
        hostname="host-" + name,
        pid=4242,
        max_workers=max_workers,
        started_at=datetime.now(UTC),
        version="9.9",
    )


def test_no_servers(console: Console) -> None:
    result = console("servers")
    assert result.code == 0, result
    assert "No server is running" in result.out
    assert console("servers --json").json() == []


def test_lists_servers_with_heartbeat_age(console: Console) -> None:
    async def seed(queue: TaskQueue) -> None:
        await queue.repository.register_server(_server("alpha", 2))
        await queue.repository.register_server(_server("beta", 8))
        await queue.repository.heartbeat("beta", active_workers=5, idle_workers=3)

    console.seed(seed)
    result = console("servers --json")
    assert result.code == 0, result
    views = {view["server_name"]: view for view in result.json()}
    assert set(views) == {"alpha", "beta"}
    assert views["beta"]["active_workers"] == 5
    assert views["beta"]["idle_workers"] == 3
    assert views["beta"]["max_workers"] == 8
    assert views["alpha"]["alive"] is True
    assert 0 <= views["alpha"]["heartbeat_age"] < 30
    assert views["alpha"]["hostname"] == "host-alpha"

    table = console("servers")
    assert table.code == 0, table
    beta = next(line for line in table.out.splitlines() if "beta" in line)
    cells = [cell.strip() for cell in beta.strip("|").split("|")]
    assert cells[:6] == ["beta", "host-beta", "4242", "5", "3", "8"]
    assert cells[6].endswith("ago")
    assert cells[8] == "alive"
    assert "2 servers, 2 alive." in table.out


@pytest.mark.postgres
def test_stale_server_is_flagged(pg_console: Console) -> None:
    async def seed(queue: TaskQueue) -> None:
        await queue.repository.register_server(_server("fresh"))
        await queue.repository.register_server(_server("silent"))
        conn = await asyncpg.connect(_asyncpg_url(pg_console.url))
        try:
            await conn.execute(
                "UPDATE queued_task_workers SET last_heartbeat = now() - interval '10 minutes' "
                "WHERE server_name = 'silent'"
            )
        finally:
            await conn.close()

    pg_console.seed(seed)
    views = {view["server_name"]: view for view in pg_console("servers --json").json()}
    assert views["fresh"]["alive"] is True
    assert views["silent"]["alive"] is False
    assert views["silent"]["heartbeat_age"] >= 600
    table = pg_console("servers")
    silent = next(line for line in table.out.splitlines() if "silent" in line)
    assert "stale" in silent
    assert "10m" in silent
    status = pg_console("status --json").json()
    assert status["servers_alive"] == 1
    assert status["servers_stale"] == 1
    assert status["workers"]["total"] == 4
