"""Writing new tasks: at once (``enqueue``), or batched in the background (``add_task``).

``CreationWriter.create_now`` writes prepared tasks in one ``create_tasks`` call and raises
the repository's error. ``submit`` takes an ``add_task`` that already has its ``TaskRef``:
the task joins a pending list that ONE background flusher writes in rounds: every
``add_task`` of one event-loop tick, and those made while the previous round was being
written, go in one round. A round is one ``create_tasks`` call (at most ``MAX_BATCH_SIZE``
tasks), or, when the repository writes in parallel to advantage (``concurrent_creations``,
PostgreSQL) and the round has at least ``2 * PART_MIN`` tasks, that many calls at once, each
with a consecutive part of the round: the server works on both while the client encodes.
A full batch does not wait for the burst that fills it to end: when ``MAX_BATCH_SIZE`` tasks
are pending and no such write is under way, their write starts inside the ``add_task`` call
that completes the batch (``eager_tasks``), so the database writes it while the burst goes
on (a burst of ``add_task`` calls never yields to the event loop, so the flusher starts only
after it). ``flush()`` waits for everything submitted so far; ``drain()`` until every write
is over and the flusher is idle.

A failed background write surfaces on the refs it concerns (``get_task_id()`` / ``wait()``
raise it) and is logged; the flusher itself never raises. A batch is all or nothing in the
repository, so when one task of a batch is refused the flusher isolates it instead of failing
its neighbours: a missing parent id is found with one ``get_states`` read and only the tasks
naming it fail; any other error is bisected (the halves are written separately,
recursively) until the culprit is alone. Children of a task whose creation failed fail with
``UnknownParent`` naming that parent.

``pre_create`` and ``post_create`` hooks run here, each task's in the ``contextvars`` its
``add_task`` call captured.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from loguru import logger

from taskqueue_core.arguments import clean_context
from taskqueue_core.eager_tasks import start_eagerly
from taskqueue_core.exceptions import (
    InvalidTaskError,
    QueueClosed,
    RepositoryError,
    UnknownParent,
)
from taskqueue_core.hooks import HookRegistry, Moment
from taskqueue_core.limits import unique
from taskqueue_core.models import NewTask
from taskqueue_core.ref import Creation, TaskRef
from taskqueue_core.repository import TaskRepository

__all__ = ["MAX_BATCH_SIZE", "PART_MIN", "CreationWriter", "PendingCreation"]

MAX_BATCH_SIZE = 10_000
"""Most tasks one background ``create_tasks`` call writes; more pending tasks take more calls.

A bound on one statement's size (and on what a failed batch has to bisect), not a speed
setting: on PostgreSQL a creation costs the same per task from about 1,000 tasks per
statement up (20,000 add_task calls of one tick: 2,000 per batch ~5% slower than 10,000)."""

PART_MIN = 500
"""Fewest tasks in one of the calls a round is split into when the repository writes in
parallel: a smaller round is one call. (On PostgreSQL, two calls of 250 tasks at once took
0.85x the time of one call of 500, two of 500 0.72x the time of one of 1,000.)"""


class Storage(Protocol):
    """Where the writer finds the repository and the hooks (the queue: read at each write)."""

    repository: TaskRepository
    hooks: HookRegistry


class PendingCreation(Creation):
    """An ``add_task`` waiting for the flusher; it settles (``Creation``) with the id or the
    error, and its ``TaskRef`` reads that. Compared by identity."""

    __slots__ = ("context", "hooked", "own_context", "parent_ids", "parents", "task")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        task: NewTask,
        parents: tuple[TaskRef | int, ...],
        context: contextvars.Context,
    ) -> None:
        super().__init__(loop)
        self.task = task
        """The task as validated, without its parents (in ``parents``)."""
        self.parents = parents
        self.context = context
        """The contextvars the add_task call saw. Consecutive calls made in one context
        share one snapshot (so a burst keeps one object, not one per task);
        ``hook_context`` gives the task a copy of its own before a hook can change it."""
        self.hooked = False
        """pre_create hooks ran (a batch retried after a split must not run them again)."""
        self.parent_ids: tuple[int, ...] = ()
        """The existing parents of the last attempt (to find which one is missing)."""
        self.own_context = False

    def hook_context(self) -> contextvars.Context:
        """The context this task's creation hooks run in: its own copy of ``context``, the
        same for its pre_create and post_create hooks."""
        if not self.own_context:
            self.context = self.context.copy()
            self.own_context = True
        return self.context

    def fail(self, error: BaseException) -> None:
        """Settle with ``error`` (logged) unless already settled."""
        if self.done():
            return
        logger.error(
            "taskqueue: task {!r} was not created: {}: {}",
            self.task.name,
            type(error).__name__,
            error,
        )
        self.refuse(error)


class CreationWriter:
    """Writes new tasks for one queue, from its event loop."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._pending: list[PendingCreation] = []
        self._inflight: list[PendingCreation] = []
        self._flusher: asyncio.Task[None] | None = None
        self._early: asyncio.Future[None] | None = None
        """The write of a full batch started by ``submit`` (see the module doc), until it ends."""
        self._early_items: list[PendingCreation] = []
        """That write's creations."""

    # -- immediate creation --------------------------------------------------------------

    async def create_now(
        self,
        tasks: Sequence[NewTask],
        parents: Sequence[tuple[TaskRef | int, ...]] | None,
        transaction: Any,
        check_open: Callable[[], None],
    ) -> list[int]:
        """Write ``tasks`` in one call (inside ``transaction`` if given), all or nothing.

        ``parents``: each task's parents (None: no task has any). Parent refs are awaited
        first; ``check_open`` runs after the pre_create hooks, right before the write.
        Returns the ids, in order. Raises the repository's errors, ``UnknownParent`` for a
        parent ref whose creation failed, and what ``check_open`` raises.
        """
        hooks = self._storage.hooks
        if parents is not None:
            with_parents: list[NewTask] = []
            for task, its_parents in zip(tasks, parents, strict=True):
                if its_parents:
                    parent_ids = [await _parent_id(parent) for parent in its_parents]
                    task = dataclasses.replace(task, parent_ids=_unique(parent_ids))
                with_parents.append(task)
            tasks = with_parents
        if hooks.has(Moment.PRE_CREATE):
            for task in tasks:
                await hooks.run_pre_create(task)
                clean_context(task)
        check_open()
        ids = await self._storage.repository.create_tasks(tasks, transaction=transaction)
        if hooks.has(Moment.POST_CREATE):
            for task, task_id in zip(tasks, ids, strict=True):
                await hooks.run_post_create(task, task_id)
        return ids

    # -- background creation -------------------------------------------------------------

    @property
    def flusher(self) -> asyncio.Task[None] | None:
        """The background task writing pending creations, None while there are none."""
        return self._flusher

    @property
    def early_write(self) -> asyncio.Future[None] | None:
        """The write of a full batch that ``submit`` started, None while there is none."""
        return self._early

    @property
    def pending_count(self) -> int:
        """How many submitted creations are not settled yet."""
        return sum(1 for item in self._unsettled_candidates() if not item.done())

    def _unsettled_candidates(self) -> tuple[PendingCreation, ...]:
        return (*self._early_items, *self._inflight, *self._pending)

    def submit(self, item: PendingCreation) -> None:
        """Queue ``item`` for the next round and make sure a flusher runs (in the loop); start
        the write of a full batch at once (see the module doc)."""
        pending = self._pending
        pending.append(item)
        if self._flusher is None:
            loop = asyncio.get_running_loop()
            self._flusher = loop.create_task(self._flush_loop(), name="taskqueue-creation-flusher")
            self._flusher.add_done_callback(self._flusher_done)
        if len(pending) >= MAX_BATCH_SIZE and not self._early_items:
            self._start_early()

    def _start_early(self) -> None:
        """Take the first ``MAX_BATCH_SIZE`` pending creations and start their write now."""
        batch = self._pending[:MAX_BATCH_SIZE]
        del self._pending[:MAX_BATCH_SIZE]
        # Set before the first step runs: a creation submitted from inside it (a log sink
        # that adds a task) must not start another write.
        self._early_items = batch
        early = start_eagerly(self._write_batch(batch), name="taskqueue-creation-batch")
        self._early = early
        early.add_done_callback(self._early_done)

    def _early_done(self, early: asyncio.Future[None]) -> None:
        # (One early write at a time: ``early`` is ``self._early``.)
        items, self._early_items, self._early = self._early_items, [], None
        _fail_unsettled(early, "an early creation write", items)

    async def flush(self) -> None:
        """Wait until every creation submitted so far is written (or has failed on its ref)."""
        waiters = [item.waiter() for item in self._unsettled_candidates() if not item.done()]
        if waiters:
            await asyncio.wait(waiters)

    async def drain(self) -> None:
        """Wait until every write has ended and the flusher has stopped (new submissions
        made meanwhile included)."""
        while self._flusher is not None or self._early is not None:
            await asyncio.wait([f for f in (self._flusher, self._early) if f is not None])

    async def _flush_loop(self) -> None:
        while True:
            if not self._pending:
                # No await between this check and the reset: submit sees None and starts
                # a new flusher, so a task added now is never left behind.
                self._flusher = None
                return
            # (A repository that does not say writes one call a round.)
            ways = getattr(self._storage.repository, "concurrent_creations", 1)
            parts = self._take_round(ways)
            if len(parts) == 1:
                await self._write_batch(parts[0])
            else:
                # Each part on its own connection. A child whose parent is in an earlier
                # part waits for that part (``_write_batch``): parents come first.
                await asyncio.gather(*(self._write_batch(part) for part in parts))
            # Not in a `finally`: if the write is cancelled or crashes, _flusher_done still
            # finds the round here and fails the refs that did not settle.
            self._inflight = []

    def _take_round(self, ways: int) -> list[list[PendingCreation]]:
        """Move the next round from the pending list to ``_inflight``; return it in
        consecutive parts: up to ``ways`` of at least ``PART_MIN`` tasks, else one."""
        ways = max(1, ways)
        taken = self._pending[: MAX_BATCH_SIZE * ways]
        del self._pending[: len(taken)]
        self._inflight = taken
        count = max(1, min(ways, len(taken) // PART_MIN))
        size = -(-len(taken) // count)
        return [taken[start : start + size] for start in range(0, len(taken), size)]

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        if self._flusher is task:
            self._flusher = None
        if _fail_unsettled(task, "the creation flusher", (*self._inflight, *self._pending)):
            self._inflight = []
            self._pending = []

    async def _write_batch(self, batch: list[PendingCreation]) -> None:
        await self._run_pre_create(batch)
        # A parent ref of another queue may still be pending: wait for it (ours are either
        # earlier in this batch or already settled, since a ref exists before its children).
        foreign = {
            p._creation
            for item in batch
            for p in item.parents
            if isinstance(p, TaskRef) and p._creation is not None and not p._creation.done()
        }
        if foreign:
            foreign.difference_update(batch)
            if foreign:
                await asyncio.wait([creation.waiter() for creation in foreign])
        await self._write_group(batch)

    async def _run_pre_create(self, items: list[PendingCreation]) -> None:
        hooks = self._storage.hooks
        todo = [item for item in items if not item.hooked]
        for item in todo:
            item.hooked = True
        if not todo or not hooks.has(Moment.PRE_CREATE):
            return
        # Each task's hooks run in the contextvars captured by its add_task call.
        await _run_in_contexts(
            [(item.hook_context(), hooks.run_pre_create(item.task)) for item in todo]
        )
        for item in todo:
            clean_context(item.task)

    async def _write_group(self, items: list[PendingCreation]) -> None:
        """Write ``items`` in one call; on failure isolate the culprits (never raises)."""
        positions: dict[int, int] = {}  # id(creation) -> position in `tasks`
        tasks: list[NewTask] = []
        written: list[PendingCreation] = []
        for item in items:
            if not item.parents:
                positions[id(item)] = len(tasks)
                tasks.append(item.task)  # (built without parents)
                written.append(item)
                continue
            parent_ids: list[int] = []
            batch_parents: list[int] = []
            broken: TaskRef | None = None
            for parent in item.parents:
                if isinstance(parent, int):
                    parent_ids.append(parent)
                elif parent._creation is not None and id(parent._creation) in positions:
                    batch_parents.append(positions[id(parent._creation)])
                elif parent.task_id is not None:
                    parent_ids.append(parent.task_id)
                else:
                    broken = parent
                    break
            if broken is not None:
                reason = broken.creation_error()
                item.fail(
                    UnknownParent(
                        f"parent {broken!r} was not created"
                        + (f": {type(reason).__name__}: {reason}" if reason else "")
                    )
                )
                continue
            item.parent_ids = _unique(parent_ids)
            positions[id(item)] = len(tasks)
            tasks.append(
                dataclasses.replace(
                    item.task,
                    parent_ids=item.parent_ids,
                    batch_parents=_unique(batch_parents),
                )
            )
            written.append(item)
        if not tasks:
            return
        try:
            ids = await self._storage.repository.create_tasks(tasks)
        except Exception as exc:
            await self._isolate(written, exc)
            return
        hooks = self._storage.hooks
        if hooks.has(Moment.POST_CREATE):
            await _run_in_contexts(
                [
                    (item.hook_context(), hooks.run_post_create(task, task_id))
                    for item, task, task_id in zip(written, tasks, ids, strict=True)
                ]
            )
        for item, task_id in zip(written, ids, strict=True):
            # Settled now, not when the ref is first awaited: a child in a later group of
            # this round reads it (`parent.task_id` above).
            item.settle(task_id)

    async def _isolate(self, items: list[PendingCreation], exc: Exception) -> None:
        """``items`` failed together with ``exc``: fail only the tasks that caused it."""
        repository = self._storage.repository
        if isinstance(exc, UnknownParent):
            wanted = {pid for item in items for pid in item.parent_ids}
            try:
                existing = await repository.get_states(list(wanted)) if wanted else {}
            except Exception:
                existing = None
            if existing is not None:
                missing = wanted - existing.keys()
                culprits = [i for i in items if missing.intersection(i.parent_ids)]
                if culprits:
                    for item in culprits:
                        gone = sorted(missing.intersection(item.parent_ids))
                        item.fail(UnknownParent(f"parent task {gone[0]} does not exist"))
                    await self._write_group([i for i in items if not i.done()])
                    return
        if len(items) == 1:
            items[0].fail(exc)
            return
        if isinstance(exc, RepositoryError) or not isinstance(exc, InvalidTaskError):
            # Tell a down database from a refused row before bisecting a batch: a cheap
            # read that fails too means every half would fail the same way.
            try:
                await repository.get_states([0])
            except Exception:
                for item in items:
                    item.fail(exc)
                return
        middle = len(items) // 2
        # The first half goes first: its ids are known when the second half's children,
        # which may point at it, are resolved.
        await self._write_group(items[:middle])
        await self._write_group([i for i in items[middle:] if not i.done()])


def _fail_unsettled(
    writer: asyncio.Future[None], what: str, items: Sequence[PendingCreation]
) -> bool:
    """Fail ``items`` if ``writer`` (``what``: the flusher, an early write) was cancelled or
    crashed, and say whether it was.

    ``_write_batch`` catches every error of a write, so that is a bug or a loop shutdown:
    the creations it had not settled fail rather than let ``get_task_id()`` hang."""
    error: BaseException
    if writer.cancelled():
        error = QueueClosed(f"the task was not created: {what} was cancelled")
    elif (exc := writer.exception()) is not None:
        logger.opt(exception=exc).critical("taskqueue: {} crashed", what)
        error = RepositoryError(f"the task was not created: {type(exc).__name__}: {exc}")
    else:
        return False
    for item in items:
        item.fail(error)
    return True


async def _run_in_contexts(
    jobs: list[tuple[contextvars.Context, Coroutine[Any, Any, None]]],
) -> None:
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(job, context=context, name="taskqueue-creation-hooks")
        for context, job in jobs
    ]
    # The hook runners never raise (HookRegistry.run logs hook errors).
    await asyncio.gather(*tasks)


async def _parent_id(parent: TaskRef | int) -> int:
    if isinstance(parent, int):
        return parent
    try:
        return await parent.get_task_id()
    except (InvalidTaskError, QueueClosed) as exc:
        raise UnknownParent(f"parent {parent!r} was not created: {exc}") from exc


def _unique(values: list[int]) -> tuple[int, ...]:
    return tuple(unique(values))
