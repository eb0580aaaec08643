"""``taskq clear [--channel=...]``: delete the tasks that have not started yet."""

from __future__ import annotations

from cleo.helpers import option

from taskqueue_core.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    JSON_OPTION,
    QueueCommand,
    UsageError,
)
from taskqueue_core.cli.output import plural
from taskqueue_core.models import Stats, TaskState

__all__ = ["ClearCommand"]

_PENDING = (TaskState.WAITING.value, TaskState.ENQUEUED.value)


def pending_by_channel(stats: Stats) -> dict[str, int]:
    """Channel -> number of waiting and enqueued tasks (channels with none left out)."""
    counts = {
        channel: sum(by_state.get(state, 0) for state in _PENDING)
        for channel, by_state in stats.by_channel.items()
    }
    return {channel: count for channel, count in sorted(counts.items()) if count}


class ClearCommand(QueueCommand):
    name = "clear"
    description = "Delete pending (waiting and enqueued) tasks."
    options = [
        option("channel", "c", "Only the tasks of this channel.", flag=False),
        option("yes", "y", "Do not ask for confirmation.", flag=True),
        JSON_OPTION,
    ]
    help = (
        "Deletes every task that has not started yet (states <comment>waiting</comment> and "
        "<comment>enqueued</comment>), or only those of one channel. Running and ended tasks "
        "are kept. Asks for confirmation; without a terminal (scripts, CI) it refuses unless "
        "<info>--yes</info> is given."
    )

    async def perform(self) -> int:
        channel = self.option("channel")
        if channel is not None and not channel.strip():
            raise UsageError("--channel must not be empty")
        async with self.open_queue() as queue:
            pending = pending_by_channel(await queue.stats())
            if channel is not None:
                pending = {channel: pending[channel]} if channel in pending else {}
            total = sum(pending.values())
            scope = f" in channel {channel!r}" if channel is not None else ""
            if not total:
                return self._report(0, f"No pending tasks{scope}.")
            if not self.option("yes"):
                if not self.io.is_interactive():
                    raise UsageError(
                        f"refusing to delete {plural(total, 'pending task')}{scope} without "
                        "confirmation: pass --yes"
                    )
                # The count is the channel's own; what waits on those tasks elsewhere goes too.
                them = "it" if total == 1 else "them"
                others = f", and the tasks waiting on {them} in other channels" if channel else ""
                question = f"Delete {plural(total, 'pending task')}{scope}{others}?"
                if not self.confirm(question, default=False):
                    self.text("Nothing deleted.")
                    return EXIT_FAILURE
            bar = self.progress(total)
            deleted = 0
            for name, count in pending.items():
                deleted += await queue.clear(name)
                if bar is not None:
                    bar.advance(count)
            if channel is None:
                # Tasks created since the count, on channels it did not list.
                deleted += await queue.clear(None)
            if bar is not None:
                bar.finish()
                self.line("")
        return self._report(deleted, f"Deleted {plural(deleted, 'pending task')}{scope}.")

    def _report(self, deleted: int, message: str) -> int:
        if self.wants_json:
            self.write_json({"deleted": deleted, "channel": self.option("channel")})
        else:
            self.text(message)
        return EXIT_OK
