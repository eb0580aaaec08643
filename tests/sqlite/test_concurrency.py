"""Single-writer transactions: concurrent claimers never share a task, and writers from
other connections or processes wait their turn instead of failing with "database is locked"."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

from taskqueue_core.models import TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import create_many, drain

TASKS = 500
BOUND = 60.0
"""Upper bound of every wait in these tests, in seconds."""


async def assert_all_done_once(
    repo: SqliteRepository, ids: list[int], claims: list[list[int]]
) -> None:
    flat = [task_id for claimed in claims for task_id in claimed]
    assert len(flat) == len(set(flat)), "a task was claimed twice"
    assert sorted(flat) == sorted(ids)
    states = await repo.get_states(ids)
    assert set(states.values()) == {TaskState.DONE}


async def test_gathered_claimers_never_share_a_task(repo: SqliteRepository) -> None:
    ids = await create_many(repo, TASKS)
    claims = await asyncio.wait_for(
        asyncio.gather(*(drain(repo, f"server-{i}", 7) for i in range(8))), BOUND
    )
    await assert_all_done_once(repo, ids, claims)
    # Every task was completed by the server that claimed it.
    for i, claimed in enumerate(claims):
        for task in await repo.get_tasks(claimed):
            assert task.claimed_by == f"server-{i}" and task.result == task.id


async def test_two_repositories_on_one_file_never_share_a_task(db_url: str) -> None:
    first, second = SqliteRepository(db_url), SqliteRepository(db_url)
    await first.open()
    await second.open()
    try:
        ids = await create_many(first, TASKS)
        claims = await asyncio.wait_for(
            asyncio.gather(
                *(drain(first, f"first-{i}", 5) for i in range(4)),
                *(drain(second, f"second-{i}", 5) for i in range(4)),
            ),
            BOUND,
        )
        await assert_all_done_once(first, ids, claims)
    finally:
        await first.close()
        await second.close()


async def test_writers_on_two_connections_interleave_without_lock_errors(db_url: str) -> None:
    """Many small write transactions from two connections at once: every one succeeds."""
    first, second = SqliteRepository(db_url), SqliteRepository(db_url)
    await first.open()
    await second.open()
    try:

        async def create(repo: SqliteRepository, count: int) -> list[int]:
            ids: list[int] = []
            for _ in range(count):
                ids.extend(await create_many(repo, 3, channel="c"))
            return ids

        created = await asyncio.wait_for(
            asyncio.gather(*(create(r, 40) for r in (first, second, first, second))), BOUND
        )
        ids = [i for part in created for i in part]
        assert len(ids) == len(set(ids)) == 4 * 40 * 3
        assert (await first.stats()).by_state["enqueued"] == len(ids)
    finally:
        await first.close()
        await second.close()


async def test_write_waits_for_another_connections_lock(
    db_path: Path, repo: SqliteRepository
) -> None:
    """BEGIN IMMEDIATE waits (busy timeout) while another connection holds the write lock,
    then succeeds once it is released."""
    (task_id,) = await create_many(repo, 1)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        claim = asyncio.create_task(repo.claim_tasks("s", 1), name="blocked-claim")
        done, _ = await asyncio.wait({claim}, timeout=0.3)
        assert not done, "the claim should wait for the other connection's write lock"
        other.execute("COMMIT")
        claimed = await asyncio.wait_for(claim, BOUND)
        assert [t.id for t in claimed] == [task_id]
    finally:
        other.close()


async def test_cancelled_write_leaves_the_repository_usable(
    db_path: Path, repo: SqliteRepository
) -> None:
    """A claim cancelled while its BEGIN waits for the lock neither claims anything nor
    leaves a transaction open behind it."""
    (task_id,) = await create_many(repo, 1)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        claim = asyncio.create_task(repo.claim_tasks("s", 1), name="cancelled-claim")
        done, _ = await asyncio.wait({claim}, timeout=0.3)
        assert not done
        claim.cancel()
        other.execute("COMMIT")
        try:
            await asyncio.wait_for(claim, BOUND)
        except asyncio.CancelledError:
            pass
        assert (await repo.get_states([task_id]))[task_id] is TaskState.ENQUEUED
        assert [t.id for t in await repo.claim_tasks("s", 1)] == [task_id]
    finally:
        other.close()


CHILD = """
import asyncio, json, sys
from taskqueue_core.models import Outcome, TaskState
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import drain

async def main(url: str) -> None:
    repo = SqliteRepository(url)
    await repo.open()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    first = await repo.claim_tasks("child-process", 5)
    print("claimed", flush=True)  # the parent starts claiming now, while this one goes on
    await repo.complete_tasks(
        "child-process", [Outcome(task_id=t.id, state=TaskState.DONE, result=t.id) for t in first]
    )
    claimed = [t.id for t in first] + await drain(repo, "child-process", 5)
    await repo.close()
    print(json.dumps(claimed), flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_second_process_on_the_same_file_never_shares_a_task(
    db_url: str, repo: SqliteRepository
) -> None:
    ids = await create_many(repo, 4 * TASKS)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        db_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        ready = await asyncio.wait_for(child.stdout.readline(), BOUND)
        assert ready.strip() == b"ready"
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        claimed = await asyncio.wait_for(child.stdout.readline(), BOUND)
        assert claimed.strip() == b"claimed"
        mine = await asyncio.wait_for(
            asyncio.gather(*(drain(repo, f"parent-{i}", 5) for i in range(2))), BOUND
        )
        out, err = await asyncio.wait_for(child.communicate(), BOUND)
        assert child.returncode == 0, err.decode()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    theirs = json.loads(out.decode().strip())
    assert theirs, "the child process claimed its first batch before this one started"
    await assert_all_done_once(repo, ids, [*mine, theirs])
