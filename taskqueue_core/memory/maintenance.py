"""Maintenance: the servers' rows, the rescue of tasks of dead servers, pruning.

Each public function is the body of the ``InMemoryRepository`` method of the same name,
whose docstring states the contract; like every verb, none of them awaits.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from taskqueue_core.limits import utc
from taskqueue_core.memory.rows import Changes
from taskqueue_core.memory.store import Store
from taskqueue_core.models import WORKER_LOST, ServerInfo, TaskState


def register_server(store: Store, server: ServerInfo) -> None:
    now = store.now()
    store.servers[server.server_name] = replace(
        server,
        is_running=True,
        last_heartbeat=now,
        started_at=now if server.started_at is None else utc(server.started_at),
    )


def heartbeat(store: Store, server_name: str, active_workers: int, idle_workers: int) -> bool:
    server = store.servers.get(server_name)
    if server is None:
        return False
    store.servers[server_name] = replace(
        server,
        active_workers=active_workers,
        idle_workers=idle_workers,
        last_heartbeat=store.now(),
    )
    return True


def rescue_stale(store: Store, stale_before: datetime) -> list[int]:
    stale_before = utc(stale_before)
    now = store.now()
    stale = {
        name
        for name, server in store.servers.items()
        if server.last_heartbeat is None or server.last_heartbeat < stale_before
    }
    changes = Changes.empty()
    rescued: list[int] = []
    for task_id in sorted(store.by_state[TaskState.DOING]):
        row = store.tasks[task_id]
        owner = row.claimed_by
        dead = owner is None or owner in stale or owner not in store.servers
        if not dead or (row.date_started is not None and row.date_started >= stale_before):
            continue
        rescued.append(task_id)
        message = f"server {owner!r} stopped heartbeating while the task ran"
        if row.retry_count >= row.max_retries:
            row.set_error(WORKER_LOST, message, None)
            store.end(row, TaskState.FAILED, now)
            changes.ended.append(task_id)
            store.cascade_end(row, TaskState.FAILED, now, changes)
        else:
            row.retry_count += 1
            row.set_error(WORKER_LOST, message, None)
            row.claimed_by = None
            row.date_scheduled = now
            store.enqueue(row, now)
            changes.channels.add(row.channel)
    for name in stale:
        del store.servers[name]
    store.emit(changes)
    return rescued


def prune(store: Store, ended_before: datetime) -> int:
    ended_before = utc(ended_before)
    doomed = [
        task_id
        for state in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.STOPPED)
        for task_id in store.by_state[state]
        if (ended := store.tasks[task_id].date_ended) is not None and ended < ended_before
    ]
    for task_id in doomed:
        store.delete(task_id)
    return len(doomed)
