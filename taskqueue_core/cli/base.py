"""What every ``taskq`` command shares: configuration, option parsing, errors, output.

A command subclasses ``QueueCommand`` and implements ``async perform() -> int``; the base runs
it in a fresh event loop and turns every error into one line on stderr with a non-zero exit
code (the traceback follows only with ``-v``):

- ``0``: success;
- ``1``: the operation failed (database unreachable, unknown task, a task in the wrong
  state, confirmation declined);
- ``2``: the command line or configuration is wrong (bad option value, invalid ``QUEUE_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import re
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cleo.commands.command import Command
from cleo.formatters.formatter import Formatter
from cleo.helpers import option
from cleo.io.outputs.output import Type as OutputType
from cleo.io.outputs.stream_output import StreamOutput
from cleo.ui.table_style import TableStyle

from taskqueue_core.cli.output import safe_url, to_json
from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError, RepositoryError, TaskQueueError, UnknownTask

if TYPE_CHECKING:
    from cleo.ui.progress_bar import ProgressBar

    from taskqueue_core.queue import TaskQueue

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "QueueCommand",
    "QueueFactory",
    "UsageError",
    "describe_error",
    "import_modules",
    "load_object",
    "parse_positive_int",
    "parse_since",
    "parse_task_ids",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

OPEN_TIMEOUT = 30.0
"""Seconds to wait for the database when a command opens the queue (a host that drops
packets would otherwise hold the console for the driver's own, much longer, timeout)."""

QueueFactory = Callable[[QueueConfig], "TaskQueue"]
"""Builds the queue a command opens; the default is ``TaskQueue(config)``. Tests and
embedding programs pass their own (e.g. over an ``InMemoryRepository``)."""

JSON_OPTION = option("json", None, "Print the result as JSON (for scripts).", flag=True)


class CliError(Exception):
    """A command failed; ``message`` is the one line shown to the user."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UsageError(CliError):
    """The command line or the configuration is wrong."""

    exit_code = EXIT_USAGE


# -- parsing -------------------------------------------------------------------------------


def parse_positive_int(name: str, raw: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``raw`` (a string from the command line) as an int within bounds.

    Raises ``UsageError`` naming the option, e.g. ``--workers must be a whole number of at
    least 1, got 'abc'``.
    """
    bounds = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    text = str(raw).strip()
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be a whole number {bounds}, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise UsageError(f"{name} must be a whole number {bounds}, got {raw!r}")
    return value


def parse_task_ids(raw: Iterable[str]) -> list[int]:
    """Task ids from arguments, in order and without duplicates. Raises ``UsageError``."""
    ids: list[int] = []
    for item in raw:
        text = str(item).strip()
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"a task id must be a positive whole number, got {item!r}")
        value = int(text)
        if value not in ids:
            ids.append(value)
    return ids


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_since(raw: str, *, now: datetime | None = None) -> datetime:
    """A moment from ``--since``: relative (``90s``, ``30m``, ``1h``, ``1h30m``, ``2d``,
    ``1w``: that long ago) or an ISO 8601 date/time (without a zone: local time).

    Returns an aware UTC datetime. Raises ``UsageError``.
    """
    text = raw.strip()
    now = now or datetime.now(UTC)
    compact = text.replace(" ", "")
    if compact and _RELATIVE.sub("", compact) == "":
        seconds = sum(
            float(amount) * _UNITS[unit.lower()] for amount, unit in _RELATIVE.findall(compact)
        )
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since must be a duration like 30m, 1h or 2d, or an ISO date/time like "
            f"2024-05-01T12:00, got {raw!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: the local time of this machine
    return moment.astimezone(UTC)


# -- importing user code -------------------------------------------------------------------


def _cwd_importable() -> None:
    # A console script's sys.path does not hold the working directory (``python -m`` does);
    # users expect ``--import myapp.tasks`` to find the package they are standing in.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_modules(names: Sequence[str], *, origin: str) -> None:
    """Import each module of ``names`` (tasks, hooks); ``origin`` says where they came from.

    Raises ``CliError`` naming the module and what went wrong.
    """
    _cwd_importable()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise CliError(f"cannot import {name!r} ({origin}): {describe_error(exc)}") from exc


def load_object(spec: str, *, what: str) -> Any:
    """The object named by ``module:attr`` (``attr`` may be dotted). Raises ``UsageError``
    for a malformed spec and ``CliError`` when the module or attribute is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{what} must be written module:attribute, got {spec!r}")
    _cwd_importable()
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(f"cannot import {module_name!r} ({what}): {describe_error(exc)}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attr!r} ({what})") from None
    return target


def describe_error(exc: BaseException) -> str:
    """One line describing ``exc``, with the driver error a ``RepositoryError`` wraps."""
    message = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, TaskQueueError) and type(exc).__name__ not in message:
        message = f"{type(exc).__name__}: {message}"
    cause = exc.__cause__
    if isinstance(exc, RepositoryError) and cause is not None:
        detail = str(cause).strip() or type(cause).__name__
        if detail not in message:
            message = f"{message}: {detail}"
    return " ".join(message.split())


# -- the command base ----------------------------------------------------------------------


class QueueCommand(Command):
    """Base of the ``taskq`` commands. Subclasses implement ``perform``."""

    def __init__(self, *, queue_factory: QueueFactory | None = None) -> None:
        super().__init__()
        self._queue_factory = queue_factory
        self._config: QueueConfig | None = None

    # -- running ---------------------------------------------------------------------------

    def handle(self) -> int:
        try:
            return self.run_sync()
        except KeyboardInterrupt:
            self.io.write_error_line("interrupted", type=OutputType.RAW)
            return 130
        except CliError as exc:
            return self._fail(exc.message, exc.exit_code, exc)
        except ConfigError as exc:
            return self._fail(exc.message, EXIT_USAGE, exc)
        except UnknownTask as exc:
            return self._fail(exc.message, EXIT_FAILURE, exc)
        except RepositoryError as exc:
            where = f" ({safe_url(self._config.database_url)})" if self._config else ""
            return self._fail(f"database error{where}: {describe_error(exc)}", EXIT_FAILURE, exc)
        except TaskQueueError as exc:
            return self._fail(describe_error(exc), EXIT_FAILURE, exc)
        except Exception as exc:
            hint = "" if self.io.is_verbose() else " (run with -v for the traceback)"
            return self._fail(f"{describe_error(exc)}{hint}", EXIT_FAILURE, exc)

    def run_sync(self) -> int:
        """Run ``perform`` in a new event loop (each command is one ``asyncio.run``)."""
        return asyncio.run(self.perform())

    async def perform(self) -> int:
        """Do the command's work; return the exit code."""
        raise NotImplementedError

    def _fail(self, message: str, code: int, exc: BaseException) -> int:
        if self.io.is_verbose():
            trace = "".join(traceback.format_exception(exc)).rstrip()
            self.io.write_error_line(trace, type=OutputType.RAW)
        self.error_line(message)
        return code

    # -- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> QueueConfig:
        """The configuration: ``--config``, else ``QUEUE_*``; ``--database-url`` wins.

        Raises ``UsageError`` / ``ConfigError`` (exit code 2).
        """
        if self._config is None:
            self._config = self._load_config()
        return self._config

    def use_config(self, config: QueueConfig) -> None:
        """Replace the configuration (a command that applies its own options to it)."""
        self._config = config

    def _load_config(self) -> QueueConfig:
        spec = self._global_option("config")
        url = self._global_option("database-url")
        if spec:
            target = load_object(spec, what="--config")
            if callable(target) and not isinstance(target, QueueConfig):
                target = target()
            if not isinstance(target, QueueConfig):
                raise UsageError(
                    f"--config {spec} must name a QueueConfig (or a function returning one), "
                    f"got {type(target).__name__}"
                )
            config = target
        else:
            config = QueueConfig.from_env()
        if url:
            try:
                # A copy: the object named by --config may be shared with the host program.
                config = dataclasses.replace(config, database_url=url)
            except ConfigError as exc:
                raise UsageError(
                    exc.message.replace("QUEUE_DATABASE_URL", "--database-url")
                ) from None
        return config

    def setting_name(self, field: str) -> str:
        """How the user names the setting ``field`` in messages: ``QUEUE_<FIELD>``, or the
        attribute of the ``--config`` object."""
        spec = self._global_option("config")
        return f"{spec}.{field}" if spec else f"QUEUE_{field.upper()}"

    def _global_option(self, name: str) -> Any:
        # The global options exist when the command runs inside the taskq application.
        if not self.io.input.has_option(name):
            return None
        value = self.option(name)
        return value or None

    def new_queue(self, config: QueueConfig) -> TaskQueue:
        """A new, unopened queue for ``config`` (through the application's factory, if any)."""
        if self._queue_factory is not None:
            return self._queue_factory(config)
        from taskqueue_core.queue import TaskQueue

        return TaskQueue(config)

    @asynccontextmanager
    async def open_queue(self) -> AsyncIterator[TaskQueue]:
        """An open ``TaskQueue`` on the configured database, closed on exit.

        Raises ``CliError`` naming the database (password hidden) when it cannot be opened.
        """
        config = self.config
        queue: TaskQueue | None = None
        try:
            queue = self.new_queue(config)
            await asyncio.wait_for(queue.open(), OPEN_TIMEOUT)
        except (Exception, asyncio.CancelledError) as exc:
            if queue is not None:
                await _close_quietly(queue)
            if isinstance(exc, asyncio.CancelledError | ConfigError):
                raise
            reason = (
                f"no answer within {OPEN_TIMEOUT:.0f}s"
                if isinstance(exc, TimeoutError)
                else describe_error(exc)
            )
            raise CliError(
                f"cannot open the database {safe_url(config.database_url)}: {reason}"
            ) from exc
        try:
            yield queue
        finally:
            await queue.close()

    # -- output ----------------------------------------------------------------------------

    @property
    def wants_json(self) -> bool:
        """True when ``--json`` was given (for commands that have it)."""
        return bool(self.io.input.has_option("json") and self.option("json"))

    def write_json(self, value: Any) -> None:
        """Print ``value`` as JSON, untouched by the console's style tags."""
        self.io.write_line(to_json(value), type=OutputType.RAW)

    def text(self, message: str, style: str | None = None) -> None:
        """Print a line of user data (escaped: ``<`` in it is not a style tag)."""
        self.line(Formatter.escape(message), style)

    def render_rows(
        self,
        rows: Sequence[Sequence[str]],
        *,
        headers: Sequence[str] | None = None,
        numeric: Sequence[int] = (),
    ) -> None:
        """Print a table of user data (escaped); ``numeric`` columns are right-aligned."""
        table = self.table()
        if headers:
            table.set_headers([list(headers)])
        table.set_rows([[Formatter.escape(cell) for cell in row] for row in rows])
        for column in numeric:
            table.set_column_style(column, TableStyle().set_pad_type("left"))
        table.render()

    def error_line(self, message: str) -> None:
        """One error line on stderr."""
        self.io.write_error_line(f"<fg=red;options=bold>error:</> {Formatter.escape(message)}")

    def warning_line(self, message: str) -> None:
        """One warning line on stderr."""
        self.io.write_error_line(f"<fg=yellow>warning:</> {Formatter.escape(message)}")

    @property
    def attached_to_terminal(self) -> bool:
        """True when stdout is a terminal (progress bars are shown only then)."""
        output = self.io.output
        if not isinstance(output, StreamOutput):
            return False
        try:
            return output.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def progress(self, total: int) -> ProgressBar | None:
        """A started progress bar of ``total`` steps on a terminal, else None."""
        if not self.attached_to_terminal or total <= 0 or self.wants_json:
            return None
        bar = self.progress_bar(total)
        bar.start()
        return bar


async def _close_quietly(queue: TaskQueue) -> None:
    # Closing after a failed open: the open error is what the user needs to see.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(queue.close(), 5.0)
