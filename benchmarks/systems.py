"""The systems under benchmark, each behind the same small adapter.

An adapter knows how to prepare a fresh database for its system, enqueue jobs (one at a time,
in bulk) and drain them with one worker process. Every job carries an integer key; the worker
records the keys it ran so the harness can check that every job ran exactly once.

Adapters are imported in the benchmark's own subprocesses only, so a system's imports are not
paid inside another system's measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import asyncpg


class Recorder:
    """What a worker saw: keys run (in order) and per-key start latencies."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.latencies: list[float] = []
        self.expected = 0
        self.done = asyncio.Event()

    def ran(self, key: int, enqueued_at: float | None = None) -> None:
        self.keys.append(key)
        if enqueued_at is not None:
            self.latencies.append(time.time() - enqueued_at)
        if len(self.keys) >= self.expected:
            self.done.set()


RECORDER = Recorder()


async def paced(keys: list[int], rate: float | None) -> AsyncIterator[int]:
    """Yield ``keys``, at ``rate`` per second when given (on a fixed schedule, not drifting)."""
    start = time.perf_counter()
    for i, key in enumerate(keys):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        yield key


class System(Protocol):
    name: str

    async def prepare(self, dsn: str) -> None: ...
    async def enqueue_one(self, dsn: str, keys: list[int]) -> None: ...
    async def enqueue_bulk(self, dsn: str, keys: list[int], chunk: int) -> None: ...
    async def drain(self, dsn: str, count: int, concurrency: int, variant: str) -> None: ...


# -- raw asyncpg baseline -------------------------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE raw_jobs (
    id bigserial PRIMARY KEY,
    key int NOT NULL,
    t0 double precision,
    state text NOT NULL DEFAULT 'queued',
    worker text
);
CREATE INDEX raw_jobs_ready ON raw_jobs (id) WHERE state = 'queued';
"""


class RawSystem:
    """A minimal asyncpg queue: claim batches with SKIP LOCKED, complete with = ANY($1)."""

    name = "raw"

    async def prepare(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(RAW_SCHEMA)
        finally:
            await conn.close()

    async def enqueue_one(
        self, dsn: str, keys: list[int], t0: bool = False, rate: float | None = None
    ) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            async for key in paced(keys, rate):
                await conn.execute(
                    "INSERT INTO raw_jobs (key, t0) VALUES ($1, $2)",
                    key,
                    time.time() if t0 else None,
                )
        finally:
            await conn.close()

    async def enqueue_bulk(self, dsn: str, keys: list[int], chunk: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for i in range(0, len(keys), chunk):
                await conn.execute(
                    "INSERT INTO raw_jobs (key) SELECT unnest($1::int[])", keys[i : i + chunk]
                )
        finally:
            await conn.close()

    async def drain(self, dsn: str, count: int, concurrency: int, variant: str) -> None:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        queue: asyncio.Queue[tuple[int, int, float | None]] = asyncio.Queue()
        finished: list[int] = []
        flush_now = asyncio.Event()
        wake = asyncio.Event()
        wake.set()
        inflight = 0

        async def claimer() -> None:
            nonlocal inflight
            while not RECORDER.done.is_set():
                free = concurrency - inflight
                if free <= 0:
                    wake.clear()
                    await wake.wait()
                    continue
                rows = await pool.fetch(
                    "UPDATE raw_jobs SET state = 'doing' WHERE id IN ("
                    " SELECT id FROM raw_jobs WHERE state = 'queued' ORDER BY id"
                    " LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, key, t0",
                    free,
                )
                if not rows:
                    if variant == "latency":
                        await asyncio.sleep(0.001)
                        continue
                    await asyncio.sleep(0.005)
                    continue
                inflight += len(rows)
                for row in rows:
                    queue.put_nowait((row["id"], row["key"], row["t0"]))

        async def slot() -> None:
            nonlocal inflight
            while True:
                job_id, key, t0 = await queue.get()
                RECORDER.ran(key, t0)
                finished.append(job_id)
                inflight -= 1
                wake.set()
                flush_now.set()

        async def completer() -> None:
            while True:
                await flush_now.wait()
                flush_now.clear()
                if finished:
                    ids = finished[:]
                    finished.clear()
                    await pool.execute(
                        "UPDATE raw_jobs SET state = 'done' WHERE id = ANY($1::bigint[])", ids
                    )

        tasks = [asyncio.create_task(claimer(), name="raw-claimer")]
        tasks += [asyncio.create_task(slot(), name=f"raw-slot-{i}") for i in range(concurrency)]
        tasks.append(asyncio.create_task(completer(), name="raw-completer"))
        await RECORDER.done.wait()
        while finished:
            ids = finished[:]
            finished.clear()
            await pool.execute(
                "UPDATE raw_jobs SET state = 'done' WHERE id = ANY($1::bigint[])", ids
            )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


# -- pgqueuer -------------------------------------------------------------------------------


class PgqueuerSystem:
    """pgqueuer, as its documentation sets it up: QueueManager over one asyncpg connection."""

    name = "pgqueuer"

    async def prepare(self, dsn: str) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def enqueue_one(
        self, dsn: str, keys: list[int], t0: bool = False, rate: float | None = None
    ) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            async for key in paced(keys, rate):
                payload = f"{key}:{time.time()}" if t0 else str(key)
                await queries.enqueue("noop", payload.encode())
        finally:
            await conn.close()

    async def enqueue_bulk(self, dsn: str, keys: list[int], chunk: int) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            for i in range(0, len(keys), chunk):
                part = keys[i : i + chunk]
                await queries.enqueue(
                    ["noop"] * len(part), [str(k).encode() for k in part], [0] * len(part)
                )
        finally:
            await conn.close()

    async def drain(self, dsn: str, count: int, concurrency: int, variant: str) -> None:
        from pgqueuer import AsyncpgDriver, Queries, QueueManager
        from pgqueuer.models import Job

        conn = await asyncpg.connect(dsn)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            raw = (job.payload or b"").decode()
            if ":" in raw:
                key, t0 = raw.split(":")
                RECORDER.ran(int(key), float(t0))
            else:
                RECORDER.ran(int(raw))
            if RECORDER.done.is_set():
                qm.shutdown.set()

        await qm.run(batch_size=concurrency)
        await conn.close()


# -- taskqueue ------------------------------------------------------------------------------


async def tq_noop(key: int, t0: float | None = None) -> None:
    """The benchmark's no-op task."""
    RECORDER.ran(key, t0)


async def tq_context_and_logs(key: int) -> None:
    """Workload D: three context writes and two log lines per task."""
    from taskqueue_core import getLogger, set_context

    log = getLogger("bench")
    set_context("step", "start")
    log.info("started")
    set_context("progress", 50)
    set_context("step", "end")
    log.info("finished")
    RECORDER.ran(key)


def tq_config(dsn: str, **extra: Any) -> Any:
    from taskqueue_core import QueueConfig

    return QueueConfig(
        database_url=dsn.replace("postgresql://", "postgres://", 1),
        secret_key="benchmark-secret",
        **extra,
    )


class TaskqueueSystem:
    """taskqueue on PostgreSQL."""

    name = "taskqueue"

    def __init__(self) -> None:
        # The runner builds the adapter before its clock starts. TaskQueue.open() imports the
        # Tortoise context, the asyncpg backend and the schema module on first use (~20 ms);
        # import them here so that, as for the other systems, no import is timed.
        import tortoise.backends.asyncpg
        import tortoise.context  # noqa: F401

        import taskqueue_core.tortoise.schema  # noqa: F401

    async def prepare(self, dsn: str) -> None:
        from taskqueue_core.tortoise.schema import migrate

        await migrate(dsn.replace("postgresql://", "postgres://", 1))

    async def enqueue_one(
        self, dsn: str, keys: list[int], t0: bool = False, rate: float | None = None
    ) -> None:
        from taskqueue_core import TaskQueue

        async with TaskQueue(tq_config(dsn)) as queue:
            async for key in paced(keys, rate):
                if t0:
                    await queue.enqueue(tq_noop, key, time.time())
                else:
                    await queue.enqueue(tq_noop, key)

    async def enqueue_bulk(self, dsn: str, keys: list[int], chunk: int) -> None:
        from taskqueue_core import TaskCall, TaskQueue

        async with TaskQueue(tq_config(dsn)) as queue:
            for i in range(0, len(keys), chunk):
                await queue.enqueue_many([TaskCall(tq_noop, (k,)) for k in keys[i : i + chunk]])

    async def enqueue_burst(self, dsn: str, keys: list[int]) -> None:
        from taskqueue_core import TaskQueue

        async with TaskQueue(tq_config(dsn)) as queue:
            refs = [queue.add_task(tq_noop, key) for key in keys]
            for ref in refs:
                await ref.get_task_id()

    async def enqueue_variant(self, dsn: str, keys: list[int], variant: str) -> None:
        from taskqueue_core import TaskCall, TaskQueue

        func: Callable[..., Any] = tq_context_and_logs if variant == "context" else tq_noop
        async with TaskQueue(tq_config(dsn)) as queue:
            if variant == "chain":
                previous = None
                for key in keys:
                    previous = await queue.enqueue(tq_noop, key, parent=previous)
            elif variant == "fanout":
                parent = await queue.enqueue(tq_noop, keys[0])
                rest = keys[1:]
                for i in range(0, len(rest), 1000):
                    await queue.enqueue_many(
                        [TaskCall(tq_noop, (k,), parent=parent) for k in rest[i : i + 1000]]
                    )
            else:
                for i in range(0, len(keys), 1000):
                    await queue.enqueue_many([TaskCall(func, (k,)) for k in keys[i : i + 1000]])

    async def drain(self, dsn: str, count: int, concurrency: int, variant: str) -> None:
        from taskqueue_core import TaskQueue, Worker

        if variant == "quiet":
            # Workload D2: no console handler, so a task's log lines are only stored; the
            # worker puts its storing sink back when it starts.
            from loguru import logger

            logger.remove()
        config = tq_config(dsn, max_workers=concurrency)
        async with TaskQueue(config) as queue:
            worker = Worker(queue, concurrency=concurrency)
            runner = asyncio.create_task(worker.run(), name="bench-worker")
            done = asyncio.create_task(RECORDER.done.wait(), name="bench-done")
            await asyncio.wait({runner, done}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()  # a crashed worker fails the benchmark loudly
            await worker.stop(grace=10)
            await runner


SYSTEMS: dict[str, type] = {
    "taskqueue": TaskqueueSystem,
    "pgqueuer": PgqueuerSystem,
    "raw": RawSystem,
}
