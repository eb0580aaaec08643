"""``taskq logs ID [--follow]``: the log lines a task wrote, oldest first."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cleo.formatters.formatter import Formatter
from cleo.helpers import argument, option
from cleo.io.outputs.output import Type as OutputType

from taskqueue_core.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    QueueCommand,
    UsageError,
    parse_task_ids,
)
from taskqueue_core.cli.output import format_datetime, log_to_dict, to_json
from taskqueue_core.models import LogRecord

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = ["LogsCommand"]

PAGE = 500
"""Log rows read per query."""

_LEVEL_STYLES = {
    "debug": "fg=default;options=dark",
    "info": "fg=green",
    "warning": "fg=yellow",
    "error": "fg=red",
    "critical": "fg=red;options=bold",
}


class LogsCommand(QueueCommand):
    name = "logs"
    description = "Print the log lines of a task (--follow: until it ends)."
    arguments = [argument("id", "The task id.")]
    options = [
        option("follow", "f", "Keep printing new lines until the task ends.", flag=True),
        option(
            "interval",
            None,
            "Seconds between reads with --follow.",
            flag=False,
            default="1",
        ),
        option("json", None, "Print one JSON object per line (for scripts).", flag=True),
    ]
    help = (
        "Prints the rows of <comment>queued_task_logs</comment> written by the task "
        "(<comment>getLogger(...)</comment> or <comment>loguru.logger</comment> inside it), "
        "oldest first, with tracebacks. With <info>--follow</info> it keeps reading new lines "
        "until the task has ended. With <info>--json</info> each line is a JSON object."
    )

    async def perform(self) -> int:
        (task_id,) = parse_task_ids([self.argument("id")])
        interval = self._interval()
        async with self.open_queue() as queue:
            task = await queue.get_task(task_id)  # UnknownTask: exit code 1
            last_id = await self._print_new(queue, task_id, None)
            if not self.option("follow"):
                return EXIT_OK
            # The end of the task and its last log lines are written by different buffered
            # writers, so once the task has ended one more read collects any stragglers.
            ended = task.state.is_finished
            while True:
                if not ended:
                    await asyncio.sleep(interval)
                states = await queue.repository.get_states([task_id])
                last_id = await self._print_new(queue, task_id, last_id)
                state = states.get(task_id)
                if state is None:
                    self.error_line(f"task {task_id} was deleted")
                    return EXIT_FAILURE
                if ended:
                    return EXIT_OK
                if state.is_finished:
                    ended = True
                    await asyncio.sleep(interval)

    def _interval(self) -> float:
        raw = self.option("interval")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = 0.0
        if not 0.05 <= value <= 3600:
            raise UsageError(
                f"--interval must be a number of seconds from 0.05 to 3600, got {raw!r}"
            )
        return value

    async def _print_new(self, queue: TaskQueue, task_id: int, after_id: int | None) -> int | None:
        """Print every log row after ``after_id``; return the id of the last one printed."""
        while True:
            records = await queue.get_logs(task_id, after_id=after_id, limit=PAGE)
            for record in records:
                self._print(record)
                after_id = record.id
            if len(records) < PAGE:
                return after_id

    def _print(self, record: LogRecord) -> None:
        if self.wants_json:
            self.io.write_line(to_json(log_to_dict(record), indent=None), type=OutputType.RAW)
            return
        level = record.type.lower()
        style = _LEVEL_STYLES.get(level, "fg=default")
        info: dict[str, Any] = dict(record.info or {})
        trace = info.pop("traceback", None) or info.pop("exc_info", None)
        extra = f"  {to_json(info, indent=None)}" if info else ""
        self.line(
            f"{format_datetime(record.date_created)} <{style}>{level.upper():<8}</> "
            f"{Formatter.escape(record.name)}: {Formatter.escape(record.message + extra)}"
        )
        if isinstance(trace, str) and trace.strip():
            for text in trace.rstrip().splitlines():
                self.text(f"    {text}")
