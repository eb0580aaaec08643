"""Drain throughput: how fast one burst worker empties a queue of no-op tasks.

Usage (creates and drops its own database on the test server)::

    python -m tests.execution.drain --tasks 20000 --slots 10 [--backend postgres|sqlite|memory]
        [--profile] [--async-commit] [--no-notify]

``--async-commit`` sets ``synchronous_commit = off`` on the benchmark database, to show how
much of the time goes to the WAL flush of each claim and completion.

Prints tasks per second for the drain alone (the tasks are created first, in bulk).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
import warnings

from taskqueue_core.config import QueueConfig
from taskqueue_core.hooks import HookRegistry
from taskqueue_core.memory import InMemoryRepository
from taskqueue_core.queue import TaskCall, TaskQueue
from taskqueue_core.worker import Worker
from tests.conftest import _admin, create_database, database_url, drop_database
from tests.execution.conftest import CountingRepository
from tests.execution.tasks import noop


async def drain(
    backend: str, n: int, slots: int, profile: bool, async_commit: bool, notify: bool = True
) -> float:
    name: str | None = None
    tmp = tempfile.TemporaryDirectory()
    if backend == "postgres":
        from taskqueue_core.tortoise.postgres import PostgresRepository
        from taskqueue_core.tortoise.schema import migrate

        name = await create_database()
        url = database_url(name)
        await migrate(url)
        if async_commit:
            await _admin(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        repository: object = PostgresRepository(url, use_notify=notify)
    elif backend == "sqlite":
        from taskqueue_core.tortoise.sqlite import SqliteRepository

        url = f"sqlite://{tmp.name}/drain.sqlite3"
        repository = SqliteRepository(url)
    else:
        url = "memory://"
        repository = InMemoryRepository()
    config = QueueConfig(database_url=url, max_workers=slots, secret_key="drain")
    counted = CountingRepository(repository)
    queue = TaskQueue(config, repository=counted, hooks=HookRegistry())  # type: ignore[arg-type]
    try:
        async with queue:
            for start in range(0, n, 5000):
                await queue.enqueue_many([TaskCall(noop) for _ in range(min(5000, n - start))])
            worker = Worker(queue, concurrency=slots)
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            began = time.perf_counter()
            await worker.run(burst=True)
            elapsed = time.perf_counter() - began
            if profiler is not None:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            for verb in ("claim_tasks", "complete_tasks"):
                sizes = counted.sizes.get(verb, [])
                print(f"{verb}: {len(sizes)} calls, {sum(sizes) / max(len(sizes), 1):.1f} per call")
            stats = await queue.stats()
            assert stats.by_state.get("done", 0) == n, stats.by_state
    finally:
        if name is not None:
            await drop_database(name)
        tmp.cleanup()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "memory"], default="postgres")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--async-commit", action="store_true")
    parser.add_argument("--no-notify", action="store_true", help="PostgreSQL without LISTEN")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rate = asyncio.run(
        drain(
            args.backend,
            args.tasks,
            args.slots,
            args.profile,
            args.async_commit,
            notify=not args.no_notify,
        )
    )
    print(
        f"drained {args.tasks} no-op tasks with {args.slots} slots on {args.backend}: "
        f"{rate:,.0f} tasks/s"
    )


if __name__ == "__main__":
    main()
