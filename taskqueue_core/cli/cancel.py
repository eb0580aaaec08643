"""``taskq cancel ID...``: cancel tasks (and the descendants waiting for them)."""

from __future__ import annotations

from cleo.helpers import argument

from taskqueue_core.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    JSON_OPTION,
    QueueCommand,
    parse_task_ids,
)
from taskqueue_core.cli.output import plural
from taskqueue_core.exceptions import UnknownTask

__all__ = ["CancelCommand"]


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))


class CancelCommand(QueueCommand):
    name = "cancel"
    description = "Cancel tasks that are waiting, enqueued or running."
    arguments = [argument("ids", "The ids of the tasks to cancel.", multiple=True)]
    options = [JSON_OPTION]
    help = (
        "Cancels each task that is waiting, enqueued or running (a running async task is "
        "interrupted). The tasks waiting for a cancelled task are cancelled too. Nothing is "
        "written if an id does not exist. Exit code 1 if some task could not be cancelled "
        "because it had already ended."
    )

    async def perform(self) -> int:
        ids = parse_task_ids(self.argument("ids"))
        async with self.open_queue() as queue:
            found = {task.id: task for task in await queue.repository.get_tasks(ids)}
            missing = [task_id for task_id in ids if task_id not in found]
            if missing:
                raise UnknownTask(f"no task has id {_ids(missing)}; nothing was cancelled")
            changed = set(await queue.cancel(ids))
            states = await queue.repository.get_states(ids)
        cancelled = [task_id for task_id in ids if task_id in changed]
        descendants = sorted(changed.difference(ids))
        refused = {
            task_id: str(states.get(task_id, found[task_id].state))
            for task_id in ids
            if task_id not in changed
        }
        if self.wants_json:
            self.write_json(
                {"cancelled": cancelled, "descendants": descendants, "not_cancelled": refused}
            )
            return EXIT_FAILURE if refused else EXIT_OK
        if cancelled:
            self.text(f"Cancelled {plural(len(cancelled), 'task')}: {_ids(cancelled)}.")
        if descendants:
            self.text(
                f"Also cancelled {plural(len(descendants), 'waiting descendant')}: "
                f"{_ids(descendants)}."
            )
        for task_id, state in refused.items():
            self.error_line(f"task {task_id} is {state}: only unfinished tasks can be cancelled")
        return EXIT_FAILURE if refused else EXIT_OK
