"""The release of a big fan-out, chunk by chunk.

A task done with more than ``RELEASE_CHUNK`` children does not release them in the statement
that completes it (``COMPLETE_SQL``): that statement stores its first child's id as its
``release_next``, and the repository's ``Releaser`` then releases them in the background,
one chunk per statement, each committed on its own. The first children are claimed and run
while the others are still being released, and the worker writes its next outcomes
meanwhile, instead of after one statement that updates tens of thousands of rows.
``release_next`` makes every chunk exactly-once (see ``RELEASE_SQL``), so a worker and the
reaper may both work on one release.

A worker that dies (or loses its database) between two chunks leaves ``release_next`` set;
``finish_left`` (run by the reaper, after ``rescue_stale``) finishes those releases once their
task has been done for longer than a worker may take, ``stale_before``."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from taskqueue_core.exceptions import RepositoryError
from taskqueue_core.limits import utc
from taskqueue_core.tortoise.postgres.cascades import GUARD_ROUNDS
from taskqueue_core.tortoise.postgres.connections import fetchrow
from taskqueue_core.tortoise.postgres.events import emit_local
from taskqueue_core.tortoise.postgres.statements import RELEASE_SQL, RELEASES_LEFT_SQL

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository

logger = logging.getLogger("taskqueue.postgres")


async def release_rest(repo: PostgresRepository, conn: asyncpg.Connection, task_id: int) -> None:
    """Release the children of done task ``task_id`` from its ``release_next`` on, chunk after
    chunk, until none is left (or another releaser has finished).

    Raises the driver's error if a statement fails: what was committed stays, and the rest
    is left to another call (``finish_left``).
    """
    contended = 0
    while contended < GUARD_ROUNDS:
        row = await fetchrow(conn, RELEASE_SQL, task_id, repo._notify)
        emit_local(repo, ready=row["ready"])
        if not row["found"] or (row["moved"] and row["next"] is None):
            return
        # Not moved: the parent row changed since the snapshot (a new child, or another
        # releaser's chunk); run again with a fresh one.
        contended = 0 if row["moved"] else contended + 1
    logger.warning("the release of the children of task %s gave up on contention", task_id)


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
        """Release the children of ``task_ids`` (done, ``release_next`` set) from now on."""
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
                    await release_rest(self._repo, conn, task_id)
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
            await release_rest(repo, conn, task_id)
    return task_ids
