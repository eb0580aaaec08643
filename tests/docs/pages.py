"""Documentation pages as programs: their Python examples, run in order as one script.

The rules a page follows (``docs/*.md``):

- Every fenced ``python`` block runs, in page order, as one script: a block is a complete
  program or continues the blocks before it (same ``__main__`` module, as if the blocks
  were pasted one after the other into a file).
- A block that cannot run (a FastAPI endpoint without its app, a signature) is preceded by
  ``<!-- not-run: reason -->``. A marker without a reason, or not followed by a ``python``
  block, is an error.
- A ``text`` block right after a runnable block (only blank lines between) is that block's
  output: what the block prints must match it, line by line (trailing spaces and blank lines
  at either end ignored), where ``...`` stands for any text, line breaks included.

``read_examples`` parses a page; ``run_page`` runs its examples in a subprocess (``runner.py``)
and ``problems`` says what went wrong, showing the source of the block at fault.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REPO",
    "Example",
    "MarkdownError",
    "PageRun",
    "problems",
    "read_examples",
    "run_page",
]

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("runner.py")
SEPARATOR = "\x1edocs-example-{}\x1e"
"""Printed by the runner before each block, so the output can be split per block."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*not-run(?P<rest>.*?)-->\s*$")


class MarkdownError(ValueError):
    """A page breaks the rules its examples follow (see the module docstring)."""


@dataclass(frozen=True)
class Example:
    """One ``python`` block of a page."""

    source: str
    line: int
    """Line number, in the page, of the block's first source line (1-based)."""
    skip: str | None = None
    """Why it does not run (its ``not-run`` marker), or None: it runs."""
    expected: str | None = None
    """The ``text`` block right after it: what it prints."""


@dataclass(frozen=True)
class _Fence:
    language: str
    start: int  # index of the opening fence line
    end: int  # index of the closing fence line
    body: str


def _fences(lines: list[str], path: Path) -> list[_Fence]:
    fences: list[_Fence] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = (match["info"].split() or [""])[0].lower()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if end == len(lines):
            raise MarkdownError(f"{path}:{index + 1}: code fence is never closed")
        # A block inside a list item is indented like its fence: take that indent off.
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        fences.append(_Fence(language, index, end, "\n".join(body) + "\n"))
        index = end + 1
    return fences


def _previous_text(lines: list[str], index: int) -> tuple[int, str] | None:
    """The last non-blank line before ``index`` (its index and text), if any."""
    for before in range(index - 1, -1, -1):
        if lines[before].strip():
            return before, lines[before]
    return None


def read_examples(path: Path) -> list[Example]:
    """The ``python`` blocks of the page at ``path``, in order.

    Raises ``MarkdownError`` for an unclosed fence, a ``not-run`` marker without a reason,
    or one that is not followed by a ``python`` block.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    fences = _fences(lines, path)
    used_markers: set[int] = set()
    examples: list[Example] = []
    for position, fence in enumerate(fences):
        if fence.language not in {"python", "py"}:
            continue
        skip: str | None = None
        previous = _previous_text(lines, fence.start)
        if previous is not None and (marker := _MARKER.match(previous[1])):
            reason = marker["rest"].strip().removeprefix(":").strip()
            if not marker["rest"].strip().startswith(":") or not reason:
                raise MarkdownError(
                    f"{path}:{previous[0] + 1}: write why the block does not run: "
                    "<!-- not-run: reason -->"
                )
            skip = reason
            used_markers.add(previous[0])
        expected: str | None = None
        following = fences[position + 1] if position + 1 < len(fences) else None
        if (
            skip is None
            and following is not None
            and following.language == "text"
            and not any(line.strip() for line in lines[fence.end + 1 : following.start])
        ):
            expected = following.body
        examples.append(Example(fence.body, fence.start + 2, skip, expected))
    for number, line in enumerate(lines):
        if _MARKER.match(line) and number not in used_markers:
            raise MarkdownError(
                f"{path}:{number + 1}: a not-run marker must come right before a python block"
            )
    return examples


@dataclass(frozen=True)
class PageRun:
    """What running a page's examples gave."""

    path: Path
    examples: list[Example]
    """The runnable examples, in the order they ran."""
    outputs: list[str]
    """What each example printed (fewer than ``examples`` if one failed)."""
    failed: int | None
    """Index (in ``examples``) of the example that raised, or None."""
    returncode: int | None
    """The script's exit status; None when it was killed for its timeout."""
    stderr: str


def run_page(path: Path, cwd: Path, *, timeout: float = 60.0) -> PageRun:
    """Run the runnable examples of the page at ``path`` as one script, in a subprocess.

    ``cwd`` is the script's working directory (files it writes land there). The repository
    is on ``PYTHONPATH`` and no ``QUEUE_*`` variable of the caller's environment leaks in.
    """
    examples = [example for example in read_examples(path) if example.skip is None]
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUE_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    spec = {
        "path": str(path),
        "separator": SEPARATOR,
        "blocks": [{"line": e.line, "source": e.source} for e in examples],
    }
    try:
        done = subprocess.run(
            [sys.executable, str(RUNNER)],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stdout = _text(exc.stdout)
        outputs = _split(stdout)
        return PageRun(
            path,
            examples,
            outputs,
            max(len(outputs) - 1, 0),
            None,
            _text(exc.stderr) + f"\n[killed after {timeout:g} s]",
        )
    outputs = _split(done.stdout)
    failed = None if done.returncode == 0 else max(len(outputs) - 1, 0)
    return PageRun(path, examples, outputs, failed, done.returncode, done.stderr)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _split(stdout: str) -> list[str]:
    """The output of each example (the runner prints a separator before each one)."""
    pattern = re.escape(SEPARATOR).replace(re.escape("{}"), r"\d+") + r"\n?"
    return re.split(pattern, stdout)[1:]


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def matches(expected: str, output: str) -> bool:
    """True when ``output`` is ``expected``, ``...`` in it standing for any text."""
    pieces = [re.escape(piece) for piece in _normal(expected).split("...")]
    return re.fullmatch(".*?".join(pieces), _normal(output), flags=re.DOTALL) is not None


def _show(example: Example, path: Path) -> str:
    numbered = "\n".join(
        f"{example.line + offset:5d} | {line}"
        for offset, line in enumerate(example.source.rstrip("\n").splitlines())
    )
    return f"{path.name}, the block at line {example.line}:\n{numbered}"


def problems(run: PageRun) -> list[str]:
    """What went wrong, one message per problem, each showing the block at fault."""
    found: list[str] = []
    rel = run.path.name
    for index, example in enumerate(run.examples):
        if index >= len(run.outputs):
            break
        output = run.outputs[index]
        if index == run.failed:
            status = "did not finish in time" if run.returncode is None else "raised an exception"
            found.append(
                f"{_show(example, run.path)}\n{status}.\n"
                f"--- its output ---\n{output}\n--- stderr ---\n{run.stderr}"
            )
            break
        if example.expected is not None and not matches(example.expected, output):
            found.append(
                f"{_show(example, run.path)}\nprinted something else than the page says.\n"
                f"--- the page ---\n{textwrap.dedent(example.expected)}"
                f"--- printed ---\n{output}"
            )
    if run.failed is None and len(run.outputs) != len(run.examples):
        found.append(
            f"{rel}: {len(run.examples)} examples, but {len(run.outputs)} ran "
            f"(exit status {run.returncode})\n--- stderr ---\n{run.stderr}"
        )
    if run.failed is not None and not found:
        found.append(f"{rel}: the script failed before its first example\n{run.stderr}")
    return found
