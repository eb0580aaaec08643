"""The example runner itself: it finds the blocks, runs them as one script, and catches a page
that lies (an example that raises, prints something else, or is skipped without a reason)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.docs.pages import MarkdownError, matches, problems, read_examples, run_page


def page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


GOOD = """\
    # A page

    ```python
    import asyncio

    from taskqueue_core import QueueConfig, TaskQueue
    from taskqueue_core.testing import run_until_idle


    async def double(x: int) -> int:
        return 2 * x


    async def main() -> None:
        async with TaskQueue(QueueConfig(database_url="memory://")) as queue:
            ref = queue.add_task(double, 21)
            await run_until_idle(queue)
            print(await ref.wait())


    asyncio.run(main())
    ```

    ```text
    42
    ```

    A block that continues the first one:

    ```python
    print(double.__module__)
    ```

    <!-- not-run: a fragment -->
    ```python
    await undefined()
    ```

    - in a list:

      ```python
      print("indented", 1)
      ```

      ```text
      indented ...
      ```
    """


def test_blocks_are_found_with_their_lines_markers_and_outputs(tmp_path: Path) -> None:
    examples = read_examples(page(tmp_path, GOOD))
    assert [e.line for e in examples] == [4, 31, 36, 42]
    assert [e.skip for e in examples] == [None, None, "a fragment", None]
    assert [e.expected for e in examples] == ["42\n", None, None, "indented ...\n"]
    assert examples[3].source == 'print("indented", 1)\n'


def test_a_good_page_runs_as_one_script(tmp_path: Path) -> None:
    run = run_page(page(tmp_path, GOOD), tmp_path)
    assert problems(run) == []
    assert [output.strip() for output in run.outputs] == ["42", "__main__", "indented 1"]


def test_an_example_that_raises_is_reported_with_its_source_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("print(double.__module__)", 'print("before")\n    1 / 0')
    run = run_page(page(tmp_path, text), tmp_path)
    [problem] = problems(run)
    assert "the block at line 31" in problem
    assert "   32 | 1 / 0" in problem
    assert "raised an exception" in problem
    assert "before" in problem  # what it printed before it failed
    # The traceback points into the page itself.
    assert f'File "{tmp_path / "page.md"}", line 32' in problem
    assert "ZeroDivisionError" in problem


def test_output_that_differs_from_the_page_is_reported(tmp_path: Path) -> None:
    run = run_page(page(tmp_path, GOOD.replace("    42\n", "    43\n")), tmp_path)
    [problem] = problems(run)
    assert "printed something else than the page says" in problem
    assert "--- the page ---\n43" in problem
    assert "--- printed ---\n42" in problem


def test_a_hanging_example_is_killed_and_reported(tmp_path: Path) -> None:
    path = page(tmp_path, '```python\nprint("start")\nimport time\ntime.sleep(30)\n```\n')
    run = run_page(path, tmp_path, timeout=3)
    [problem] = problems(run)
    assert "did not finish in time" in problem
    assert "start" in problem


def test_queue_settings_of_the_environment_do_not_leak_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_MAX_RETRIES", "7")
    code = "from taskqueue_core import QueueConfig\nprint(QueueConfig.from_env().max_retries)\n"
    run = run_page(page(tmp_path, f"```python\n{code}```\n\n```text\n3\n```\n"), tmp_path)
    assert problems(run) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- not-run -->\n```python\nx\n```\n", "write why"),
        ("<!-- not-run: -->\n```python\nx\n```\n", "write why"),
        ("<!-- not-run: why -->\n```text\nx\n```\n", "right before a python block"),
        ("```python\nx\n", "never closed"),
    ],
)
def test_malformed_pages_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MarkdownError, match=message):
        read_examples(page(tmp_path, text))


@pytest.mark.parametrize(
    "expected, output, result",
    [
        ("a\nb\n", "a  \nb\n\n", True),
        ("a ... c", "a b c", True),
        ("a\n...\nd", "a\nb\nc\nd", True),
        ("a\nb", "a\nc", False),
        ("a", "a\nb", False),
        ("(1+1)", "(1+1)", True),  # regular expression characters are literal
    ],
)
def test_output_matching(expected: str, output: str, result: bool) -> None:
    assert matches(expected, output) is result
