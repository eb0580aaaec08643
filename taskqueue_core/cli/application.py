"""The ``taskq`` console: a cleo application with one command per module.

Every command takes the global options ``--database-url`` and ``--config module:attr``
(a ``QueueConfig``); without them the configuration comes from the ``QUEUE_*`` environment.
Errors are one line on stderr and a non-zero exit code; ``-v`` adds the traceback.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from cleo.application import Application
from cleo.exceptions import CleoError
from cleo.formatters.formatter import Formatter
from cleo.io.inputs.definition import Definition
from cleo.io.inputs.option import Option
from cleo.io.io import IO

from taskqueue_core.cli.base import EXIT_USAGE, QueueCommand, QueueFactory
from taskqueue_core.cli.cancel import CancelCommand
from taskqueue_core.cli.clear import ClearCommand
from taskqueue_core.cli.logs import LogsCommand
from taskqueue_core.cli.migrate import MigrateCommand
from taskqueue_core.cli.retry import RetryCommand
from taskqueue_core.cli.serve import ServeCommand
from taskqueue_core.cli.servers import ServersCommand
from taskqueue_core.cli.show import ShowCommand
from taskqueue_core.cli.start import StartCommand
from taskqueue_core.cli.stats import StatsCommand
from taskqueue_core.cli.status import StatusCommand

__all__ = ["TaskqApplication", "create_application", "main"]


def _version() -> str:
    try:
        return version("taskqueue")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


class TaskqApplication(Application):
    """``taskq``: global configuration options and one-line errors on top of cleo."""

    def __init__(self) -> None:
        super().__init__("taskq", _version())

    @property
    def _default_definition(self) -> Definition:
        definition = super()._default_definition
        definition.add_option(
            Option(
                "--database-url",
                flag=False,
                requires_value=True,
                description="Database of the queue (overrides QUEUE_DATABASE_URL and --config).",
            )
        )
        definition.add_option(
            Option(
                "--config",
                flag=False,
                requires_value=True,
                description="A QueueConfig to use instead of QUEUE_* (module:attribute).",
            )
        )
        return definition

    def _run(self, io: IO) -> int:
        # cleo's own errors (unknown command or option, missing argument) are usage errors:
        # one line and exit code 2, like the commands' own option checks.
        try:
            return super()._run(io)
        except CleoError as exc:
            self.render_error(exc, io)
            return EXIT_USAGE

    def render_error(self, error: Exception, io: IO) -> None:
        if io.is_verbose():
            super().render_error(error, io)
            return
        message = str(error).strip() or type(error).__name__
        io.write_error_line(f"<fg=red;options=bold>error:</> {Formatter.escape(message)}")


COMMANDS: tuple[type[QueueCommand], ...] = (
    StatusCommand,
    StatsCommand,
    ServersCommand,
    StartCommand,
    ServeCommand,
    MigrateCommand,
    ShowCommand,
    LogsCommand,
    CancelCommand,
    RetryCommand,
    ClearCommand,
)


def create_application(*, queue_factory: QueueFactory | None = None) -> TaskqApplication:
    """A ``taskq`` application with every command registered.

    ``queue_factory`` builds the queue each command opens (default ``TaskQueue(config)``).
    """
    application = TaskqApplication()
    for command_class in COMMANDS:
        application.add(command_class(queue_factory=queue_factory))
    return application


def main() -> int:
    """Entry point of the ``taskq`` console script."""
    return create_application().run()
