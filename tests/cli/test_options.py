"""Global options, configuration sources, and how errors are reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from cleo.testers.application_tester import ApplicationTester

from taskqueue_core.cli.application import create_application
from taskqueue_core.cli.base import parse_since
from tests.cli.conftest import Result

UNREACHABLE = "postgres://taskq:hunter2@127.0.0.1:1/nowhere"


def run(args: str, **kwargs: object) -> Result:
    tester = ApplicationTester(create_application())
    code = tester.execute(args, interactive=False, **kwargs)  # type: ignore[arg-type]
    return Result(code, tester.io.fetch_output(), tester.io.fetch_error())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'tasks.sqlite3'}"


def test_unreachable_database_is_one_line_without_the_password() -> None:
    result = run(f"status --database-url={UNREACHABLE}")
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith(
        "error: cannot open the database postgres://taskq:***@127.0.0.1:1/nowhere: "
    )
    assert "hunter2" not in result.err
    assert "Traceback" not in result.err


def test_verbose_adds_the_traceback() -> None:
    result = run(f"-v status --database-url={UNREACHABLE}")
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.rstrip().splitlines()[-1].startswith("error: cannot open the database")


def test_every_command_reports_the_unreachable_database() -> None:
    for args in ("stats", "servers", "show 1", "logs 1", "cancel 1", "retry", "clear --yes"):
        result = run(f"{args} --database-url={UNREACHABLE}")
        assert result.code == 1, (args, result)
        assert result.err.startswith("error: cannot open the database"), (args, result)
        assert result.err.count("\n") == 1, (args, result)


def test_migrate_reports_the_unreachable_database() -> None:
    result = run(f"migrate --database-url={UNREACHABLE}")
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert "127.0.0.1:1" in result.err and "hunter2" not in result.err


def test_database_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("QUEUE_DATABASE_URL", sqlite_url)
    result = run("status --json")
    assert result.code == 0, result
    assert result.json()["database"] == sqlite_url


def test_invalid_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_MAX_WORKERS", "many")
    result = run("status")
    assert result.code == 2
    assert result.err.strip() == "error: QUEUE_MAX_WORKERS must be a whole number, got 'many'"


def test_config_object(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> None:
    monkeypatch.setenv("TASKQ_TEST_DATABASE_URL", sqlite_url)
    result = run("status --json --config tests.cli.settings:make_config")
    assert result.code == 0, result
    assert result.json()["database"] == sqlite_url
    # --database-url wins over the object's database.
    other = f"sqlite://{tmp_path / 'other.sqlite3'}"
    override = run(f"status --json --config tests.cli.settings:make_config --database-url={other}")
    assert override.json()["database"] == other


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        ("tests.cli.settings", 2, "error: --config must be written module:attribute"),
        (
            "tests.cli.settings:not_a_config",
            2,
            "error: --config tests.cli.settings:not_a_config must name a QueueConfig",
        ),
        ("tests.cli.settings:missing", 1, "error: 'tests.cli.settings' has no attribute"),
        ("tests.cli.no_such_module:config", 1, "error: cannot import 'tests.cli.no_such_module'"),
    ],
)
def test_bad_config_option(spec: str, code: int, message: str) -> None:
    result = run(f"status --config {spec}")
    assert result.code == code, result
    assert result.err.startswith(message), result.err
    assert result.err.count("\n") == 1


def test_bad_database_url() -> None:
    result = run("status --database-url=mysql://db/x")
    assert result.code == 2
    assert result.err.strip() == (
        "error: --database-url must start with postgres://, sqlite:// or memory://, "
        "got 'mysql://db/x'"
    )


@pytest.mark.parametrize(
    "args",
    ["status --no-such-option", "no-such-command", "show", "status --database-url"],
)
def test_usage_errors_are_one_line_and_exit_2(args: str) -> None:
    result = run(args)
    assert result.code == 2, result
    assert result.err.startswith("error: "), result.err
    assert "Traceback" not in result.err


def test_list_and_version() -> None:
    listing = run("list")
    assert listing.code == 0
    for name in (
        "status",
        "start",
        "clear",
        "retry",
        "stats",
        "servers",
        "serve",
        "migrate",
        "show",
        "logs",
        "cancel",
    ):
        assert f"\n  {name} " in listing.out, name
    assert "--database-url" in listing.out and "--config" in listing.out
    assert run("--version").out.startswith("Taskq (version ")


def test_parse_since() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("1h30m", now=now) == now - timedelta(minutes=90)
    assert parse_since("2d", now=now) == now - timedelta(days=2)
    assert parse_since("1w", now=now) == now - timedelta(weeks=1)
    assert parse_since("2024-04-30T10:00:00+02:00") == datetime(2024, 4, 30, 8, tzinfo=UTC)
