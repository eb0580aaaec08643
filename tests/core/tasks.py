"""Module-level task functions the core tests create tasks of (stored by import path)."""

from __future__ import annotations

from typing import Any

from taskqueue_core import Outcome, TaskState
from taskqueue_core.repository import TaskRepository

SERVER = "tests-core"


async def send_email(recipient: str, subject: str = "hello") -> dict[str, Any]:
    return {"sent": True, "recipient": recipient, "subject": subject}


def add(a: int, b: int) -> int:
    return a + b


async def takes_options(name: str, priority: int, channel: str) -> str:
    return f"{name}/{priority}/{channel}"


class Mailer:
    async def send(self, recipient: str) -> None:
        return None


async def finish(
    repository: TaskRepository,
    task_id: int,
    state: TaskState = TaskState.DONE,
    **outcome: Any,
) -> None:
    """End ``task_id`` as a worker would: claim it, then report its outcome.

    The task must be the only ready one (claims take every ready task).
    """
    claimed = await repository.claim_tasks(SERVER, 100)
    assert [t.id for t in claimed] == [task_id], claimed
    changed = await repository.complete_tasks(SERVER, [Outcome(task_id, state, **outcome)])
    assert changed == [task_id]


async def log_and_return(label: str) -> str:
    from taskqueue_core import getLogger

    getLogger("tests.core").info(f"processing {label}")
    return label


def fail_with(message: str) -> None:
    raise ValueError(message)
