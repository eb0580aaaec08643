"""``taskq servers``: every registered worker process and how fresh its heartbeat is."""

from __future__ import annotations

from datetime import UTC, datetime

from taskqueue_core.cli.base import EXIT_OK, JSON_OPTION, QueueCommand
from taskqueue_core.cli.output import format_age, format_duration, plural, server_to_dict

__all__ = ["ServersCommand"]


class ServersCommand(QueueCommand):
    name = "servers"
    description = "List the servers (worker processes) and their heartbeats."
    options = [JSON_OPTION]
    help = (
        "One row per running worker process, from <comment>queued_task_workers</comment>: its "
        "worker slots (active, idle, maximum), how long ago it last sent a heartbeat, and "
        "its uptime. A server whose heartbeat is older than QUEUE_STALE_AFTER is shown "
        "<comment>stale</comment>: it is presumed dead and its running tasks will be rescued."
    )

    async def perform(self) -> int:
        async with self.open_queue() as queue:
            servers = await queue.servers()
        now = datetime.now(UTC)
        stale_after = self.config.stale_after
        views = [server_to_dict(s, now=now, stale_after=stale_after) for s in servers]
        if self.wants_json:
            self.write_json(views)
            return EXIT_OK
        if not servers:
            self.text("No server is running. Start workers with `taskq start`.")
            return EXIT_OK
        rows = []
        for server, view in zip(servers, views, strict=True):
            status = "alive" if view["alive"] else ("stale" if server.is_running else "stopped")
            uptime = (
                format_duration((now - server.started_at).total_seconds())
                if server.started_at
                else ""
            )
            rows.append(
                [
                    server.server_name,
                    server.hostname,
                    str(server.pid),
                    str(server.active_workers),
                    str(server.idle_workers),
                    str(server.max_workers),
                    format_age(server.last_heartbeat, now),
                    uptime,
                    status,
                    server.version,
                ]
            )
        self.render_rows(
            rows,
            headers=[
                "server",
                "host",
                "pid",
                "active",
                "idle",
                "max",
                "heartbeat",
                "uptime",
                "status",
                "version",
            ],
            numeric=[2, 3, 4, 5],
        )
        alive = sum(1 for view in views if view["alive"])
        self.text(f"{plural(len(servers), 'server')}, {alive} alive.")
        return EXIT_OK
