"""``taskq serve APP``: run an ASGI application under uvicorn, with workers in the process.

- ``taskq serve APP``: the HTTP server only (the application's lifespan decides whether it
  runs an embedded worker of its own, as it does under plain uvicorn);
- ``taskq serve APP --workers=N``: the HTTP server and a worker pool of N slots in the same
  process (every ``taskqueue_lifespan`` of the application, whether it is the application's
  lifespan or entered inside another, has its embedded worker turned off, so that the
  process runs exactly one pool);
- ``taskq serve APP --no-http``: the workers only; the application is imported for its tasks
  and hooks.

uvicorn is imported only here, with a clear error when it is missing (``taskqueue[server]``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from cleo.helpers import argument, option

from taskqueue_core.cli.base import (
    EXIT_OK,
    CliError,
    QueueCommand,
    UsageError,
    load_object,
    parse_positive_int,
)
from taskqueue_core.cli.output import safe_url
from taskqueue_core.cli.start import configure_workers, run_pool, worker_options

if TYPE_CHECKING:
    import uvicorn

    from taskqueue_core.config import QueueConfig
    from taskqueue_fastapi.lifespan import TaskQueueLifespan

__all__ = ["ServeCommand"]


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise CliError(
            "taskq serve needs uvicorn: pip install 'taskqueue[server]' (or pip install uvicorn)"
        ) from None
    return uvicorn


def _taskqueue_lifespan_of(app: Any) -> TaskQueueLifespan | None:
    """The application's ``TaskQueueLifespan`` when it is the application's lifespan."""
    try:
        from taskqueue_fastapi.lifespan import TaskQueueLifespan
    except ImportError:  # the adapter's dependencies are not installed: nothing to find
        return None
    lifespan = getattr(getattr(app, "router", None), "lifespan_context", None)
    return lifespan if isinstance(lifespan, TaskQueueLifespan) else None


def _forget_command_settings() -> None:
    try:
        from taskqueue_fastapi.lifespan import set_command_settings
    except ImportError:
        return
    set_command_settings(None)


def _quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that stops on SIGTERM/SIGINT without re-raising the signal.

    uvicorn re-raises the signal that stopped it once it has shut down, which kills the
    process with that signal before the command has stopped its workers; taskq instead
    finishes its own shutdown and exits 0.
    """
    _uvicorn()
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def _on_signal(self, sig: int, frame: FrameType | None) -> None:
            stopping: bool = self.should_exit
            if stopping and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: do not wait for connections
            self.should_exit = True

    return QuietServer(config)


class ServeCommand(QueueCommand):
    name = "serve"
    description = "Run an ASGI application under uvicorn, with workers in the same process."
    arguments = [argument("app", "The application, as module:attribute (e.g. myapp.main:app).")]
    options = [
        *worker_options(),
        option("no-http", None, "Run the workers only, no HTTP server.", flag=True),
        option("host", None, "Address to listen on.", flag=False, default="127.0.0.1"),
        option("port", None, "Port to listen on.", flag=False, default="8000"),
    ]
    help = (
        "Runs APP (module:attribute) under uvicorn.\n\n"
        "  <info>taskq serve myapp.main:app</info>               the HTTP server only\n"
        "  <info>taskq serve myapp.main:app --workers=3</info>   HTTP and a pool of 3 workers\n"
        "  <info>taskq serve myapp.main:app --workers=3 --no-http</info>   workers only\n\n"
        "With <info>--workers</info>, every <comment>taskqueue_lifespan(...)</comment> of the "
        "application (its lifespan, or entered inside its own) has its embedded worker turned "
        "off, so the process runs one pool. A taskqueue_lifespan without a configuration of its "
        "own uses "
        "the command's (QUEUE_*, <info>--database-url</info>, <info>--config</info>). "
        "SIGTERM or SIGINT stops the server, then the workers (running tasks finish or go back "
        "to the queue); the exit code is then 0."
    )

    async def perform(self) -> int:
        host = str(self.option("host")).strip()
        if not host:
            raise UsageError("--host must not be empty")
        port = parse_positive_int("--port", self.option("port"), maximum=65535)
        no_http = bool(self.option("no-http"))
        with_workers = no_http or self.option("workers") is not None
        config = configure_workers(self)
        app = load_object(str(self.argument("app")), what="APP")
        if no_http:
            return await run_pool(self, config, processes=1, title="starting workers (no HTTP)")
        _uvicorn()
        if not callable(app):
            raise UsageError(f"APP {self.argument('app')} is not an ASGI application")
        embedded = self._adopt_lifespan(app, config, with_workers=with_workers)
        try:
            return await self._run(app, config, host, port, with_workers, embedded)
        finally:
            _forget_command_settings()

    async def _run(
        self,
        app: Any,
        config: QueueConfig,
        host: str,
        port: int,
        with_workers: bool,
        embedded: str | None,
    ) -> int:
        uvicorn = _uvicorn()
        server = _quiet_server(uvicorn.Config(app, host=host, port=port, log_level="info"))
        if not with_workers:
            workers = embedded or "none started by taskq (the application may run its own)"
            self._summary(config, host, port, workers=workers)
            await self._serve(server, host, port)
            self.line("<info>taskq</info> stopped")
            return EXIT_OK
        extra = [
            ("http", f"http://{host}:{port}"),
            (
                "lifespan",
                embedded
                or "any taskqueue_lifespan the application enters runs without its embedded worker",
            ),
        ]
        return await run_pool(
            self,
            config,
            processes=1,
            title="serving with workers",
            extra=extra,
            beside=lambda: self._serve(server, host, port),
        )

    def _adopt_lifespan(self, app: Any, config: QueueConfig, *, with_workers: bool) -> str | None:
        """Make every ``taskqueue_lifespan`` of this process follow this command; describe
        the workers of the application's own one (None: it has none this command can see,
        for instance when it enters one inside a lifespan of its own)."""
        try:
            from taskqueue_fastapi.lifespan import CommandSettings, set_command_settings
        except ImportError:  # the adapter's dependencies are not installed: nothing to adopt
            return None
        # Process-wide, so that it also reaches a taskqueue_lifespan entered inside the
        # application's own lifespan, which cannot be found from the application object.
        set_command_settings(CommandSettings(config=config, embedded_workers=not with_workers))
        lifespan = _taskqueue_lifespan_of(app)
        if lifespan is None:
            return None
        if with_workers:
            return "taskqueue_lifespan without its embedded worker (this pool runs the tasks)"
        if lifespan.run_workers:
            workers = (lifespan.config or config).max_workers
            return f"{workers}, embedded by the application's taskqueue_lifespan"
        return "none (HTTP only)"

    def _summary(self, config: QueueConfig, host: str, port: int, *, workers: str) -> None:
        self.line("<info>taskq</info> serving")
        rows = [
            ("http", f"http://{host}:{port}"),
            ("database", safe_url(config.database_url)),
            ("workers", workers),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.text(f"  {label.ljust(width)}  {value}")
        self.io.flush()

    async def _serve(self, server: uvicorn.Server, host: str, port: int) -> None:
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn exits this way when it cannot start (port in use, lifespan failed).
            raise CliError(
                f"the HTTP server could not start on {host}:{port} (see the log above)"
            ) from exc
