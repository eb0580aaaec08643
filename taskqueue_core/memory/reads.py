"""Reads: task lists and trees, log rows, statistics. None of them changes the store.

Each public function is the body of the ``InMemoryRepository`` method of the same name,
whose docstring states the contract.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import timedelta

from taskqueue_core.exceptions import UnknownTask
from taskqueue_core.limits import utc
from taskqueue_core.memory.rows import Row
from taskqueue_core.memory.store import Store
from taskqueue_core.models import LogRecord, Stats, TaskFilter, TaskPage, TaskState, TaskTree


def list_tasks(store: Store, filter: TaskFilter | None, limit: int, offset: int) -> TaskPage:
    if filter is None:
        filter = TaskFilter()
    candidates: Iterable[Row]
    if filter.states is not None:
        ids: set[int] = set()
        for state in filter.states:
            ids |= store.by_state[TaskState(state)]
        candidates = (store.tasks[i] for i in sorted(ids, reverse=True))
    else:
        candidates = reversed(store.tasks.values())
    needle = None if filter.name is None else filter.name.casefold()
    after = None if filter.enqueued_after is None else utc(filter.enqueued_after)
    before = None if filter.enqueued_before is None else utc(filter.enqueued_before)
    matching = [
        row
        for row in candidates
        if (needle is None or needle in row.name.casefold())
        and (filter.channel is None or row.channel == filter.channel)
        and (filter.parent_task is None or row.parent_task == filter.parent_task)
        and (after is None or row.date_enqueued >= after)
        and (before is None or row.date_enqueued < before)
    ]
    page = matching[max(offset, 0) : max(offset, 0) + max(limit, 0)]
    return TaskPage(tasks=[row.snapshot() for row in page], total=len(matching))


def get_tree(store: Store, task_id: int) -> TaskTree:
    if task_id not in store.tasks:
        raise UnknownTask(f"task {task_id} does not exist")
    members = {task_id}
    stack = [task_id]
    while stack:
        for child in store.children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)
    ordered = sorted(members)
    edges = [
        (child, parent)
        for child in ordered
        for parent in store.parents.get(child, ())
        if parent in members
    ]
    return TaskTree(tasks=[store.tasks[i].snapshot() for i in ordered], edges=edges)


def get_logs(store: Store, task_id: int, after_id: int | None, limit: int) -> list[LogRecord]:
    rows = store.logs.get(task_id, [])
    start = 0
    if after_id is not None:
        start = bisect.bisect_right(rows, after_id, key=lambda log: log.id)
    return [log.snapshot(task_id) for log in rows[start : start + max(limit, 0)]]


def stats(store: Store) -> Stats:
    since = store.now() - timedelta(minutes=1)
    by_channel: dict[str, dict[str, int]] = {}
    done_recently = failed_recently = 0
    for row in store.tasks.values():
        counts = by_channel.setdefault(row.channel, {})
        counts[row.state.value] = counts.get(row.state.value, 0) + 1
        if row.date_done is not None and row.date_done >= since:
            done_recently += 1
        if row.date_failed is not None and row.date_failed >= since:
            failed_recently += 1
    running = [server for server in store.servers.values() if server.is_running]
    return Stats(
        by_state={state.value: len(store.by_state[state]) for state in TaskState},
        by_channel=by_channel,
        done_last_minute=done_recently,
        failed_last_minute=failed_recently,
        servers_running=len(running),
        workers_total=sum(server.max_workers for server in running),
        workers_active=sum(server.active_workers for server in running),
        workers_idle=sum(server.idle_workers for server in running),
    )
