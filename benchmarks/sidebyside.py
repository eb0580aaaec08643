"""Old code against new, side by side: ``python -m benchmarks.sidebyside REF``.

Measures taskqueue's workloads with the code of git revision ``REF`` (checked out in a
temporary worktree) and with this checkout's code as it is (uncommitted changes included),
in pairs: each step in a process of its own on a fresh database, as ``python -m benchmarks``
runs it, the two sides of a pair one after the other and their order alternating from pair to
pair, so that a drift of the machine hits both alike. Per workload it prints each side's
median and the median (min-max) of the per-pair speed-ups of the new code: its rate over the
old one's, or the old time over the new one for the workloads measured in milliseconds (C's
p50, E1's time per link).

A change too small to show in a full run, on a machine whose speed moves from run to run,
shows here: every pair is measured within a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.__main__ import TREE, WORKLOADS, drop_leftovers, measure

METRICS = {"C": ("p50_ms", False), "E1": ("ms_per_link", False)}
"""The metric of a workload and whether more is better (default: its rate, more is better)."""


def metric(workload: str) -> tuple[str, bool]:
    return METRICS.get(workload, ("rate", True))


def speedup(workload: str, old: float, new: float) -> float:
    """How many times faster the new code was in one pair."""
    _, more_is_better = metric(workload)
    return new / old if more_is_better else old / new


async def compare(old_tree: Path, workloads: list[str], pairs: int, jobs: int) -> str:
    lines = [
        "| workload | metric | old (median) | new (median) | new code faster, per pair |",
        "|---|---|---|---|---|",
    ]
    for workload in workloads:
        name, _ = metric(workload)
        old: list[float] = []
        new: list[float] = []
        for pair in range(pairs):
            sides = [("old", old_tree), ("new", TREE)]
            if pair % 2:
                sides.reverse()
            got: dict[str, float] = {}
            for side, tree in sides:
                try:
                    result = await measure("taskqueue", workload, jobs, tree)
                finally:
                    await drop_leftovers()
                got[side] = float(result[name])
            old.append(got["old"])
            new.append(got["new"])
            print(
                f"{workload} pair {pair + 1}: old {got['old']:.3f} new {got['new']:.3f} "
                f"({speedup(workload, got['old'], got['new']):.3f}x)",
                flush=True,
            )
        ups = [speedup(workload, o, n) for o, n in zip(old, new, strict=True)]
        lines.append(
            f"| {workload} | {name} | {statistics.median(old):,.3f} | "
            f"{statistics.median(new):,.3f} | **{statistics.median(ups):.3f}x** "
            f"({min(ups):.3f}-{max(ups):.3f}) |"
        )
    return "\n".join(lines)


def worktree(ref: str, into: Path) -> None:
    """Check ``ref`` out into ``into``, a worktree of this repository (no branch moves)."""
    done = subprocess.run(
        ["git", "-C", str(TREE), "worktree", "add", "--detach", str(into), ref],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"cannot check out {ref!r}: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sidebyside", description=__doc__)
    parser.add_argument("ref", help="the old code: a git revision (commit, tag, branch)")
    parser.add_argument(
        "--only", default="B,D", help="comma-separated taskqueue workloads (default B,D)"
    )
    parser.add_argument("--pairs", type=int, default=6, help="pairs per workload (default 6)")
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="jobs per workload (default 20000)"
    )
    args = parser.parse_args()
    workloads = [w for w in args.only.split(",") if w]
    ours = [w for w, (_, systems) in WORKLOADS.items() if "taskqueue" in systems]
    unknown = [w for w in workloads if w not in ours]
    if unknown or not workloads:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(ours)}")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="taskqueue-old-") as parent:
        old_tree = Path(parent) / "tree"
        worktree(args.ref, old_tree)
        try:
            text = asyncio.run(compare(old_tree, workloads, args.pairs, args.jobs))
        finally:
            subprocess.run(
                ["git", "-C", str(TREE), "worktree", "remove", "--force", str(old_tree)],
                capture_output=True,
            )
    print(f"\nold: {args.ref}; new: this checkout; {args.pairs} pair(s) each\n\n{text}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
