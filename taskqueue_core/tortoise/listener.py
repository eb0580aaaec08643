"""PostgreSQL LISTEN/NOTIFY: the payload format, and a listener that survives the database.

Every event travels as one or more NOTIFY payloads on the queue's channel, each a JSON object
``{"kind": ..., "task_ids": [...], "channels": [...]}`` (empty lists left out) kept under
PostgreSQL's 8000-byte payload limit by splitting long id lists over several payloads.

``Listener`` owns one dedicated asyncpg connection (never a pooled one: a pooled connection
would lose its LISTEN when it is handed to someone else). A supervisor task connects, LISTENs,
then watches the connection two ways: asyncpg's termination callback notices a closed socket
at once, and a periodic ``SELECT 1`` with a timeout notices a connection that is dead without
saying so (a half-open TCP connection, a frozen server). On loss it reconnects with
exponential backoff and LISTENs again; as notifications sent in between are lost, it then
delivers synthetic events (see ``resync``) so that subscribers look again. ``healthy`` is
False from the loss until LISTEN is active again; subscribers poll meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from tortoise.backends.base.config_generator import expand_db_url

from taskqueue_core.models import Event
from taskqueue_core.repository import EventHandler

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Listener",
    "ListenerSubscription",
    "connect_kwargs",
    "decode_event",
    "encode_event",
    "ready_channels",
]

logger = logging.getLogger("taskqueue.postgres.listener")

MAX_PAYLOAD_BYTES = 7900
"""Largest NOTIFY payload this module writes (PostgreSQL refuses 8000 bytes and more)."""

_IDS_PER_PAYLOAD = 300  # 300 ids of up to 19 digits plus commas stay far below the limit
_CHANNELS_PER_PAYLOAD = 50  # channel names are at most 64 characters

Resync = Callable[[asyncpg.Connection], Awaitable[Sequence[Event]]]
"""Computes the events to deliver after a reconnect, on the fresh listening connection."""


async def ready_channels(connection: asyncpg.Connection) -> list[Event]:
    """The default ``Resync``: a ``created`` event naming every channel with enqueued tasks
    (so that a worker that missed notifications claims again)."""
    rows = await connection.fetch(
        "SELECT DISTINCT channel FROM queued_tasks WHERE state = 'enqueued'"
    )
    return [Event("created", channels=tuple(sorted(r[0] for r in rows)))]


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError and ConnectionError
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def connect_kwargs(database_url: str) -> dict[str, Any]:
    """Keyword arguments of ``asyncpg.connect`` for a Tortoise-style ``database_url``.

    Pool options of the URL (``minsize``, ``maxsize``...) are Tortoise's and are left out;
    ``ssl``, ``application_name`` and ``schema`` (as ``search_path``) are kept.
    """
    url = database_url.replace("postgresql://", "postgres://", 1)
    credentials = expand_db_url(url)["credentials"]
    kwargs: dict[str, Any] = {
        "host": credentials.get("host"),
        "port": credentials.get("port"),
        "user": credentials.get("user"),
        "password": credentials.get("password"),
        "database": credentials.get("database"),
    }
    if "ssl" in credentials:
        kwargs["ssl"] = credentials["ssl"]
    settings: dict[str, str] = {}
    if credentials.get("application_name"):
        settings["application_name"] = str(credentials["application_name"])
    if credentials.get("schema"):
        settings["search_path"] = str(credentials["schema"])
    if settings:
        kwargs["server_settings"] = settings
    return kwargs


def encode_event(event: Event) -> list[str]:
    """``event`` as NOTIFY payloads, each under ``MAX_PAYLOAD_BYTES`` (usually just one)."""
    ids = list(event.task_ids)
    channels = list(event.channels)
    payloads: list[str] = []
    while True:
        body: dict[str, Any] = {"kind": event.kind}
        chunk_ids, ids = ids[:_IDS_PER_PAYLOAD], ids[_IDS_PER_PAYLOAD:]
        chunk_channels, channels = (
            channels[:_CHANNELS_PER_PAYLOAD],
            channels[_CHANNELS_PER_PAYLOAD:],
        )
        if chunk_ids:
            body["task_ids"] = chunk_ids
        if chunk_channels:
            body["channels"] = chunk_channels
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"event payload too large ({len(text.encode())} bytes): {body!r}")
        payloads.append(text)
        if not ids and not channels:
            return payloads


def decode_event(payload: str) -> Event | None:
    """The event a NOTIFY payload carries, or None when it is not one of ours."""
    try:
        body = json.loads(payload)
        kind = body["kind"]
        task_ids = tuple(int(i) for i in body.get("task_ids") or ())
        channels = tuple(str(c) for c in body.get("channels") or ())
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(kind, str):
        return None
    return Event(kind=kind, task_ids=task_ids, channels=channels)


class Listener:
    """A dedicated LISTEN connection on ``channel`` that delivers events to its handlers.

    ``start()`` makes the first connection attempt and returns once LISTEN is active, or
    once the attempt failed (the listener is then unhealthy and keeps retrying in the
    background). After each reconnect, ``resync`` gives the events to deliver in place of
    the notifications that may have been missed (None: a bare ``created`` event). Handlers
    are called in the event loop, one event at a time; a handler that raises is logged and
    does not stop the others.
    """

    def __init__(
        self,
        database_url: str,
        channel: str,
        *,
        resync: Resync | None = ready_channels,
        probe_interval: float = 5.0,
        probe_timeout: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._connect_kwargs = connect_kwargs(database_url)
        self._channel = channel
        self._resync = resync
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        self._handlers: dict[int, EventHandler] = {}
        self._next_key = 0
        self._healthy = False
        self._backend_pid: int | None = None
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Created in start(), inside the loop that runs the listener.
        self._up: asyncio.Event | None = None
        self._down: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._first_attempt: asyncio.Event | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while LISTEN is active on a live connection."""
        return self._healthy

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the listening connection (None while disconnected)."""
        return self._backend_pid

    @property
    def channel(self) -> str:
        """The notification channel listened to."""
        return self._channel

    async def wait_healthy(self, healthy: bool = True) -> None:
        """Return once ``healthy`` has that value (bound it with ``asyncio.timeout``)."""
        if self._up is None or self._down is None:
            raise RuntimeError("the listener was not started")
        await (self._up if healthy else self._down).wait()

    def _set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy
        if self._up is None or self._down is None:
            return
        if healthy:
            self._down.clear()
            self._up.set()
        else:
            self._up.clear()
            self._down.set()

    # -- handlers -------------------------------------------------------------------------

    def add_handler(self, handler: EventHandler) -> int:
        """Deliver events to ``handler`` from now on; returns a key for ``remove_handler``."""
        key = self._next_key
        self._next_key += 1
        self._handlers[key] = handler
        return key

    def remove_handler(self, key: int) -> None:
        """Stop delivering to the handler registered under ``key`` (no error if gone)."""
        self._handlers.pop(key, None)

    @property
    def handler_count(self) -> int:
        """How many handlers are registered."""
        return len(self._handlers)

    def deliver(self, event: Event) -> None:
        """Call every handler with ``event`` (a raising handler is logged and skipped)."""
        for handler in list(self._handlers.values()):
            try:
                handler(event)
            except Exception:
                logger.exception("event handler %r failed on %r", handler, event)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor task and wait for its first connection attempt."""
        if self._task is not None:
            return
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._stop = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._task = asyncio.create_task(
            self._supervise(), name=f"taskqueue-listener:{self._channel}"
        )
        self._task.add_done_callback(self._supervisor_done)
        # The first attempt is bounded by connect_timeout; a little slack for LISTEN itself.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), self._connect_timeout + 5.0)

    async def close(self) -> None:
        """Stop listening and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stop is not None:
            self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()
        self._set_healthy(False)
        self._backend_pid = None

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        # The supervisor only ends by close(); anything else is a bug worth a loud log.
        self._set_healthy(False)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._closed:
            logger.error("the listener of %r stopped: %r", self._channel, exc, exc_info=exc)

    # -- supervisor -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self._backoff_initial
        connected_before = False
        while not self._closed:
            try:
                connection = await asyncio.wait_for(
                    asyncpg.connect(**self._connect_kwargs), self._connect_timeout
                )
            except _CONNECTION_ERRORS as exc:
                logger.warning("listener on %r cannot connect: %s", self._channel, exc)
                self._attempted()
                await self._pause(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            self._connection = connection
            lost = asyncio.Event()
            connection.add_termination_listener(_setter(lost))
            since = time.monotonic()
            try:
                await connection.add_listener(self._channel, self._on_notification)
                self._backend_pid = connection.get_server_pid()
                self._set_healthy(True)
                self._attempted()
                if connected_before:
                    await self._deliver_resync(connection)
                connected_before = True
                await self._watch(connection, lost)
            except _CONNECTION_ERRORS as exc:
                logger.warning("listener on %r lost its connection: %s", self._channel, exc)
            finally:
                self._set_healthy(False)
                self._backend_pid = None
                self._connection = None
                if not connection.is_closed():
                    # terminate(), not close(): close() talks to a server that may be gone.
                    connection.terminate()
                self._attempted()
            if self._closed:
                return
            logger.warning("listener on %r disconnected; reconnecting", self._channel)
            if time.monotonic() - since > self._backoff_max:
                delay = self._backoff_initial  # it was a stable connection: start over
            await self._pause(delay)
            delay = min(delay * 2, self._backoff_max)

    def _attempted(self) -> None:
        if self._first_attempt is not None:
            self._first_attempt.set()

    async def _pause(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when ``connection`` is closed, or does not answer a probe in time."""
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._probe_interval)
            if lost.is_set() or connection.is_closed():
                return
            try:
                await asyncio.wait_for(connection.fetchval("SELECT 1"), self._probe_timeout)
            except TimeoutError:
                logger.warning(
                    "listener on %r: no answer to a probe within %ss",
                    self._channel,
                    self._probe_timeout,
                )
                return

    async def _deliver_resync(self, connection: asyncpg.Connection) -> None:
        events: Sequence[Event] = [Event(kind="created")]
        if self._resync is not None:
            try:
                events = await asyncio.wait_for(self._resync(connection), self._probe_timeout)
            except _CONNECTION_ERRORS as exc:
                logger.warning("listener on %r: resync query failed: %s", self._channel, exc)
        for event in events:
            self.deliver(event)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        event = decode_event(str(payload))
        if event is None:
            logger.warning("ignoring a notification on %r: %r", self._channel, payload)
            return
        self.deliver(event)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    """A termination callback that sets ``event``."""
    return lambda _connection: event.set()


class ListenerSubscription:
    """A handler's subscription to a shared ``Listener``; closing it removes the handler.

    ``on_close`` (given by the repository) runs after the handler is removed, so that the
    owner can close the listener when its last subscriber leaves.
    """

    def __init__(
        self,
        listener: Listener,
        handler: EventHandler,
        on_close: Callable[[ListenerSubscription], Awaitable[None]] | None = None,
    ) -> None:
        self._listener = listener
        self._key: int | None = listener.add_handler(handler)
        self._on_close = on_close

    @property
    def healthy(self) -> bool:
        """False while the notification connection is down (callers should poll)."""
        return self._key is not None and self._listener.healthy

    @property
    def listener(self) -> Listener:
        """The shared listener delivering this subscription's events."""
        return self._listener

    async def wait_healthy(self, healthy: bool = True) -> None:
        """Return once the listener's health is ``healthy`` (bound it with ``asyncio.timeout``)."""
        await self._listener.wait_healthy(healthy)

    async def close(self) -> None:
        """Stop delivering events to this handler. Idempotent."""
        if self._key is None:
            return
        self._listener.remove_handler(self._key)
        self._key = None
        if self._on_close is not None:
            await self._on_close(self)
