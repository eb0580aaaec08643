"""Running the installed ``taskq`` as a subprocess, with bounded waits."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tests.cli.conftest import SECRET

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the working directory of every subprocess (``tests.cli.*`` import from it)."""


def taskq_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("taskq")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "taskqueue_core.cli"]


def environment(database_url: str, **settings: str) -> dict[str, str]:
    """This environment without QUEUE_* settings, plus the database, key and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_")}
    env.update(QUEUE_DATABASE_URL=database_url, QUEUE_SECRET_KEY=SECRET)
    env.update({f"QUEUE_{name.upper()}": value for name, value in settings.items()})
    return env


def wait_until(
    probe: Callable[[], T], *, timeout: float, what: str, running: Taskq | None = None
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds, or
    as soon as the ``running`` process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if running is not None and running.process.poll() is not None:
            raise AssertionError(
                f"taskq exited with {running.process.returncode} while waiting for {what}\n"
                f"{running.err}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {value!r})"
            )
        time.sleep(0.05)


class Taskq:
    """A running ``taskq`` subprocess whose output goes to files (never a full pipe)."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path = logs / "stdout.txt"
        self.err_path = logs / "stderr.txt"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.process = subprocess.Popen(
            [*taskq_command(), *args], cwd=ROOT, env=env, stdout=self._out, stderr=self._err
        )

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def terminate(self, *, timeout: float, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` and return the exit code (fails if it does not exit in time)."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"taskq did not exit within {timeout} s of {sig.name}\n{self.err}"
            ) from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._out.close()
        self._err.close()


@contextmanager
def taskq(args: list[str], env: dict[str, str], logs: Path) -> Iterator[Taskq]:
    """Run ``taskq *args``; killed on the way out if still running."""
    running = Taskq(args, env, logs)
    try:
        yield running
    finally:
        running.close()


def run_on_terminal(args: list[str], env: dict[str, str], *, timeout: float) -> tuple[int, str]:
    """Run ``taskq *args`` with stdout and stderr on a pseudo-terminal; return (code, output)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*taskq_command(), *args], cwd=ROOT, env=env, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"taskq {' '.join(args)} did not finish within {timeout} s")
            ready, _, _ = select.select([leader], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        return process.wait(timeout=timeout), b"".join(chunks).decode()
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
