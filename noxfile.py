"""Developer sessions: ``nox -s tests lint typecheck docs``; ``nox -s bench`` for benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["taskqueue_core", "taskqueue_fastapi"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (needs PostgreSQL; see README)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the packages."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", *[f"-p={p}" for p in PACKAGES])


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation strictly (broken links and missing pages fail)."""
    session.install("mkdocs")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side throughput and latency benchmarks (needs PostgreSQL; takes minutes)."""
    session.install("-e", ".[dev]", "pgqueuer>=1.6,<1.7", "matplotlib")
    session.run("python", "-m", "benchmarks", *session.posargs)
