"""``taskq migrate``: create or update the taskqueue tables in the configured database."""

from __future__ import annotations

import asyncio

from taskqueue_core.cli.base import (
    EXIT_OK,
    JSON_OPTION,
    OPEN_TIMEOUT,
    CliError,
    QueueCommand,
    describe_error,
)
from taskqueue_core.cli.output import safe_url
from taskqueue_core.exceptions import TaskQueueError

__all__ = ["MigrateCommand"]


class MigrateCommand(QueueCommand):
    name = "migrate"
    description = "Create or update the taskqueue tables (idempotent)."
    options = [JSON_OPTION]
    help = (
        "Brings the configured database to the current taskqueue schema: the tables "
        "<comment>queued_tasks</comment>, <comment>queued_task_dependencies</comment>, "
        "<comment>queued_task_logs</comment> and <comment>queued_task_workers</comment> and "
        "their indexes. Safe to run at every deployment: a database that is up to date is "
        "left alone. On SQLite it creates the schema (which workers also do on start)."
    )

    async def perform(self) -> int:
        url = self.config.database_url
        shown = safe_url(url)
        if url.startswith("memory://"):
            return self._report(
                shown, [], "memory:// keeps tasks in the process: nothing to migrate."
            )
        from taskqueue_core.tortoise.schema import migrate

        try:
            # Bounded like every connection the console makes (see OPEN_TIMEOUT); the
            # migration itself is a handful of DDL statements.
            applied = await asyncio.wait_for(migrate(url), OPEN_TIMEOUT * 4)
        except TimeoutError as exc:
            raise CliError(
                f"cannot migrate {shown}: no answer within {OPEN_TIMEOUT * 4:.0f}s"
            ) from exc
        except TaskQueueError as exc:  # names the database already (password hidden)
            raise CliError(describe_error(exc)) from exc
        except Exception as exc:
            raise CliError(f"cannot migrate {shown}: {describe_error(exc)}") from exc
        if applied:
            message = f"Migrated {shown}: applied {', '.join(applied)}."
        else:
            message = f"{shown} is up to date."
        return self._report(shown, applied, message)

    def _report(self, shown: str, applied: list[str], message: str) -> int:
        if self.wants_json:
            self.write_json({"database": shown, "applied": applied, "up_to_date": not applied})
        else:
            self.text(message)
        return EXIT_OK
