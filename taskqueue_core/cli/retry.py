"""``taskq retry [IDS...] [--failed] [--since=...]``: run ended tasks again."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cleo.helpers import argument, option

from taskqueue_core.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    JSON_OPTION,
    QueueCommand,
    UsageError,
    parse_since,
    parse_task_ids,
)
from taskqueue_core.cli.output import format_datetime, plural
from taskqueue_core.exceptions import UnknownTask
from taskqueue_core.models import TaskFilter, TaskState

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue

__all__ = ["RetryCommand"]

PAGE = 500
"""Failed tasks read per query when selecting them."""

BATCH = 200
"""Tasks retried per write (and per step of the progress bar)."""


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))


class RetryCommand(QueueCommand):
    name = "retry"
    description = "Retry failed tasks (all, recent ones, or the given ids)."
    arguments = [
        argument(
            "ids",
            "Ids of failed, cancelled or stopped tasks to retry.",
            optional=True,
            multiple=True,
        )
    ]
    options = [
        option("failed", None, "Retry every failed task (the default without ids).", flag=True),
        option(
            "since",
            None,
            "Only tasks that failed since then: 30m, 1h, 2d or an ISO date/time.",
            flag=False,
        ),
        JSON_OPTION,
    ]
    help = (
        "Without ids (or with <info>--failed</info>) puts every failed task back in the "
        "queue; <info>--since</info> keeps those that failed after a moment "
        "(<comment>30m</comment>, <comment>1h</comment>, <comment>2d</comment>, or an ISO "
        "date/time). With ids, retries those tasks, which may also be cancelled or stopped. "
        "Retried tasks start again with a fresh retry count, and the descendants that failed "
        "or were cancelled because of them wait for them again."
    )

    async def perform(self) -> int:
        ids = parse_task_ids(self.argument("ids") or [])
        since_raw = self.option("since")
        since = parse_since(since_raw) if since_raw else None
        if ids and (self.option("failed") or since is not None):
            raise UsageError("give task ids, or --failed/--since, not both")
        if ids:
            return await self._retry_ids(ids)
        return await self._retry_failed(since)

    async def _retry_ids(self, ids: list[int]) -> int:
        async with self.open_queue() as queue:
            found = {task.id: task for task in await queue.repository.get_tasks(ids)}
            missing = [task_id for task_id in ids if task_id not in found]
            if missing:
                raise UnknownTask(f"no task has id {_ids(missing)}; nothing was retried")
            changed = set(await queue.retry(ids))
            states = await queue.repository.get_states(ids)
        retried = [task_id for task_id in ids if task_id in changed]
        restored = sorted(changed.difference(ids))
        refused = {
            task_id: str(states.get(task_id, found[task_id].state))
            for task_id in ids
            if task_id not in changed
        }
        if self.wants_json:
            self.write_json({"retried": retried, "restored": restored, "not_retried": refused})
            return EXIT_FAILURE if refused else EXIT_OK
        if retried:
            self.text(f"Retried {plural(len(retried), 'task')}: {_ids(retried)}.")
        if restored:
            self.text(
                f"{plural(len(restored), 'descendant')} waiting for them again: {_ids(restored)}."
            )
        for task_id, state in refused.items():
            self.error_line(
                f"task {task_id} is {state}: only failed, cancelled or stopped tasks can be retried"
            )
        return EXIT_FAILURE if refused else EXIT_OK

    async def _retry_failed(self, since: datetime | None) -> int:
        async with self.open_queue() as queue:
            selected = await self._select_failed(queue, since)
            changed: set[int] = set()
            bar = self.progress(len(selected))
            # Oldest first: a parent comes back before its children, so the children it
            # restores are already waiting when their own turn comes (nothing is retried twice).
            for start in range(0, len(selected), BATCH):
                batch = selected[start : start + BATCH]
                changed.update(await queue.retry(batch))
                if bar is not None:
                    bar.advance(len(batch))
            if bar is not None:
                bar.finish()
                self.line("")
        if self.wants_json:
            self.write_json(
                {"selected": len(selected), "retried": sorted(changed)},
            )
            return EXIT_OK
        scope = f" since {format_datetime(since)}" if since else ""
        if not selected:
            self.text(f"No failed tasks{scope}.")
        else:
            self.text(
                f"Retried {plural(len(changed), 'task')} "
                f"({plural(len(selected), 'failed task')}{scope} selected)."
            )
        return EXIT_OK

    async def _select_failed(self, queue: TaskQueue, since: datetime | None) -> list[int]:
        found: set[int] = set()
        offset = 0
        only_failed = TaskFilter(states=(TaskState.FAILED,))
        while True:
            page = await queue.list_tasks(only_failed, limit=PAGE, offset=offset)
            for task in page.tasks:
                moment = task.date_failed or task.date_ended
                if since is None or (moment is not None and moment >= since):
                    found.add(task.id)
            if len(page.tasks) < PAGE:
                break
            offset += PAGE
        return sorted(found)
