"""The worker rides out a failing database: writes and claims are retried, nothing is lost."""

from __future__ import annotations

from typing import Any

from taskqueue_core.exceptions import RepositoryError
from taskqueue_core.models import TaskState
from taskqueue_core.queue import TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.execution import tasks
from tests.execution.conftest import CountingRepository, counting, running_worker


def _fail_first(repo: CountingRepository, verb: str, times: int) -> list[int]:
    """Make ``verb`` raise RepositoryError ``times`` times, then work; return the failures."""
    failures: list[int] = []
    real = getattr(repo, verb)

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < times:
            failures.append(1)
            raise RepositoryError("the database is unreachable")
        return await real(*args, **kwargs)

    setattr(repo, verb, flaky)
    return failures


async def test_failed_completion_writes_are_retried_not_lost(queue: TaskQueue) -> None:
    repo = counting(queue)
    failures = _fail_first(repo, "complete_tasks", 2)
    refs = [queue.add_task(tasks.add, i, i) for i in range(20)]
    await run_until_idle(queue)
    assert len(failures) == 2
    assert [await r.wait(5) for r in refs] == [2 * i for i in range(20)]


async def test_failed_log_and_context_writes_are_retried(queue: TaskQueue) -> None:
    repo = counting(queue)
    log_failures = _fail_first(repo, "append_logs", 1)
    context_failures = _fail_first(repo, "update_contexts", 1)
    ref = queue.add_task(tasks.manual_context, "flaky")
    tasks.signals.event("gates", "flaky").set()
    logged = queue.add_task(tasks.log_many, 5)
    await run_until_idle(queue)
    assert await ref.wait(5) == "done"
    assert await logged.wait(5) == 5
    assert len(log_failures) == 1 and len(context_failures) == 1
    assert len(await queue.get_logs(await logged.get_task_id())) == 5
    assert (await ref.get_task()).context == {"manual": {"step": 3}}


async def test_a_running_worker_retries_failed_claims(queue: TaskQueue) -> None:
    repo = counting(queue)
    failures = _fail_first(repo, "claim_tasks", 2)
    async with running_worker(queue):
        ref = queue.add_task(tasks.add, 20, 22)
        assert await ref.wait(10) == 42
    assert len(failures) == 2
    assert await ref.get_state() is TaskState.DONE
