"""The release of a big fan-out, chunk by chunk.

A task done with more than ``RELEASE_CHUNK`` children does not release them in the statement
that completes it (``COMPLETE_SQL``): that statement stores its first child's id as its
``release_next``. ``start`` then releases a first small chunk on the same connection, and the
repository's ``Releaser`` the rest in the background, one chunk per statement, each committed
on its own. The first children are claimed and run while the others are still being
released, and the worker writes its next outcomes meanwhile, instead of after one statement
that updates tens of thousands of rows. ``release_next`` makes every chunk exactly-once (see
``RELEASE_SQL``), so a worker and the reaper may both work on one release.

A worker that dies (or loses its database) between two chunks leaves ``release_next`` set;
``finish_left`` (run by the reaper, after ``rescue_stale``) finishes those releases once their
task has been done for longer than a worker may take, ``stale_before``."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from taskqueue_core.exceptions import RepositoryError
from taskqueue_core.limits import utc
from taskqueue_core.tortoise.postgres.cascades import GUARD_ROUNDS
from taskqueue_core.tortoise.postgres.connections import DRIVER_ERRORS, fetchrow
from taskqueue_core.tortoise.postgres.events import emit_local
from taskqueue_core.tortoise.postgres.statements import (
    RELEASE_CHUNK,
    RELEASE_SQL,
    RELEASES_LEFT_SQL,
)

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository

logger = logging.getLogger("taskqueue.postgres")


FIRST_CHUNK = 100
"""The first chunk of a release, written by the worker right after its parent's outcome, on
the same connection: those children are ready a few milliseconds after their parent."""

RAMP = (300,)
"""The sizes of the next chunks, before ``RELEASE_CHUNK`` each: the first children run while
bigger chunks follow."""


async def release_chunks(
    repo: PostgresRepository, conn: asyncpg.Connection, task_id: int, sizes: Iterator[int]
) -> bool:
    """Release the children of done task ``task_id`` from its ``release_next`` on, a chunk of
    each size ``sizes`` gives in turn; return True once none is left (or another releaser
    has finished), False when ``sizes`` runs out first (or on endless contention, logged).

    Raises the driver's error if a statement fails: what was committed stays, and the rest
    is left to another call (``finish_left``).
    """
    size = next(sizes, None)
    contended = 0
    while size is not None:
        row = await fetchrow(conn, RELEASE_SQL, task_id, size, repo._notify)
        emit_local(repo, ready=row["ready"])
        if not row["found"] or (row["moved"] and row["next"] is None):
            return True
        if row["moved"]:
            contended = 0
            size = next(sizes, None)
            continue
        # The parent row changed since the snapshot (a new child, or another releaser's
        # chunk): run again with a fresh one.
        contended += 1
        if contended >= GUARD_ROUNDS:
            logger.warning("the release of the children of task %s gave up on contention", task_id)
            break
    return False


def after_first() -> Iterator[int]:
    """The chunk sizes after ``FIRST_CHUNK``: ``RAMP``, then ``RELEASE_CHUNK`` for ever."""
    return itertools.chain(RAMP, itertools.repeat(RELEASE_CHUNK))


async def start(
    repo: PostgresRepository, conn: asyncpg.Connection, task_ids: Sequence[int]
) -> None:
    """Right after the outcomes of ``task_ids`` were committed on ``conn``: release each one's
    first chunk there, and hand the rest to the repository's ``Releaser``.

    Never raises for the database: the outcomes are committed, so the caller must not see
    a failure (the ``Releaser``, or the reaper, goes on from where this stopped).
    """
    rest: list[int] = []
    for task_id in task_ids:
        try:
            if not await release_chunks(repo, conn, task_id, iter((FIRST_CHUNK,))):
                rest.append(task_id)
        except DRIVER_ERRORS as exc:
            logger.warning("releasing the children of task %s: %s", task_id, exc)
            rest.append(task_id)
    if rest:
        repo._releaser.add(rest)


class Releaser:
    """Runs the chunks of big releases in the background, one release at a time, on a pooled
    connection, so that the worker's next outcomes are not written after a release's last
    chunk but while it goes on.

    ``add`` is called right after the outcomes that started the releases were committed;
    ``settled`` waits until every release handed over so far is finished (``close`` of the
    repository awaits it). A release that fails is logged and left to the reaper
    (``finish_left``): its outcome is committed, so nothing is lost, only later.
    """

    def __init__(self, repo: PostgresRepository) -> None:
        self._repo = repo
        self._waiting: collections.deque[int] = collections.deque()
        self._runner: asyncio.Task[None] | None = None

    def add(self, task_ids: Sequence[int]) -> None:
        """Release the children of ``task_ids`` (done, ``release_next`` set, their first chunk
        released: see ``start``) from now on."""
        self._waiting.extend(task_ids)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="taskqueue-releases"
            )

    async def settled(self) -> None:
        """Return when no release handed to ``add`` is left."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        while self._waiting:
            task_id = self._waiting.popleft()
            try:
                async with self._repo._connection() as conn:
                    await release_chunks(self._repo, conn, task_id, after_first())
            except RepositoryError as exc:
                logger.warning(
                    "releasing the children of task %s stopped (%s); the reaper finishes it",
                    task_id,
                    exc,
                )
            except Exception:
                logger.exception(
                    "releasing the children of task %s failed; the reaper finishes it", task_id
                )


async def finish_left(repo: PostgresRepository, stale_before: datetime) -> list[int]:
    """Finish the releases of tasks done before ``stale_before`` whose children are not all
    released yet; return those tasks' ids. A hundred releases per call, oldest ids first."""
    async with repo._connection() as conn:
        task_ids: list[int] = [r[0] for r in await conn.fetch(RELEASES_LEFT_SQL, utc(stale_before))]
        for task_id in task_ids:
            await release_chunks(repo, conn, task_id, itertools.repeat(RELEASE_CHUNK))
    return task_ids
