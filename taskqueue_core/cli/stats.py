"""``taskq stats``: task counts per state, for each channel and in all."""

from __future__ import annotations

from typing import Any

from taskqueue_core.cli.base import EXIT_OK, JSON_OPTION, QueueCommand
from taskqueue_core.models import Stats, TaskState

__all__ = ["StatsCommand", "stats_view"]

STATES = [state.value for state in TaskState]
"""Column order: the life of a task, from waiting to its end states."""


def _full(counts: dict[str, int]) -> dict[str, int]:
    # Every state present (zeros included) so scripts need not guess which keys exist.
    return {state: int(counts.get(state, 0)) for state in STATES}


def stats_view(stats: Stats) -> dict[str, Any]:
    """The statistics as JSON values: counts per state, per channel, totals, throughput."""
    by_state = _full(stats.by_state)
    by_channel = {channel: _full(counts) for channel, counts in sorted(stats.by_channel.items())}
    return {
        "by_state": by_state,
        "by_channel": by_channel,
        "total": sum(by_state.values()),
        "done_last_minute": stats.done_last_minute,
        "failed_last_minute": stats.failed_last_minute,
    }


class StatsCommand(QueueCommand):
    name = "stats"
    description = "Show task counts per state and channel."
    options = [JSON_OPTION]
    help = (
        "Counts the tasks in each state (waiting, enqueued, doing, done, failed, cancelled, "
        "stopped), for every channel and in all, with the tasks done and failed in the last "
        "minute."
    )

    async def perform(self) -> int:
        async with self.open_queue() as queue:
            stats = await queue.stats()
        view = stats_view(stats)
        if self.wants_json:
            self.write_json(view)
            return EXIT_OK
        rows = [
            [channel, *(str(counts[state]) for state in STATES), str(sum(counts.values()))]
            for channel, counts in view["by_channel"].items()
        ]
        rows.append(
            ["(all)", *(str(view["by_state"][state]) for state in STATES), str(view["total"])]
        )
        self.render_rows(
            rows, headers=["channel", *STATES, "total"], numeric=range(1, len(STATES) + 2)
        )
        self.text(
            f"Last minute: {view['done_last_minute']} done, {view['failed_last_minute']} failed."
        )
        return EXIT_OK
