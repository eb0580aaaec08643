"""The state of one ``InMemoryRepository`` and the primitives every verb is made of.

``Store`` holds the rows, the indexes over them (tasks by state, dependency edges, the ready
heaps of the claim order) and the subscribers, with the changes that keep them consistent:
moving a task between states, enqueueing, ending and cascading an end, deleting, the upkeep
of the ready index, and the events a verb emits at its end. None of them awaits.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime

from taskqueue_core.limits import utc
from taskqueue_core.memory.rows import Changes, LogRow, Row
from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, Event, ServerInfo, TaskState
from taskqueue_core.subscribers import LocalSubscribers

# Rebuild the ready heaps once this many entries are dead and they outnumber the live ones.
_COMPACT_AFTER = 1024

ReadyEntry = tuple[int, datetime, int, int]
"""(-priority, date_scheduled, task id, generation): heap order is claim order."""
ScheduledEntry = tuple[datetime, int, int]
"""(date_scheduled, task id, generation)."""


class Store:
    """Everything one ``InMemoryRepository`` holds; ``clock`` returns "now" (aware UTC)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.tasks: dict[int, Row] = {}
        self.by_state: dict[TaskState, set[int]] = {state: set() for state in TaskState}
        self.parents: dict[int, list[int]] = {}
        self.children: dict[int, list[int]] = {}
        self.logs: dict[int, list[LogRow]] = {}
        self.servers: dict[str, ServerInfo] = {}
        self.ready: dict[str, list[ReadyEntry]] = {}
        self.scheduled: list[ScheduledEntry] = []
        self.dead_entries = 0
        self.next_task_id = 1
        self.next_log_id = 1
        self.subscriptions = LocalSubscribers()

    def now(self) -> datetime:
        return utc(self.clock())

    # -- state changes (never await in here) ---------------------------------------------

    def move(self, row: Row, state: TaskState) -> None:
        if row.state is TaskState.ENQUEUED and state is not TaskState.DOING:
            # Its heap entry stays behind until popped or compacted away.
            self.dead_entries += 1
        self.by_state[row.state].discard(row.id)
        row.state = state
        self.by_state[state].add(row.id)

    def enqueue(self, row: Row, now: datetime) -> None:
        """Make ``row`` enqueued and index it (ready now, or scheduled for later)."""
        self.move(row, TaskState.ENQUEUED)
        row.pending_parents = 0
        row.generation += 1
        if row.date_scheduled <= now:
            heap = self.ready.setdefault(row.channel, [])
            heapq.heappush(heap, (-row.priority, row.date_scheduled, row.id, row.generation))
        else:
            heapq.heappush(self.scheduled, (row.date_scheduled, row.id, row.generation))

    def end(self, row: Row, state: TaskState, now: datetime) -> None:
        self.move(row, state)
        if state is TaskState.DONE:
            row.date_done = now
        elif state is TaskState.FAILED:
            row.date_failed = now
        elif state is TaskState.CANCELLED:
            row.date_cancelled = now
        elif state is TaskState.STOPPED:
            row.date_stopped = now
        row.date_ended = now

    def cascade_end(self, root: Row, state: TaskState, now: datetime, changes: Changes) -> None:
        """``root`` ended ``state``: fail or cancel its waiting descendants (stopped: none)."""
        if state is TaskState.FAILED:
            name, message = PARENT_FAILED, f"parent task {root.id} failed"
        elif state is TaskState.CANCELLED:
            name, message = PARENT_CANCELLED, f"parent task {root.id} was cancelled"
        else:
            return
        stack = list(self.children.get(root.id, ()))
        while stack:
            child = self.tasks.get(stack.pop())
            if child is None or child.state is not TaskState.WAITING:
                continue
            self.end(child, state, now)
            child.set_error(name, message, None)
            changes.ended.append(child.id)
            stack.extend(self.children.get(child.id, ()))

    def delete(self, task_id: int) -> None:
        row = self.tasks.pop(task_id)
        if row.state is TaskState.ENQUEUED:
            self.dead_entries += 1
        self.by_state[row.state].discard(task_id)
        self.logs.pop(task_id, None)
        for parent_id in self.parents.pop(task_id, ()):
            siblings = self.children.get(parent_id)
            if siblings is not None:
                siblings.remove(task_id)
        for child_id in self.children.pop(task_id, ()):
            child = self.tasks.get(child_id)
            if child is None:
                continue
            parents = self.parents.get(child_id)
            if parents is not None and task_id in parents:
                parents.remove(task_id)
            if child.parent_task == task_id:
                child.parent_task = None

    # -- the ready index -----------------------------------------------------------------

    def valid(self, task_id: int, generation: int) -> Row | None:
        row = self.tasks.get(task_id)
        if row is None or row.state is not TaskState.ENQUEUED or row.generation != generation:
            return None
        return row

    def promote_due(self, now: datetime) -> None:
        """Move scheduled entries whose time has come to their channel's ready heap."""
        while self.scheduled and self.scheduled[0][0] <= now:
            _, task_id, generation = heapq.heappop(self.scheduled)
            row = self.valid(task_id, generation)
            if row is not None:
                heap = self.ready.setdefault(row.channel, [])
                heapq.heappush(heap, (-row.priority, row.date_scheduled, row.id, generation))

    def clean_top(self, heap: list[ReadyEntry], now: datetime) -> None:
        """Drop dead entries from the top of ``heap`` so that ``heap[0]`` is claimable."""
        while heap:
            _, scheduled, task_id, generation = heap[0]
            if self.valid(task_id, generation) is None:
                heapq.heappop(heap)
                self.dead_entries = max(self.dead_entries - 1, 0)
            elif scheduled > now:
                # Only when the clock went backwards: not due any more.
                heapq.heappop(heap)
                heapq.heappush(self.scheduled, (scheduled, task_id, generation))
            else:
                return

    def maybe_compact(self) -> None:
        live = len(self.by_state[TaskState.ENQUEUED])
        if self.dead_entries < _COMPACT_AFTER or self.dead_entries < live:
            return
        now = self.now()
        self.ready = {}
        self.scheduled = []
        self.dead_entries = 0
        for task_id in self.by_state[TaskState.ENQUEUED]:
            row = self.tasks[task_id]
            if row.date_scheduled <= now:
                entry = (-row.priority, row.date_scheduled, row.id, row.generation)
                heapq.heappush(self.ready.setdefault(row.channel, []), entry)
            else:
                heapq.heappush(self.scheduled, (row.date_scheduled, row.id, row.generation))

    # -- events --------------------------------------------------------------------------

    def emit(self, changes: Changes) -> None:
        self.subscriptions.publish_changes(changes.channels, changes.control, changes.ended)

    def publish(self, event: Event) -> None:
        self.subscriptions.publish(event)
