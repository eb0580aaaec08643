"""``taskq status``: is the queue moving? Pending tasks, servers alive, workers busy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from taskqueue_core.cli.base import EXIT_OK, JSON_OPTION, QueueCommand
from taskqueue_core.cli.output import plural, safe_url, server_to_dict
from taskqueue_core.models import ServerInfo, Stats, TaskState

__all__ = ["StatusCommand", "status_view"]


def status_view(
    stats: Stats,
    servers: list[ServerInfo],
    database_url: str,
    *,
    stale_after: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The status figures as JSON values (also the rows of the table).

    Servers count as alive when running with a heartbeat newer than ``stale_after`` seconds;
    the worker figures add up the alive servers only (a stale row is a dead process).
    """
    now = now or datetime.now(UTC)
    views = [server_to_dict(s, now=now, stale_after=stale_after) for s in servers]
    alive = [view for view in views if view["alive"]]
    by_state = stats.by_state
    enqueued = by_state.get(TaskState.ENQUEUED.value, 0)
    waiting = by_state.get(TaskState.WAITING.value, 0)
    return {
        "database": safe_url(database_url),
        "pending": enqueued + waiting,
        "enqueued": enqueued,
        "waiting": waiting,
        "doing": by_state.get(TaskState.DOING.value, 0),
        "done_last_minute": stats.done_last_minute,
        "failed_last_minute": stats.failed_last_minute,
        "servers_alive": len(alive),
        "servers_stale": sum(1 for view in views if view["is_running"] and not view["alive"]),
        "workers": {
            "total": sum(view["max_workers"] for view in alive),
            "active": sum(view["active_workers"] for view in alive),
            "idle": sum(view["idle_workers"] for view in alive),
        },
    }


class StatusCommand(QueueCommand):
    name = "status"
    description = "Show pending tasks, servers alive and busy workers."
    options = [JSON_OPTION]
    help = (
        "Shows how many tasks wait to run, how many run now, the tasks done and failed in "
        "the last minute, and the servers and worker slots that are alive.\n\n"
        "Pending tasks with no server alive means nothing will run them: start workers with "
        "<info>taskq start</info>."
    )

    async def perform(self) -> int:
        async with self.open_queue() as queue:
            stats = await queue.stats()
            servers = await queue.servers()
        view = status_view(
            stats, servers, self.config.database_url, stale_after=self.config.stale_after
        )
        if self.wants_json:
            self.write_json(view)
            return EXIT_OK
        workers = view["workers"]
        self.text(f"Queue status ({view['database']})")
        self.render_rows(
            [
                ["Pending tasks", str(view["pending"])],
                ["  enqueued", str(view["enqueued"])],
                ["  waiting for parents", str(view["waiting"])],
                ["Running tasks", str(view["doing"])],
                ["Done (last minute)", str(view["done_last_minute"])],
                ["Failed (last minute)", str(view["failed_last_minute"])],
                ["Servers alive", str(view["servers_alive"])],
                *(
                    [["  stale (presumed dead)", str(view["servers_stale"])]]
                    if view["servers_stale"]
                    else []
                ),
                ["Workers total", str(workers["total"])],
                ["  active", str(workers["active"])],
                ["  idle", str(workers["idle"])],
            ],
            numeric=[1],
        )
        if view["pending"] and not view["servers_alive"]:
            self.warning_line(
                f"{plural(view['pending'], 'task')} "
                f"{'is' if view['pending'] == 1 else 'are'} pending and no server is alive: "
                "start workers with `taskq start`"
            )
        return EXIT_OK
