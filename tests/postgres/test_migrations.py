"""Migrations: a fresh database gets the documented schema, the seed's monitoring SQL runs on
it unchanged, migrating twice applies nothing, and the shipped migrations match the models."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import sysconfig
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from taskqueue_core.models import FunctionRef, NewLogRecord, NewTask, Outcome, ServerInfo, TaskState
from taskqueue_core.tortoise.models import APP_LABEL
from taskqueue_core.tortoise.postgres import PostgresRepository
from taskqueue_core.tortoise.schema import migrate, migration_config, migrations_location
from tests.conftest import _asyncpg_url
from tests.contract.helpers import utcnow

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = FunctionRef(module_name="tests.postgres.test_migrations", function_name="noop")

# The four statements of the seed's "Monitoring and Debugging" section, verbatim.
VIEW_ALL_TASKS = """SELECT id, name, state, date_enqueued, date_started, date_done, parent_task
FROM queued_tasks
ORDER BY date_enqueued DESC;"""

VIEW_TASK_LOGS = """SELECT qt.name, qtl.type, qtl.message, qtl.date_created
FROM queued_task_logs qtl
JOIN queued_tasks qt ON qtl.queued_task_id = qt.id
ORDER BY qtl.date_created DESC;"""

VIEW_ACTIVE_WORKERS = """SELECT server_name, max_workers, active_workers, idle_workers, is_running, last_heartbeat
FROM queued_task_workers
WHERE is_running = true;"""  # noqa: E501

TASK_HIERARCHY_VIEW = """WITH RECURSIVE task_hierarchy AS (SELECT id, name, parent_task, 1 as level, ARRAY[id] as path
                                  FROM queued_tasks
                                  WHERE parent_task IS NULL

                                  UNION ALL

                                  SELECT qt.id, qt.name, qt.parent_task, th.level + 1, th.path || qt.id
                                  FROM queued_tasks qt
                                  JOIN task_hierarchy th ON qt.parent_task = th.id)
SELECT level, REPEAT('  ', level - 1) || name as indented_name, id, path
FROM task_hierarchy
ORDER BY path;"""  # noqa: E501


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


def shipped_migrations() -> list[str]:
    return sorted(
        (p.name for p in (migrations_location() / APP_LABEL).glob("*.py") if p.name[0].isdigit()),
        key=lambda name: int(name.split("_", 1)[0]),
    )


async def test_migrate_creates_the_schema_the_monitoring_sql_reads(empty_pg_url: str) -> None:
    applied = await migrate(empty_pg_url)
    assert applied == shipped_migrations()
    assert applied  # the initial migration at least

    repo = PostgresRepository(empty_pg_url)
    await repo.open()
    try:
        root, child_a, child_b, grandchild = await repo.create_tasks(
            [
                NewTask("root", FUNCTION),
                NewTask("child-a", FUNCTION, batch_parents=(0,)),
                NewTask("child-b", FUNCTION, batch_parents=(0,)),
                NewTask("grandchild", FUNCTION, batch_parents=(1,)),
            ]
        )
        (claimed,) = await repo.claim_tasks("web-1", 10)
        assert claimed.id == root
        assert await repo.complete_tasks("web-1", [Outcome(root, TaskState.DONE)]) == [root]
        now = utcnow()
        await repo.append_logs(
            [
                NewLogRecord(root, "info", "app", "root started", date_created=now),
                NewLogRecord(child_a, "warning", "app", "child slow", date_created=now),
                NewLogRecord(
                    root, "debug", "app", "root planned", date_created=now - timedelta(seconds=5)
                ),
            ]
        )
        await repo.append_logs([])
        await repo.register_server(
            ServerInfo("web-1", "host-1", 4242, max_workers=4, active_workers=1, idle_workers=3)
        )
    finally:
        await repo.close()

    conn = await asyncpg.connect(_asyncpg_url(empty_pg_url))
    try:
        tasks = await conn.fetch(VIEW_ALL_TASKS)
        logs = await conn.fetch(VIEW_TASK_LOGS)
        workers = await conn.fetch(VIEW_ACTIVE_WORKERS)
        hierarchy = await conn.fetch(TASK_HIERARCHY_VIEW)
    finally:
        await conn.close()

    by_id = {r["id"]: r for r in tasks}
    assert {(r["id"], r["name"], r["state"], r["parent_task"]) for r in tasks} == {
        (root, "root", "done", None),
        (child_a, "child-a", "enqueued", root),
        (child_b, "child-b", "enqueued", root),
        (grandchild, "grandchild", "waiting", child_a),
    }
    enqueued = [r["date_enqueued"] for r in tasks]
    assert enqueued == sorted(enqueued, reverse=True)
    assert by_id[root]["date_started"] is not None
    assert by_id[root]["date_done"] >= by_id[root]["date_started"]
    assert by_id[grandchild]["date_started"] is None and by_id[grandchild]["date_done"] is None

    assert [(r["name"], r["type"], r["message"]) for r in logs[2:]] == [
        ("root", "debug", "root planned")
    ]
    assert {(r["name"], r["type"], r["message"]) for r in logs[:2]} == {
        ("root", "info", "root started"),
        ("child-a", "warning", "child slow"),
    }
    assert logs[0]["date_created"] == now

    assert len(workers) == 1
    worker = workers[0]
    assert (
        worker["server_name"],
        worker["max_workers"],
        worker["active_workers"],
        worker["idle_workers"],
        worker["is_running"],
    ) == ("web-1", 4, 1, 3, True)
    assert abs((utcnow() - worker["last_heartbeat"]).total_seconds()) < 60

    assert [(r["level"], r["indented_name"], r["id"], r["path"]) for r in hierarchy] == [
        (1, "root", root, [root]),
        (2, "  child-a", child_a, [root, child_a]),
        (3, "    grandchild", grandchild, [root, child_a, grandchild]),
        (2, "  child-b", child_b, [root, child_b]),
    ]


async def test_migrating_twice_applies_nothing_the_second_time(empty_pg_url: str) -> None:
    assert await migrate(empty_pg_url) == shipped_migrations()
    assert await migrate(empty_pg_url) == []
    conn = await asyncpg.connect(_asyncpg_url(empty_pg_url))
    try:
        recorded = await conn.fetch("SELECT version FROM aerich WHERE app = $1", APP_LABEL)
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'queued_tasks_claim_idx'"
        )
    finally:
        await conn.close()
    assert sorted(r["version"] for r in recorded) == shipped_migrations()
    assert index is not None and "WHERE" in index and "enqueued" in index


async def test_a_host_that_took_aerichs_model_into_its_own_app_does_not_stop_migrate(
    empty_pg_url: str, tmp_path: Path
) -> None:
    """An application that runs aerich for its own models has put ``aerich.models`` in an
    app of its own, on its own connection; migrating taskqueue in the same process works,
    and gives the model back to the application's app afterwards."""
    from aerich.models import Aerich
    from tortoise.context import TortoiseContext

    meta = Aerich._meta
    saved = (meta.app, meta.default_connection)
    try:
        meta.app = None  # as in a fresh process, whatever earlier tests bound it to
        async with TortoiseContext() as host:
            await host.init(
                config={
                    "connections": {"host_db": f"sqlite://{tmp_path}/host.sqlite3"},
                    "apps": {
                        "host_app": {"models": ["aerich.models"], "default_connection": "host_db"}
                    },
                }
            )
        assert (meta.app, meta.default_connection) == ("host_app", "host_db")
        assert await migrate(empty_pg_url) == shipped_migrations()
        assert (meta.app, meta.default_connection) == ("host_app", "host_db")
    finally:
        meta.app, meta.default_connection = saved


async def test_concurrent_migrations_apply_once(empty_pg_url: str) -> None:
    results = await asyncio.gather(migrate(empty_pg_url), migrate(empty_pg_url))
    assert sorted(results, key=len) == [[], shipped_migrations()]


# -- drift between the models and the migrations --------------------------------------------


def _reset_aerich() -> None:
    """aerich keeps a diff's working state in class attributes: start every diff clean."""
    from aerich.migrate import Migrate

    for name in (
        "upgrade_operators",
        "downgrade_operators",
        "_upgrade_fk_m2m_index_operators",
        "_downgrade_fk_m2m_index_operators",
        "_upgrade_m2m",
        "_downgrade_m2m",
    ):
        setattr(Migrate, name, [])
    Migrate._rename_fields = {}
    Migrate._rename_models = {}
    Migrate._last_version_content = None


async def pending_migration(database_url: str, location: Path) -> str:
    """Ask aerich to diff the models against the last migration's stored state in ``location``.

    Returns the name of the migration file aerich had to write there, or "" when the models
    and the migrations agree. Offline: the state comes from the files, not the database.
    """
    from aerich import Command
    from tortoise.context import TortoiseContext

    _reset_aerich()
    context = TortoiseContext()
    with context:
        try:
            command = Command(
                tortoise_config=migration_config(database_url),
                app=APP_LABEL,
                location=str(location),
            )
            await command.init(offline=True)
            return await command.migrate("drift", no_input=True, offline=True)
        finally:
            await context.close_connections()
            _reset_aerich()


def copy_migrations(target: Path) -> Path:
    """A copy of the shipped migrations under ``target`` (aerich writes its diff there)."""
    shutil.copytree(migrations_location() / APP_LABEL, target / APP_LABEL)
    return target / APP_LABEL


async def test_models_and_migrations_agree(pg_url: str, tmp_path: Path) -> None:
    copy_migrations(tmp_path)
    generated = await pending_migration(pg_url, tmp_path)
    assert generated == "", (
        "the models changed without a migration; generate one with aerich against "
        f"schema.migration_config(url) (aerich would write {generated})"
    )


async def test_the_drift_check_notices_a_model_change(pg_url: str, tmp_path: Path) -> None:
    """Proof that the check above can fail: forget a column in the last migration's state."""
    from aerich.utils import decompress_dict, get_formatted_compressed_data

    folder = copy_migrations(tmp_path)
    last = folder / shipped_migrations()[-1]
    text = last.read_text(encoding="utf-8")
    match = re.search(r"MODELS_STATE = \(\n(.*?)\n\)", text, re.S)
    assert match is not None
    state = decompress_dict("".join(re.findall(r'"([^"]*)"', match.group(1))))
    task_model = state[f"{APP_LABEL}.QueuedTask"]
    task_model["data_fields"] = [f for f in task_model["data_fields"] if f["name"] != "priority"]
    forged = get_formatted_compressed_data(state)
    last.write_text(
        text[: match.start(1)] + "    " + forged + text[match.end(1) :], encoding="utf-8"
    )

    generated = await pending_migration(pg_url, tmp_path)
    assert generated, "aerich saw no difference"
    migration = (folder / generated).read_text(encoding="utf-8")
    assert "priority" in migration and "ADD" in migration


# -- from an installed wheel ---------------------------------------------------------------

WHEEL_CHECK = """
import asyncio, json, sys
import taskqueue_core
from taskqueue_core.tortoise.schema import migrate, migrations_location

async def main():
    first = await migrate(sys.argv[1])
    second = await migrate(sys.argv[1])
    print(json.dumps({
        "package": taskqueue_core.__file__,
        "location": str(migrations_location()),
        "first": first,
        "second": second,
    }))

asyncio.run(main())
"""


async def _run(*command: str, cwd: Path, timeout: float = 600.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.slow
async def test_migrations_run_from_an_installed_wheel(empty_pg_url: str, tmp_path: Path) -> None:
    # Built from a copy without build/: setuptools reuses a checkout's build/lib, which can
    # hold modules since moved or deleted, and would put them in the wheel.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "build", "dist", "site", "*.egg-info", "__pycache__", "*.sqlite3*"
        ),
    )
    code, output = await _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(source),
        "--no-deps",
        "-w",
        str(tmp_path / "dist"),
        cwd=tmp_path,
    )
    if code != 0 and ("No matching distribution" in output or "Could not fetch" in output):
        pytest.skip(f"cannot build a wheel here (build backend unavailable): {output[-500:]}")
    assert code == 0, output
    (wheel,) = (tmp_path / "dist").glob("taskqueue-*.whl")

    venv = tmp_path / "venv"
    code, output = await _run(
        sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path
    )
    assert code == 0, output
    python = venv / "bin" / "python"
    site = Path(
        (
            await _run(
                str(python),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                cwd=tmp_path,
            )
        )[1].strip()
    )
    code, output = await _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--target",
        str(site),
        str(wheel),
        cwd=tmp_path,
    )
    assert code == 0, output
    # The dependencies come from this environment, added after the wheel's own packages
    # (a .pth-added directory is not scanned for .pth files, so the checkout's editable
    # install stays out).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    script = tmp_path / "check.py"
    script.write_text(WHEEL_CHECK, encoding="utf-8")

    code, output = await _run(str(python), str(script), empty_pg_url, cwd=tmp_path)
    assert code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(site)
    assert Path(report["location"]).is_relative_to(site)
    assert report["first"] == shipped_migrations()
    assert report["second"] == []
