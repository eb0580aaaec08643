"""Side-by-side benchmarks: ``python -m benchmarks`` (or ``nox -s bench``).

Every measured step runs in a subprocess of its own (``benchmarks.runner``) on a fresh database;
systems are interleaved inside every repetition so that drift of the machine hits them alike;
ratios between systems are computed per repetition and then summarised by their median.
Results go to ``benchmarks/results/latest.json`` and a chart to ``benchmarks/results/latest.png``
(``partial.*`` for a run limited by ``--only`` or ``--systems``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.systems import SYSTEMS

SERVER = os.environ.get("QUEUE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).parent / "results"


def dsn_for(name: str) -> str:
    return SERVER.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0] + "/" + name


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(dsn_for("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_created: set[str] = set()
"""Databases this run created and has not dropped yet."""


TREE = Path(__file__).parent.parent
"""The source tree whose code the measured steps run (``sidebyside`` passes another)."""

_PREPARE = (
    "import asyncio, sys\n"
    "from benchmarks.systems import SYSTEMS\n"
    "asyncio.run(SYSTEMS[sys.argv[1]]().prepare(sys.argv[2]))\n"
)
"""Prepares a database with another tree's code (its schema may differ from this one's)."""


async def fresh_database(system: str, tree: Path = TREE) -> tuple[str, str]:
    name = f"tq_bench_{uuid.uuid4().hex[:10]}"
    _created.add(name)
    await admin(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(name)
    if tree == TREE:
        await SYSTEMS[system]().prepare(dsn)
    else:
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _PREPARE, system, dsn],
            cwd=tree,
            check=True,
            capture_output=True,
        )
    return name, dsn


async def drop_database(name: str) -> None:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _created.discard(name)


async def db_stats(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return dict(row)


class Step:
    """A runner subprocess: started, waited on until ready, released with ``go``.

    Its standard error goes to a file, not to the terminal: a system that logs to the console
    (workload D logs two lines per task) would otherwise be timed writing to whatever
    terminal runs the benchmark. The file's end is shown when the step fails.
    """

    def __init__(self, spec: dict[str, Any], tree: Path = TREE) -> None:
        self.what = f"{spec['system']}/{spec['role']}"
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.runner", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            # The tree's own ``benchmarks`` and ``taskqueue_core`` come first on sys.path.
            cwd=tree,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"runner for {self.what} failed: {line!r}{self.errors()}")

    def errors(self) -> str:
        """The last lines the runner wrote to its standard error (for failure messages)."""
        self.stderr.seek(0)
        tail = self.stderr.read()[-3000:]
        return f"\n--- {self.what} stderr (end) ---\n{tail}" if tail.strip() else ""

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 600) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
            if self.proc.returncode != 0:
                raise RuntimeError(
                    f"runner for {self.what} exited {self.proc.returncode}{self.errors()}"
                )
            for line in out.splitlines():
                if line.startswith("result "):
                    return dict(json.loads(line[len("result ") :]))
            raise RuntimeError(f"runner for {self.what} printed no result{self.errors()}")
        finally:
            self.stderr.close()


def run_step(spec: dict[str, Any], tree: Path = TREE) -> dict[str, Any]:
    """Run one step with the code of ``tree`` and return its result."""
    step = Step(spec, tree)
    step.go()
    return step.result()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float | None:
    """CPU seconds a local PostgreSQL process has used (None: gone, or not a local server)."""
    try:
        with open(f"/proc/{pid}/comm") as comm:
            if not comm.read().startswith("postgres"):
                return None
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


class ServerCpu:
    """CPU the database server spends on a step's connections, when the server is local.

    The CPU of a queue is as much in the server as in the worker (2 cores, one machine), so a
    drain reports both. The backends connected to the step's database are polled every
    ``INTERVAL`` seconds and each one's last reading kept: a connection that closes between
    two polls loses at most one interval of its CPU. ``seconds`` is None for a remote server.
    """

    INTERVAL = 0.05

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._seen: dict[int, float] = {}
        self._stop = asyncio.Event()
        self._job: asyncio.Task[None] | None = None
        self._local = True

    async def __aenter__(self) -> ServerCpu:
        conn = await asyncpg.connect(self.dsn)
        own = conn.get_server_pid()
        self._local = _process_cpu(own) is not None
        self._job = asyncio.create_task(self._poll(conn, own), name="bench-server-cpu")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._job is not None:
            await self._job

    async def _poll(self, conn: asyncpg.Connection, own: int) -> None:
        try:
            while not self._stop.is_set():
                if self._local:
                    rows = await conn.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    )
                    for (pid,) in rows:
                        cpu = _process_cpu(pid) if pid != own else None
                        if cpu is not None:
                            self._seen[pid] = max(self._seen.get(pid, 0.0), cpu)
                try:
                    await asyncio.wait_for(self._stop.wait(), self.INTERVAL)
                except TimeoutError:
                    pass
        finally:
            await conn.close()

    @property
    def seconds(self) -> float | None:
        return sum(self._seen.values()) if self._local else None


def check_exactly_once(system: str, workload: str, res: dict[str, Any], count: int) -> None:
    if res["ran"] != count or res["distinct"] != count or res["missing"]:
        raise RuntimeError(
            f"{system}/{workload}: ran {res['ran']}, distinct {res['distinct']}, "
            f"missing {res['missing']} of {count}: not exactly once"
        )


async def measure(system: str, workload: str, n: int, tree: Path = TREE) -> dict[str, Any]:
    """One measurement of one workload for one system, on a fresh database, with the code of
    ``tree`` (a checkout of this repository)."""
    name, dsn = await fresh_database(system, tree)

    base = {"system": system, "dsn": dsn, "start": 0}
    try:
        if workload.startswith("A"):
            role = {"A1": "enqueue_one", "A2": "enqueue_bulk", "A3": "enqueue_burst"}[workload]
            res = await asyncio.to_thread(run_step, {**base, "role": role, "count": n}, tree)
            return {"rate": n / res["elapsed"], **res}
        if workload in {"B", "D", "D2", "F"}:
            variant = {"B": "plain", "D": "context", "D2": "context", "F": "plain"}[workload]
            if workload == "F":
                await prefill_finished(system, dsn, 1_000_000)
                n = 100_000
            if system == "taskqueue":
                await asyncio.to_thread(
                    run_step,
                    {**base, "role": "enqueue_variant", "count": n, "variant": variant},
                    tree,
                )
            else:
                await asyncio.to_thread(
                    run_step, {**base, "role": "enqueue_bulk", "count": n}, tree
                )
            before = await db_stats(dsn)
            async with ServerCpu(dsn) as server:
                drain = {**base, "role": "drain", "count": n, "concurrency": 10}
                if workload == "D2":
                    drain["variant"] = "quiet"
                res = await asyncio.to_thread(run_step, drain, tree)
            after = await db_stats(dsn)
            check_exactly_once(system, workload, res, n)
            delta = {k: after[k] - before[k] for k in before}
            res.pop("latencies", None)
            if server.seconds is not None:
                res["server_cpu_per_task_us"] = server.seconds / n * 1e6
            return {
                "rate": n / res["elapsed"],
                "cpu_per_task_us": res["cpu"] / n * 1e6,
                "xacts_per_task": delta["xact_commit"] / n,
                "rows_written_per_task": (
                    delta["tup_inserted"] + delta["tup_updated"] + delta["tup_deleted"]
                )
                / n,
                **res,
            }
        if workload == "C":
            count = 200
            worker = await asyncio.to_thread(
                Step,
                {**base, "role": "drain", "count": count, "concurrency": 10, "variant": "latency"},
                tree,
            )
            worker.go()
            await asyncio.sleep(1.0)  # let the idle worker settle into waiting for work
            await asyncio.to_thread(
                run_step, {**base, "role": "produce_paced", "count": count, "rate": 50}, tree
            )
            res = await asyncio.to_thread(worker.result)
            check_exactly_once(system, workload, res, count)
            lat = sorted(x * 1000 for x in res.pop("latencies"))
            return {
                "p50_ms": statistics.median(lat),
                "p95_ms": lat[int(len(lat) * 0.95) - 1],
                "max_ms": lat[-1],
                **res,
            }
        if workload in {"E1", "E2"}:
            count = 1000 if workload == "E1" else 10_001
            variant = "chain" if workload == "E1" else "fanout"
            await asyncio.to_thread(
                run_step,
                {**base, "role": "enqueue_variant", "count": count, "variant": variant},
                tree,
            )
            res = await asyncio.to_thread(
                run_step, {**base, "role": "drain", "count": count, "concurrency": 10}, tree
            )
            check_exactly_once(system, workload, res, count)
            res.pop("latencies", None)
            if workload == "E1":
                return {"ms_per_link": res["elapsed"] / count * 1000, **res}
            return {"rate": count / res["elapsed"], **res}
        raise ValueError(workload)
    finally:
        await drop_database(name)


async def prefill_finished(system: str, dsn: str, count: int) -> None:
    """Put ``count`` finished tasks in the table (workload F), without timing it."""
    conn = await asyncpg.connect(dsn)
    try:
        if system == "taskqueue":
            await conn.execute(
                """
                INSERT INTO queued_tasks (name, module_name, function_name, state, args, kwargs,
                    context, pending_parents, channel, priority, retry_count, max_retries,
                    date_enqueued, date_scheduled, date_started, date_done, date_ended)
                SELECT 'old', 'benchmarks.systems', 'tq_noop', 'done', '[0]', '{}', '{}', 0,
                    'default', 0, 0, 3, now(), now(), now(), now(), now()
                FROM generate_series(1, $1)
                """,
                count,
            )
        elif system == "raw":
            await conn.execute(
                "INSERT INTO raw_jobs (key, state) SELECT 0, 'done' FROM generate_series(1, $1)",
                count,
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


WORKLOADS: dict[str, tuple[str, list[str]]] = {
    "A1": ("enqueue one at a time (jobs/s)", ["taskqueue", "pgqueuer", "raw"]),
    "A2": ("enqueue in bulk, chunks of 1,000 (jobs/s)", ["taskqueue", "pgqueuer", "raw"]),
    "A3": ("add_task burst, then await every id (jobs/s)", ["taskqueue"]),
    "B": ("drain no-op tasks, 1 process, 10 slots (jobs/s)", ["taskqueue", "pgqueuer", "raw"]),
    "C": ("latency, idle worker, 50 tasks/s (ms)", ["taskqueue", "pgqueuer", "raw"]),
    "D": ("drain, 3 context writes + 2 log lines per task (jobs/s)", ["taskqueue"]),
    "D2": ("D without loguru's console handler: lines only stored (jobs/s)", ["taskqueue"]),
    "E1": ("chain of 1,000 tasks (ms per link)", ["taskqueue"]),
    "E2": ("one parent, 10,000 children (jobs/s)", ["taskqueue"]),
    "F": ("drain 100,000 beside 1,000,000 finished (jobs/s)", ["taskqueue", "raw"]),
}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians, min and max of each metric over the repetitions, and per-repetition ratios."""
    out: dict[str, Any] = {}
    for workload in WORKLOADS:
        rows = [r for r in runs if r["workload"] == workload]
        if not rows:
            continue
        entry: dict[str, Any] = {"title": WORKLOADS[workload][0], "systems": {}, "ratios": {}}
        for system in WORKLOADS[workload][1]:
            mine = [r["metrics"] for r in rows if r["system"] == system]
            if not mine:
                continue
            metrics: dict[str, Any] = {}
            for key in mine[0]:
                values = [m[key] for m in mine if isinstance(m.get(key), int | float)]
                if values:
                    metrics[key] = {
                        "median": statistics.median(values),
                        "min": min(values),
                        "max": max(values),
                    }
            entry["systems"][system] = metrics
        key = "rate" if workload not in {"C", "E1"} else None
        if key:
            reps = sorted({r["rep"] for r in rows})
            for a in WORKLOADS[workload][1]:
                for b in WORKLOADS[workload][1]:
                    if a == b:
                        continue
                    ratios = []
                    for rep in reps:
                        ra = [r for r in rows if r["rep"] == rep and r["system"] == a]
                        rb = [r for r in rows if r["rep"] == rep and r["system"] == b]
                        if ra and rb:
                            ratios.append(ra[0]["metrics"][key] / rb[0]["metrics"][key])
                    if ratios:
                        entry["ratios"][f"{a}/{b}"] = {
                            "median": statistics.median(ratios),
                            "min": min(ratios),
                            "max": max(ratios),
                        }
        out[workload] = entry
    return out


CROSS_RATIOS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "taskqueue D/B": (("taskqueue", "D"), ("taskqueue", "B")),
    "taskqueue D2/B": (("taskqueue", "D2"), ("taskqueue", "B")),
    "taskqueue E2/B": (("taskqueue", "E2"), ("taskqueue", "B")),
    "taskqueue F/B": (("taskqueue", "F"), ("taskqueue", "B")),
    "taskqueue A3/pgqueuer A2": (("taskqueue", "A3"), ("pgqueuer", "A2")),
}
"""Rates compared across workloads: (system, workload) over (system, workload)."""


def cross_ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``CROSS_RATIOS`` of the run, computed per repetition (both measured in it)."""
    rate = {
        (r["rep"], r["system"], r["workload"]): r["metrics"]["rate"]
        for r in runs
        if "rate" in r["metrics"]
    }
    reps = sorted({r["rep"] for r in runs})
    out: dict[str, Any] = {}
    for label, (top, bottom) in CROSS_RATIOS.items():
        ratios = [
            rate[(rep, *top)] / rate[(rep, *bottom)]
            for rep in reps
            if (rep, *top) in rate and (rep, *bottom) in rate
        ]
        if ratios:
            out[label] = {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
            }
    return out


def table(summary: dict[str, Any], cross: dict[str, Any]) -> str:
    lines = ["| workload | system | median | min-max | notes |", "|---|---|---|---|---|"]
    for workload, entry in summary.items():
        for system, metrics in entry["systems"].items():
            if workload == "C":
                value = (
                    f"p50 {metrics['p50_ms']['median']:.2f} / p95 {metrics['p95_ms']['median']:.2f}"
                    f" / max {metrics['max_ms']['median']:.2f}"
                )
                spread = f"p50 {metrics['p50_ms']['min']:.2f}-{metrics['p50_ms']['max']:.2f}"
            elif workload == "E1":
                value = f"{metrics['ms_per_link']['median']:.2f}"
                spread = f"{metrics['ms_per_link']['min']:.2f}-{metrics['ms_per_link']['max']:.2f}"
            else:
                value = f"{metrics['rate']['median']:,.0f}"
                spread = f"{metrics['rate']['min']:,.0f}-{metrics['rate']['max']:,.0f}"
            notes = []
            if "xacts_per_task" in metrics:
                server = metrics.get("server_cpu_per_task_us")
                notes.append(
                    f"{metrics['xacts_per_task']['median']:.3f} xact/task, "
                    f"{metrics['rows_written_per_task']['median']:.2f} rows/task, "
                    f"{metrics['cpu_per_task_us']['median']:.0f} us CPU/task"
                    + (f" + {server['median']:.0f} us server" if server else "")
                )
            notes += [
                f"{pair} {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
                for pair, r in entry["ratios"].items()
                if pair.startswith(system + "/")
            ]
            lines.append(
                f"| {workload} {entry['title']} | {system} | {value} | {spread} "
                f"| {'; '.join(notes)} |"
            )
    for pair, r in cross.items():
        lines.append(
            f"| {pair} | taskqueue | {r['median']:.2f}x | {r['min']:.2f}-{r['max']:.2f} | |"
        )
    return "\n".join(lines)


SYSTEM_COLORS = {"taskqueue": "#2b6cb0", "pgqueuer": "#dd6b20", "raw": "#718096"}


def chart(summary: dict[str, Any], path: Path) -> None:
    """Three panels: enqueue rates (A), drain rates (B, D, D2, E2, F), latency (C); medians with
    min-max whiskers, each bar labelled with its median (enqueue and drain rates differ by
    an order of magnitude, so they get an axis each)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return
    systems = ["taskqueue", "pgqueuer", "raw"]
    width = 0.27
    panels = [
        ("Enqueue (A)", [w for w in summary if w.startswith("A")]),
        ("Drain, 1 process, 10 slots", [w for w in summary if w in {"B", "D", "D2", "E2", "F"}]),
    ]
    panels = [(title, workloads) for title, workloads in panels if workloads]
    ratios = [max(len(workloads), 2) for _, workloads in panels] + [2]
    fig, axes = plt.subplots(
        1, len(ratios), figsize=(14, 5), gridspec_kw={"width_ratios": ratios}, squeeze=False
    )
    for ax, (title, workloads) in zip(axes[0], panels, strict=False):
        for i, system in enumerate(systems):
            xs, ys, lo, hi = [], [], [], []
            for j, w in enumerate(workloads):
                m = summary[w]["systems"].get(system)
                if m:
                    xs.append(j + (i - 1) * width)
                    ys.append(m["rate"]["median"])
                    lo.append(m["rate"]["median"] - m["rate"]["min"])
                    hi.append(m["rate"]["max"] - m["rate"]["median"])
            if xs:
                bars = ax.bar(
                    xs,
                    ys,
                    width,
                    label=system,
                    color=SYSTEM_COLORS[system],
                    yerr=[lo, hi],
                    capsize=3,
                )
                ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=7, padding=2)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads)
        ax.set_ylabel("jobs per second (median, min-max)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax2 = axes[0][-1]
    if "C" in summary:
        for i, system in enumerate(systems):
            m = summary["C"]["systems"].get(system)
            if m:
                vals = [m["p50_ms"]["median"], m["p95_ms"]["median"], m["max_ms"]["median"]]
                bars = ax2.bar(
                    [k + (i - 1) * width for k in range(3)],
                    vals,
                    width,
                    color=SYSTEM_COLORS[system],
                    label=system,
                )
                ax2.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=2)
        ax2.set_xticks(range(3))
        ax2.set_xticklabels(["p50", "p95", "max"])
        ax2.set_ylabel("ms from enqueue to start (median of runs)")
        ax2.set_title("Latency (C), idle worker")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot() -> None:
    """Redraw latest.md and latest.png from latest.json, without measuring anything."""
    doc = json.loads((RESULTS / "latest.json").read_text())
    # Recomputed from the measurements, so that a change of the analysis applies to them.
    doc["summary"] = summarise(doc["runs"])
    doc["cross"] = cross_ratios(doc["runs"])
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=1))
    text = table(doc["summary"], doc["cross"])
    load = doc["machine"].get("load_average_1min")
    if load:
        text += (
            f"\n\n{doc['reps']} repetition(s); 1-minute load average before each measurement: "
            f"{load['min']:.2f}-{load['max']:.2f} on {doc['machine']['cpus']} CPUs.\n"
        )
    (RESULTS / "latest.md").write_text(text)
    chart(doc["summary"], RESULTS / "latest.png")
    print(text)


ATTEMPTS = 3
"""Tries of one measurement: one the server's restart interrupted is discarded and repeated."""


async def server_is_up(timeout: float = 120.0) -> None:
    """Wait until the server accepts connections again (a restart takes seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn_for("postgres"), timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
        else:
            await conn.close()
            return


async def measure_again_if_interrupted(system: str, workload: str, n: int) -> dict[str, Any]:
    """``measure``, repeated when it fails because the server went away meanwhile.

    The machine may be shared with test suites that restart PostgreSQL. A measurement that
    overlapped a restart says nothing about the system; one that fails while the server is
    up is a real failure and is raised at once.
    """
    for attempt in range(1, ATTEMPTS + 1):
        started = await server_start_time()
        try:
            return await measure(system, workload, n)
        except Exception as exc:
            await server_is_up()
            if attempt == ATTEMPTS or await server_start_time() == started:
                raise
            print(
                f"{system}/{workload}: the server restarted during the measurement ({exc!r:.200}); "
                "measuring again",
                file=sys.stderr,
                flush=True,
            )
            await drop_leftovers()
    raise AssertionError("unreachable")


async def server_start_time() -> Any:
    await server_is_up()
    conn = await asyncpg.connect(dsn_for("postgres"))
    try:
        return await conn.fetchval("SELECT pg_postmaster_start_time()")
    finally:
        await conn.close()


async def drop_leftovers() -> None:
    """Drop the databases of this run that an interrupted measurement left behind."""
    for name in list(_created):
        await drop_database(name)


async def main_async(args: argparse.Namespace) -> None:
    workloads = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    systems = [s for s in SYSTEMS if not args.systems or s in args.systems.split(",")]
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for workload in workloads:
            order = [s for s in WORKLOADS[workload][1] if s in systems]
            # Rotate the order each repetition: no system always runs first (cold) or last.
            order = order[rep % len(order) :] + order[: rep % len(order)] if order else order
            for system in order:
                t0 = time.perf_counter()
                load = os.getloadavg()[0]
                metrics = await measure_again_if_interrupted(system, workload, args.jobs)
                runs.append(
                    {
                        "rep": rep,
                        "workload": workload,
                        "system": system,
                        "load": load,
                        "metrics": metrics,
                    }
                )
                shown = {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)}
                print(
                    f"rep {rep} {workload:3} {system:10} {shown} ({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
    summary = summarise(runs)
    cross = cross_ratios(runs)
    RESULTS.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    loads = [r["load"] for r in runs]
    machine["load_average_1min"] = {"min": min(loads), "max": max(loads)}
    conn = await asyncpg.connect(dsn_for("postgres"))
    try:
        machine["postgresql"] = await conn.fetchval("SHOW server_version")
        machine["synchronous_commit"] = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    doc = {
        "machine": machine,
        "jobs": args.jobs,
        "reps": args.reps,
        "runs": runs,
        "summary": summary,
        "cross": cross,
    }
    # A partial run (--only, --systems) is kept apart: latest.* stay a whole run.
    stem = "latest" if not args.only and not args.systems else "partial"
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    text = table(summary, cross) + (
        f"\n\n{args.reps} repetition(s); 1-minute load average before each measurement: "
        f"{machine['load_average_1min']['min']:.2f}-{machine['load_average_1min']['max']:.2f} "
        f"on {os.cpu_count()} CPUs.\n"
    )
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
    chart(summary, RESULTS / f"{stem}.png")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="jobs per workload (default 20000)"
    )
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. B,C")
    parser.add_argument("--systems", default="", help="comma-separated systems")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only recompute the summary of latest.json and redraw latest.md and latest.png",
    )
    args = parser.parse_args()
    for option, names, known in (
        ("--only", args.only, WORKLOADS),
        ("--systems", args.systems, SYSTEMS),
    ):
        unknown = [name for name in names.split(",") if name and name not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.replot:
        replot()
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
