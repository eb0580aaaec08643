"""Every Python example of the user guide runs, and prints what the page says it prints.

Each page runs as one script in a subprocess (see ``pages.py`` for the rules a page follows):
its examples use ``memory://`` queues or SQLite files in a temporary directory, so no server
is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.pages import REPO, problems, read_examples, run_page

PAGES = [
    "index.md",
    "tasks.md",
    "control.md",
    "context.md",
    "logging.md",
    "hooks.md",
    "fastapi.md",
    "operations.md",
    "console.md",
    "configuration.md",
]


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page: str, tmp_path: Path) -> None:
    run = run_page(REPO / "docs" / page, tmp_path)
    found = problems(run)
    assert not found, "\n\n".join(found)


@pytest.mark.parametrize("page", PAGES)
def test_page_has_examples_that_run(page: str) -> None:
    """A page cannot pass by marking everything not-run: most of its examples run."""
    examples = read_examples(REPO / "docs" / page)
    skipped = [e for e in examples if e.skip is not None]
    assert len(skipped) <= len(examples) - len(skipped), (
        f"{page}: {len(skipped)} of {len(examples)} examples are marked not-run"
    )
