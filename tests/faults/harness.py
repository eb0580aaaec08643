"""The fault tests' harness: real worker processes, and probes of the database they share.

``WorkerProcess`` runs ``python -m tests.faults.worker_main`` with ``QUEUE_*`` settings, its
output kept in a file (printed when a test fails). ``Probe`` reads the test database through
its own asyncpg connection, reconnecting when the server was restarted. ``wait_until`` polls
a condition with a deadline: observing other processes needs polling, but never a bare sleep.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value; return it. ``AssertionError`` (with the
    last value) when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)


def worker_settings(database_url: str, **settings: Any) -> dict[str, str]:
    """``QUEUE_*`` variables for a worker of ``database_url``; ``settings`` by field name."""
    env = {
        "QUEUE_DATABASE_URL": database_url,
        "QUEUE_SECRET_KEY": "fault-tests",
        "QUEUE_HEARTBEAT_INTERVAL": "0.5",
        "QUEUE_STALE_AFTER": "2",
        "QUEUE_POLLING_INTERVAL": "1",
        "QUEUE_RETRY_BACKOFF": "0.2",
        "QUEUE_RETRY_BACKOFF_MAX": "1",
    }
    for name, value in settings.items():
        env[f"QUEUE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class WorkerProcess:
    """One worker process (a pool of ``processes`` processes) of the fault tests."""

    def __init__(self, env: dict[str, str], log_path: Path, *, processes: int = 1) -> None:
        self.env = env
        self.log_path = log_path
        self.processes = processes
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def start(self) -> WorkerProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("QUEUE_")},
            **self.env,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.faults.worker_main",
                "--processes",
                str(self.processes),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a signal meant for the test run never reaches it,
                # and the whole group (children included) can be cleaned up at the end.
                start_new_session=True,
            )
        return self

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code. ``TimeoutError`` after ``timeout``."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def close(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL), children included."""
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        # Children of a killed parent stop on their own; make sure none outlives the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def output(self, tail: int = 200) -> str:
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])


class Probe:
    """Reads the test database for the tests' checks; reconnects after a server restart."""

    def __init__(self, database_url: str) -> None:
        self.dsn = database_url.replace("postgres://", "postgresql://", 1)
        self._conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        for attempt in range(2):
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn, timeout=5)
                return list(await self._conn.fetch(sql, *args))
            except (
                OSError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
            ):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def try_fetch(self, sql: str, *args: Any) -> list[asyncpg.Record] | None:
        """``fetch``, or None while the server cannot be reached (it is restarting)."""
        try:
            return await self.fetch(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None

    async def states(self) -> collections.Counter[str]:
        rows = await self.fetch("SELECT state, count(*) AS n FROM queued_tasks GROUP BY state")
        return collections.Counter({r["state"]: r["n"] for r in rows})

    async def executions(self) -> dict[str, list[int]]:
        """Task key -> pids of its executions, in order."""
        rows = await self.fetch("SELECT task_key, pid FROM executions ORDER BY id")
        found: dict[str, list[int]] = collections.defaultdict(list)
        for row in rows:
            found[row["task_key"]].append(row["pid"])
        return found

    async def servers(self) -> dict[int, str]:
        """pid -> server name of the registered servers."""
        rows = await self.fetch("SELECT server_name, pid FROM queued_task_workers")
        return {r["pid"]: r["server_name"] for r in rows}

    async def doing(self, server_name: str) -> list[asyncpg.Record]:
        return await self.fetch(
            "SELECT id, name, args FROM queued_tasks WHERE state = 'doing' AND claimed_by = $1",
            server_name,
        )

    async def backends_of(self, pid: int) -> list[asyncpg.Record]:
        """The server backends of the TCP connections that process ``pid`` holds."""
        ports = local_tcp_ports(pid)
        return await self.fetch(
            "SELECT pid, query, client_port FROM pg_stat_activity "
            "WHERE datname = current_database() AND client_port = ANY($1::int[])",
            sorted(ports),
        )


def local_tcp_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets process ``pid`` has open (from /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# -- the PostgreSQL server ---------------------------------------------------------------------


def postgres_cluster() -> tuple[str, str]:
    """(version, name) of the local cluster, from /etc/postgresql."""
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if p.is_dir())
    return versions[-1], "main"


async def pg_ctlcluster(action: str) -> None:
    """Run ``pg_ctlcluster <version> main <action>`` (the tests run as root)."""
    version, name = postgres_cluster()
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        version,
        name,
        action,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster {action} failed ({proc.returncode}): {out.decode()}")


async def postgres_running(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn.replace("postgres://", "postgresql://", 1), timeout=3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True
