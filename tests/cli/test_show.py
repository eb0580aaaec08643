"""``taskq show ID``: detail with context, result and error; unknown ids."""

from __future__ import annotations

from taskqueue_core import TaskQueue
from taskqueue_core.testing import run_until_idle
from tests.cli import tasks
from tests.cli.conftest import Console


def test_done_task_with_context_and_result(console: Console) -> None:
    async def seed(queue: TaskQueue) -> tuple[int, int]:
        ref = await queue.enqueue(tasks.chatty, 2, name="chatty <report>", priority=5)
        child = await queue.enqueue(tasks.add, 1, 2, parent=ref)
        await run_until_idle(queue)
        return await ref.get_task_id(), await child.get_task_id()

    task_id, child_id = console.seed(seed)
    result = console(f"show {task_id} --json")
    assert result.code == 0, result
    view = result.json()
    assert view["id"] == task_id
    assert view["state"] == "done"
    assert view["result"] == {"lines": 2}
    assert view["context"] == {"progress": 100, "step": {"name": "finished"}}
    assert view["children"] == [child_id]
    assert view["function"]["module_name"] == "tests.cli.tasks"
    assert view["function"]["signed"] is True
    assert view["date_ended"] is not None

    text = console(f"show {task_id}")
    assert text.code == 0, text
    assert f"Task {task_id}  chatty <report>  [done]" in text.out
    assert "tests.cli.tasks:chatty" in text.out
    assert "Context" in text.out and '"progress": 100' in text.out
    assert "Result" in text.out and '"lines": 2' in text.out
    assert str(child_id) in text.out
    assert "Error" not in text.out


def test_failed_task_shows_its_error(console: Console) -> None:
    async def seed(queue: TaskQueue) -> int:
        ref = await queue.enqueue(tasks.boom, "no such mailbox")
        await run_until_idle(queue)
        return await ref.get_task_id()

    task_id = console.seed(seed)
    result = console(f"show {task_id}")
    assert result.code == 0, result
    assert "[failed]" in result.out
    error = result.out.split("Error", 1)[1]
    assert "ValueError: no such mailbox" in error
    assert "Traceback" in error
    view = console(f"show {task_id} --json").json()
    assert view["exception_name"] == "ValueError"
    assert view["exception_message"] == "no such mailbox"


def test_unknown_task_is_one_line_and_exit_1(console: Console) -> None:
    result = console("show 987654")
    assert result.code == 1
    assert result.out == ""
    assert result.err.strip() == "error: no task has id 987654"


def test_bad_id_is_a_usage_error(memory_console: Console) -> None:
    for bad in ("abc", "0", "-3"):
        result = memory_console(f"show -- {bad}")
        assert result.code == 2, (bad, result)
        assert (
            result.err.strip() == f"error: a task id must be a positive whole number, got '{bad}'"
        )
