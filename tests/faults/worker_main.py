"""A worker process for the fault tests: ``python -m tests.faults.worker_main [--processes N]``.

Configured by ``QUEUE_*`` environment variables like ``taskq start``; runs a ``WorkerPool``
that owns SIGTERM/SIGINT until it is stopped, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio

from taskqueue_core.config import QueueConfig
from taskqueue_core.pool import WorkerPool
from taskqueue_core.queue import TaskQueue


async def run(processes: int) -> None:
    async with TaskQueue(QueueConfig.from_env()) as queue:
        pool = WorkerPool(queue, processes=processes, install_signal_handlers=True)
        await pool.run_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args.processes))


if __name__ == "__main__":
    main()
