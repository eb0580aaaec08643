"""``taskq show ID``: one task in detail, with its context, result and error."""

from __future__ import annotations

from cleo.formatters.formatter import Formatter
from cleo.helpers import argument

from taskqueue_core.cli.base import EXIT_OK, JSON_OPTION, QueueCommand, parse_task_ids
from taskqueue_core.cli.output import (
    format_datetime,
    format_duration,
    function_label,
    task_to_dict,
    to_json,
)
from taskqueue_core.models import Task, TaskTree

__all__ = ["ShowCommand"]


def _children(tree: TaskTree, task_id: int) -> list[int]:
    return sorted({child for child, parent in tree.edges if parent == task_id})


class ShowCommand(QueueCommand):
    name = "show"
    description = "Show one task: state, timings, context, result and error."
    arguments = [argument("id", "The task id.")]
    options = [JSON_OPTION]
    help = (
        "Shows everything stored about a task: its function and arguments, state and "
        "timings, its live context (as set by <comment>set_context</comment>), its result "
        "when done and its error and traceback when it failed. Exit code 1 if no task has "
        "this id."
    )

    async def perform(self) -> int:
        (task_id,) = parse_task_ids([self.argument("id")])
        async with self.open_queue() as queue:
            task = await queue.get_task(task_id)
            tree = await queue.get_tree(task_id)
        children = _children(tree, task_id)
        if self.wants_json:
            self.write_json({**task_to_dict(task), "children": children})
            return EXIT_OK
        self._render(task, children)
        return EXIT_OK

    def _render(self, task: Task, children: list[int]) -> None:
        self.line(f"<b>Task {task.id}</b>  {Formatter.escape(task.name)}  [{self._state(task)}]")
        fields: list[tuple[str, str]] = [
            ("function", function_label(task.function)),
            ("channel", task.channel),
            ("priority", str(task.priority)),
            ("parent", "" if task.parent_task is None else str(task.parent_task)),
            ("children", ", ".join(map(str, children))),
            ("args", to_json(task.args, indent=None)),
            ("kwargs", to_json(task.kwargs, indent=None)),
            ("retries", f"{task.retry_count} of {task.max_retries}"),
            ("timeout", "" if task.timeout is None else format_duration(task.timeout)),
            ("enqueued", format_datetime(task.date_enqueued)),
            (
                # Only when it differs: a task scheduled for later (delay=, eta=, a retry).
                "scheduled",
                format_datetime(task.date_scheduled)
                if task.date_scheduled not in (None, task.date_enqueued)
                else "",
            ),
            ("started", format_datetime(task.date_started)),
            ("ended", format_datetime(task.date_ended)),
            (
                "run time",
                "" if task.execution_time is None else format_duration(task.execution_time),
            ),
            ("claimed by", task.claimed_by or ""),
        ]
        if task.pending_parents:
            fields.insert(4, ("waiting for", f"{task.pending_parents} parent(s)"))
        width = max(len(label) for label, _ in fields)
        for label, value in fields:
            if value:
                self.text(f"  {label.ljust(width)}  {value}")
        self._section("Context", to_json(task.context) if task.context else "(empty)")
        if task.result is not None:
            self._section("Result", to_json(task.result))
        if task.exception_name or task.exception_message:
            error = f"{task.exception_name or 'Error'}: {task.exception_message or ''}".strip()
            body = error if not task.exception_info else f"{error}\n{task.exception_info}"
            self._section("Error", body.rstrip())

    def _section(self, title: str, body: str) -> None:
        self.line("")
        self.line(f"<comment>{title}</comment>")
        for text in body.splitlines():
            self.text(f"  {text}")

    @staticmethod
    def _state(task: Task) -> str:
        style = {
            "done": "info",
            "failed": "fg=red",
            "cancelled": "comment",
            "stopped": "comment",
        }.get(task.state.value)
        return f"<{style}>{task.state.value}</>" if style else task.state.value
