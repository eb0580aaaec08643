"""One measured step, in a process of its own: ``python -m benchmarks.runner JSON``.

The process imports everything it needs, prints ``ready``, and starts its clock only when the
harness writes ``go`` on its standard input, so imports are never timed (every system opens
its connections inside the timed step).
It prints one JSON line with the wall time, its own CPU time (rusage) and what it ran.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
import time
from typing import Any

from benchmarks.systems import RECORDER, SYSTEMS


async def step(spec: dict[str, Any]) -> dict[str, Any]:
    system = SYSTEMS[spec["system"]]()
    dsn: str = spec["dsn"]
    keys = list(range(spec["start"], spec["start"] + spec["count"]))
    role: str = spec["role"]
    # Imports of the system happen before "ready", so they are not timed.
    if spec["system"] == "taskqueue":
        import taskqueue_core
        import taskqueue_core.tortoise.postgres  # noqa: F401
    elif spec["system"] == "pgqueuer":
        import pgqueuer  # noqa: F401
    # What the imports left for the garbage collector is collected now, before the clock, for
    # every system alike: otherwise the first full collection of a measured step walks it and
    # charges the imports' garbage to the step (10 to 15 ms with Tortoise loaded, about 5% of
    # a bulk enqueue of 20,000). Collections caused by the step itself are still timed.
    gc.collect()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected go")
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if role == "enqueue_one":
        await system.enqueue_one(dsn, keys)
    elif role == "produce_paced":
        await system.enqueue_one(dsn, keys, t0=True, rate=spec["rate"])
    elif role == "enqueue_bulk":
        await system.enqueue_bulk(dsn, keys, spec.get("chunk", 1000))
    elif role == "enqueue_burst":
        await system.enqueue_burst(dsn, keys)
    elif role == "enqueue_variant":
        await system.enqueue_variant(dsn, keys, spec["variant"])
    elif role == "drain":
        RECORDER.expected = spec["count"]
        await system.drain(dsn, spec["count"], spec["concurrency"], spec.get("variant", ""))
    else:
        raise SystemExit(f"unknown role {role}")
    elapsed = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    result: dict[str, Any] = {"elapsed": elapsed, "cpu": cpu}
    if role == "drain":
        seen = RECORDER.keys
        result["ran"] = len(seen)
        result["distinct"] = len(set(seen))
        result["missing"] = len(set(keys) - set(seen))
        result["latencies"] = RECORDER.latencies
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = asyncio.run(step(spec))
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
