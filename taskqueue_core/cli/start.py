"""``taskq start``: run workers in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cleo.helpers import option

from taskqueue_core.cli.base import (
    EXIT_OK,
    QueueCommand,
    UsageError,
    import_modules,
    parse_positive_int,
)
from taskqueue_core.cli.output import safe_url
from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError

__all__ = [
    "StartCommand",
    "configure_workers",
    "parse_channels",
    "run_pool",
    "worker_options",
    "worker_summary",
]

MAX_PROCESSES = 256


def parse_channels(raw: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--channel`` values (each may also be comma-separated) or None for "every channel".

    Raises ``UsageError`` for an empty name.
    """
    if not raw:
        return None
    channels: list[str] = []
    for item in raw:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                raise UsageError(f"--channel must name a channel, got {item!r}")
            if name not in channels:
                channels.append(name)
    return tuple(channels)


def worker_options() -> list[Any]:
    """The options ``start`` and ``serve`` share to shape their workers."""
    return [
        option(
            "workers",
            "w",
            "Concurrent tasks per process (default: QUEUE_MAX_WORKERS, else the CPU count).",
            flag=False,
        ),
        option(
            "channel",
            "c",
            "Only claim tasks of this channel (repeat for several; default: all).",
            flag=False,
            multiple=True,
        ),
        option(
            "import",
            "i",
            "Import this module first, for its tasks and hooks (repeatable; adds to "
            "QUEUE_IMPORTS).",
            flag=False,
            multiple=True,
        ),
    ]


def configure_workers(command: QueueCommand) -> QueueConfig:
    """Apply ``--workers``, ``--channel`` and ``--import`` to the command's configuration,
    import every module it names, and return the new configuration.

    Raises ``UsageError`` for bad values and ``CliError`` for a module that fails to import.
    """
    config = command.config
    changes: dict[str, Any] = {}
    raw_workers = command.option("workers")
    if raw_workers is not None:
        changes["max_workers"] = parse_positive_int("--workers", raw_workers)
    channels = parse_channels(command.option("channel"))
    if channels is not None:
        changes["channels"] = channels
    configured = config.imports
    extra = [name.strip() for name in command.option("import") or []]
    if any(not name for name in extra):
        raise UsageError("--import must name a module")
    extra = [name for name in dict.fromkeys(extra) if name not in configured]
    if extra:
        # In the configuration too: worker processes started by the pool import them as well.
        changes["imports"] = (*configured, *extra)
    if changes:
        try:
            config = dataclasses.replace(config, **changes)
        except ConfigError as exc:
            raise UsageError(exc.message) from None
    # The configuration's modules first (the application's own), then the command line's.
    import_modules(configured, origin=command.setting_name("imports"))
    import_modules(extra, origin="--import")
    command.use_config(config)
    return config


def worker_summary(
    config: QueueConfig, *, processes: int, supports_notify: bool
) -> list[tuple[str, str]]:
    """The startup summary: (label, value) rows."""
    if config.is_postgres and config.use_postgresql_notify and supports_notify:
        notify = (
            f"on (LISTEN {config.notify_channel}; "
            f"safety poll every {config.fallback_polling_interval:g}s)"
        )
    else:
        notify = f"off (polling every {config.polling_interval:g}s)"
    return [
        ("database", safe_url(config.database_url)),
        (
            "server",
            config.resolved_server_name
            if processes == 1
            else f"one per child process ({processes} processes)",
        ),
        ("channels", ", ".join(config.channels) if config.channels else "all"),
        ("workers", f"{config.max_workers} per process"),
        ("processes", str(processes)),
        ("notify", notify),
        ("imports", ", ".join(config.imports) if config.imports else "none"),
    ]


class StartCommand(QueueCommand):
    name = "start"
    description = "Run workers until SIGTERM or SIGINT (Ctrl-C)."
    options = [
        *worker_options(),
        option(
            "processes",
            "p",
            "Worker processes to run (for CPU-bound tasks).",
            flag=False,
            default="1",
        ),
    ]
    help = (
        "Runs a worker pool in the foreground: it registers in "
        "<comment>queued_task_workers</comment>, claims tasks (woken by LISTEN/NOTIFY on "
        "PostgreSQL) and runs up to <info>--workers</info> of them at once in each of "
        "<info>--processes</info> processes. It first imports QUEUE_IMPORTS and every "
        "<info>--import</info> module, so that task functions and hooks are registered.\n\n"
        "SIGTERM or SIGINT stops it gracefully: no new claims, running tasks get "
        "QUEUE_SHUTDOWN_GRACE seconds to finish, the rest go back to the queue, and the "
        "server unregisters. The exit code is then 0."
    )

    async def perform(self) -> int:
        processes = parse_positive_int(
            "--processes", self.option("processes"), maximum=MAX_PROCESSES
        )
        config = configure_workers(self)
        return await run_pool(self, config, processes=processes, title="starting workers")


async def run_pool(
    command: QueueCommand,
    config: QueueConfig,
    *,
    processes: int,
    title: str,
    extra: Sequence[tuple[str, str]] = (),
    beside: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Open the queue, print the startup summary and run a ``WorkerPool`` until it stops.

    Without ``beside`` the pool owns SIGTERM/SIGINT and runs until one arrives. With it, the
    pool runs in the background while ``beside()`` runs (an HTTP server that owns the
    signals), and stops gracefully when ``beside()`` returns or fails.
    """
    from taskqueue_core.pool import WorkerPool

    async with command.open_queue() as queue:
        command.line(f"<info>taskq</info> {title}")
        rows = [
            *extra,
            *worker_summary(
                config, processes=processes, supports_notify=queue.repository.supports_notify
            ),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            command.text(f"  {label.ljust(width)}  {value}")
        command.io.flush()
        pool = WorkerPool(
            queue,
            processes=processes,
            install_signal_handlers=beside is None,
            channels=config.channels,
        )
        if beside is None:
            await pool.run_forever()
        else:
            await pool.start()
            try:
                await beside()
            finally:
                await pool.stop()
    command.line("<info>taskq</info> stopped")
    command.io.flush()
    return EXIT_OK
