"""``taskq serve APP``: HTTP with workers, workers only, HTTP only; missing uvicorn."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from taskqueue_core import ServerInfo, TaskQueue
from tests.cli import tasks
from tests.cli.conftest import Console
from tests.cli.process import ROOT, environment, taskq, wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _post_add(port: int, a: int, b: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/add?a={a}&b={b}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.load(response)["task_id"])


def _servers(console: Console) -> list[ServerInfo]:
    async def read(queue: TaskQueue) -> list[ServerInfo]:
        return await queue.servers()

    return console.seed(read)


def _result(console: Console, task_id: int) -> object:
    async def wait(queue: TaskQueue) -> object:
        return await queue.wait_for(task_id, timeout=30)

    return console.seed(wait)


@pytest.mark.postgres
def test_http_and_a_pool_in_one_process(pg_console: Console, tmp_path: Path) -> None:
    port = _free_port()
    env = environment(pg_console.url, server_name="cli-serve")
    args = ["serve", "tests.cli.app:app", "--workers=2", f"--port={port}"]
    with taskq(args, env, tmp_path / "serve") as server:
        wait_until(
            lambda: _get(f"http://127.0.0.1:{port}/health"), timeout=30, what="HTTP", running=server
        )
        task_id = _post_add(port, 2, 5)
        assert _result(pg_console, task_id) == 7
        # One pool: the application's own embedded worker was turned off for this one.
        assert [s.server_name for s in _servers(pg_console)] == ["cli-serve"]
        assert _servers(pg_console)[0].max_workers == 2
        assert f"http       http://127.0.0.1:{port}" in server.out
        assert "taskq serving with workers" in server.out
        assert "lifespan   taskqueue_lifespan without its embedded worker" in server.out
        assert server.terminate(timeout=30) == 0, server.err
    assert _servers(pg_console) == []
    assert "Traceback" not in server.err


@pytest.mark.postgres
def test_one_pool_when_the_application_enters_the_lifespan_itself(
    pg_console: Console, tmp_path: Path
) -> None:
    port = _free_port()
    env = environment(pg_console.url, server_name="cli-serve-composed")
    args = ["serve", "tests.cli.app:composed", "--workers=2", f"--port={port}"]
    with taskq(args, env, tmp_path / "serve") as server:
        wait_until(
            lambda: _get(f"http://127.0.0.1:{port}/health"), timeout=30, what="HTTP", running=server
        )
        assert _result(pg_console, _post_add(port, 3, 4)) == 7
        # The lifespan inside the application's own took the command's configuration (the
        # queue works) and left the tasks to the command's pool: one server row, 2 slots.
        servers = _servers(pg_console)
        assert [(s.server_name, s.max_workers) for s in servers] == [("cli-serve-composed", 2)]
        assert "any taskqueue_lifespan the application enters runs without its embedded" in (
            server.out
        )
        assert server.terminate(timeout=30) == 0, server.err
    assert _servers(pg_console) == []
    assert "Traceback" not in server.err


@pytest.mark.postgres
def test_workers_only(pg_console: Console, tmp_path: Path) -> None:
    env = environment(pg_console.url, server_name="cli-no-http")
    args = ["serve", "tests.cli.app:app", "--workers=1", "--no-http"]
    with taskq(args, env, tmp_path / "serve") as server:
        wait_until(lambda: _servers(pg_console), timeout=30, what="the server row", running=server)
        assert "taskq starting workers (no HTTP)" in server.out

        async def add(queue: TaskQueue) -> object:
            return await (await queue.enqueue(tasks.add, 20, 22)).wait(timeout=30)

        assert pg_console.seed(add) == 42
        assert server.terminate(timeout=30) == 0, server.err
    assert _servers(pg_console) == []


@pytest.mark.postgres
def test_http_only_leaves_workers_to_the_application(pg_console: Console, tmp_path: Path) -> None:
    port = _free_port()
    env = environment(pg_console.url)
    with taskq(["serve", "tests.cli.app:app", f"--port={port}"], env, tmp_path / "serve") as server:
        wait_until(
            lambda: _get(f"http://127.0.0.1:{port}/health"), timeout=30, what="HTTP", running=server
        )
        assert "embedded by the application's taskqueue_lifespan" in server.out
        # The application's lifespan runs its own embedded worker, as under plain uvicorn.
        assert _result(pg_console, _post_add(port, 1, 1)) == 2
        assert server.terminate(timeout=30) == 0, server.err


def test_missing_uvicorn_is_one_clear_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from taskqueue_core.cli.application import main\n"
        "sys.argv = ['taskq', 'serve', 'tests.cli.app:app']\n"
        "main()\n"
    )
    env = environment(f"sqlite://{tmp_path / 'tasks.sqlite3'}")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: taskq serve needs uvicorn: pip install 'taskqueue[server]' (or pip install uvicorn)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            "serve tests.cli.app:app --port=70000",
            "error: --port must be a whole number from 1 to 65535",
        ),
        ("serve tests.cli.app:app --workers=none", "error: --workers must be a whole number"),
        ("serve tests.cli.app", "error: APP must be written module:attribute"),
        ("serve tests.cli.app:app --host=", "error: --host must not be empty"),
    ],
)
def test_bad_options(memory_console: Console, args: str, message: str) -> None:
    result = memory_console(args)
    assert result.code == 2, result
    assert result.err.startswith(message), result.err
