"""``taskqueue_lifespan``: open the task queue with the application, close it with it.

Use it as the application's lifespan::

    app = FastAPI(lifespan=taskqueue_lifespan())

or enter it inside your own lifespan (it is a factory of async context managers)::

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with RegisterTortoise(app, config=TORTOISE_ORM):
            async with taskqueue_lifespan(tortoise="default")(app):
                yield

On entry it builds and opens the ``TaskQueue`` (which opens its repository), stores it in
``app.state.taskqueue`` for ``Depends(get_queue)``, and starts an embedded ``WorkerPool``; on
exit it stops the pool gracefully and closes the queue, which writes every pending
``add_task``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.applications import Starlette

from taskqueue_core.config import QueueConfig
from taskqueue_core.exceptions import ConfigError
from taskqueue_fastapi.dependencies import STATE_KEY

if TYPE_CHECKING:
    from taskqueue_core.queue import TaskQueue
    from taskqueue_core.repository import TaskRepository

__all__ = ["CommandSettings", "TaskQueueLifespan", "set_command_settings", "taskqueue_lifespan"]


@dataclasses.dataclass(frozen=True, slots=True)
class CommandSettings:
    """How a command that serves the application (``taskq serve``) runs its lifespans."""

    config: QueueConfig
    """The configuration of a ``taskqueue_lifespan`` that has none of its own (no ``config``,
    ``queue`` nor ``tortoise``)."""
    embedded_workers: bool
    """False: no ``taskqueue_lifespan`` starts its embedded pool (the command runs one)."""


_command: CommandSettings | None = None


def set_command_settings(settings: CommandSettings | None) -> None:
    """Make ``settings`` apply to every ``taskqueue_lifespan`` of this process that starts
    from now on, however the application uses it: as its lifespan, or entered inside its own
    lifespan (where the command cannot see it). None: each follows its own options again.
    """
    global _command
    _command = settings


class TaskQueueLifespan:
    """A lifespan: call it with the application to get an async context manager.

    The context manager yields the lifespan state ``{"taskqueue": queue}``. Build it with
    ``taskqueue_lifespan``; one instance can serve several runs of the application, one at a
    time (each run builds a fresh queue unless a ``queue`` was given).
    """

    def __init__(
        self,
        config: QueueConfig | None,
        *,
        run_workers: bool,
        tortoise: str | None,
        queue: TaskQueue | None,
        channels: Sequence[str] | None,
    ) -> None:
        self.config = config
        self.run_workers = run_workers
        self.tortoise = tortoise
        self.queue = queue
        self.channels = channels

    def __call__(self, app: Starlette) -> contextlib.AbstractAsyncContextManager[dict[str, Any]]:
        return self._run(app)

    @contextlib.asynccontextmanager
    async def _run(self, app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if getattr(app.state, STATE_KEY, None) is not None:
            raise ConfigError(
                "a task queue is already open for this application: enter taskqueue_lifespan once"
            )
        command = _command
        queue = self.queue if self.queue is not None else self._build_queue(app, command)
        async with contextlib.AsyncExitStack() as stack:
            await queue.open()
            stack.push_async_callback(queue.close)
            setattr(app.state, STATE_KEY, queue)
            stack.callback(_forget_queue, app)
            if self.run_workers and (command is None or command.embedded_workers):
                from taskqueue_core.pool import WorkerPool

                # The host (uvicorn, gunicorn) owns SIGTERM/SIGINT: the lifespan's exit is
                # the pool's signal to stop.
                pool = WorkerPool(queue, channels=self.channels, install_signal_handlers=False)
                await pool.start()
                # Exits run last-in first-out: the pool stops (running tasks finish within
                # shutdown_grace or go back to the queue, its server row is deleted) before
                # the queue writes its pending creations and closes.
                stack.push_async_callback(pool.stop)
            yield {STATE_KEY: queue}

    def _build_queue(self, app: Starlette, command: CommandSettings | None) -> TaskQueue:
        from taskqueue_core.queue import TaskQueue

        if self.config is not None:
            config = self.config
        elif command is not None and self.tortoise is None:
            config = command.config
        else:
            config = QueueConfig.from_env()
        if self.tortoise is None:
            return TaskQueue(config)
        client = _host_client(app, self.tortoise)
        return TaskQueue(config, repository=_joined_repository(client, self.tortoise, config))


def _forget_queue(app: Starlette) -> None:
    if getattr(app.state, STATE_KEY, None) is not None:
        delattr(app.state, STATE_KEY)


def taskqueue_lifespan(
    config: QueueConfig | None = None,
    *,
    run_workers: bool = True,
    tortoise: str | None = None,
    queue: TaskQueue | None = None,
    channels: Sequence[str] | None = None,
) -> TaskQueueLifespan:
    """A lifespan that opens a task queue and runs embedded workers with the application.

    - ``config``: the queue's settings; None reads ``QUEUE_*`` variables when the application
      starts (so an invalid value fails the start-up with ``ConfigError`` naming it).
    - ``run_workers``: run a ``WorkerPool`` inside this process: ``config.max_workers`` slots
      (read live), registered in ``queued_task_workers`` with heartbeats, no signal handlers;
      it stops gracefully with the application (running tasks get ``shutdown_grace``
      seconds, then go back to the queue). False when workers run elsewhere (``taskq start``).
    - ``tortoise``: None opens the queue's own Tortoise context on ``config.database_url``.
      A connection name (e.g. ``"default"``) joins the host's Tortoise setup instead: the host
      registers the app ``"taskqueue_core.tortoise.models"`` in its own Tortoise config and
      initialises Tortoise before this lifespan starts; the queue then writes through that
      connection (PostgreSQL or SQLite, whichever it is) and never closes it.
    - ``queue``: a queue built by the caller (any repository), opened and closed with the
      application; ``config`` and ``tortoise`` must then be left out.
    - ``channels``: the channels the embedded pool claims from (default: ``config.channels``,
      None there: every channel).

    Raises ``ConfigError`` for contradictory options.
    """
    if queue is not None and (config is not None or tortoise is not None):
        raise ConfigError("taskqueue_lifespan: pass either queue= or config=/tortoise=, not both")
    if isinstance(channels, str):
        raise ConfigError(f"taskqueue_lifespan: channels must be a list of names, got {channels!r}")
    if tortoise is not None and not tortoise:
        raise ConfigError("taskqueue_lifespan: tortoise= must name a Tortoise connection")
    return TaskQueueLifespan(
        config,
        run_workers=run_workers,
        tortoise=tortoise,
        queue=queue,
        channels=tuple(channels) if channels is not None else None,
    )


def _host_client(app: Starlette, connection_name: str) -> Any:
    """The host's Tortoise client named ``connection_name``. Raises ``ConfigError``.

    Looked up in the context that Tortoise's ``RegisterTortoise`` keeps in
    ``app.state._tortoise_context`` (there even when its global fallback is off), else in
    the current Tortoise context.
    """
    from tortoise import connections

    try:
        context = getattr(app.state, "_tortoise_context", None)
        if context is not None:
            return context.db(connection_name)
        return connections.get(connection_name)
    except Exception as error:
        raise ConfigError(
            f"taskqueue_lifespan(tortoise={connection_name!r}): the host's Tortoise has no such "
            "connection; initialise Tortoise (with the app 'taskqueue_core.tortoise.models' "
            "under the label 'taskqueue') before entering this lifespan"
        ) from error


def _joined_repository(client: Any, connection_name: str, config: QueueConfig) -> TaskRepository:
    """A repository writing through the host's Tortoise ``client``.

    The database is the connection's: for PostgreSQL its URL is rebuilt from the client
    (for the LISTEN connection, which must reach the same database). Raises ``ConfigError``
    when the database is neither PostgreSQL nor SQLite.
    """
    dialect = client.capabilities.dialect
    if dialect == "postgres":
        from taskqueue_core.tortoise.postgres import PostgresRepository

        return PostgresRepository(
            _postgres_url(client),
            notify_channel=config.notify_channel,
            use_notify=config.use_postgresql_notify,
            client=client,
        )
    if dialect == "sqlite":
        from taskqueue_core.tortoise.sqlite import SqliteRepository

        return SqliteRepository(f"sqlite://{client.filename}", client=client)
    raise ConfigError(
        f"taskqueue_lifespan(tortoise={connection_name!r}): the connection's database is "
        f"{dialect!r}; taskqueue supports PostgreSQL and SQLite"
    )


def _postgres_url(client: Any) -> str:
    """The ``postgres://`` URL of the database a Tortoise PostgreSQL client is connected to."""
    user = quote(str(client.user or ""), safe="")
    password = f":{quote(str(client.password), safe='')}" if client.password else ""
    credentials = f"{user}{password}@" if user else ""
    return f"postgres://{credentials}{client.host}:{client.port}/{client.database}"
