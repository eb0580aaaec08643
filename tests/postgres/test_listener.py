"""Events through LISTEN/NOTIFY: delivery, payload splitting, and a listener that survives a
killed connection and a silent one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from taskqueue_core.models import Event, FunctionRef, NewTask, Outcome, TaskState
from taskqueue_core.tortoise.listener import (
    MAX_PAYLOAD_BYTES,
    Listener,
    ListenerSubscription,
    decode_event,
    encode_event,
)
from taskqueue_core.tortoise.postgres import PostgresRepository
from tests.conftest import _asyncpg_url
from tests.contract.helpers import EventRecorder, created, ended, wait_ids

pytestmark = pytest.mark.postgres

FUNCTION = FunctionRef(module_name="tests.postgres.test_listener", function_name="noop")
WAIT = 10.0
"""Bound of every wait in this module, in seconds."""


def noop() -> None:
    """The function the tasks of these tests name (never run)."""


def marker(name: str) -> Any:
    return lambda e: e.kind == "marker" and e.channels == (name,)


async def test_events_of_every_kind_arrive(repo: PostgresRepository) -> None:
    recorder = EventRecorder()
    subscription = await repo.subscribe(recorder)
    assert subscription.healthy
    assert repo.supports_notify

    parent, child, other = await repo.create_tasks(
        [
            NewTask("parent", FUNCTION, channel="alpha"),
            NewTask("child", FUNCTION, channel="beta", batch_parents=(0,)),
            NewTask("other", FUNCTION, channel="gamma"),
        ]
    )
    event = await recorder.wait_for(created("alpha", "gamma"))
    assert "beta" not in event.channels  # the child waits

    await repo.claim_tasks("s", 1, channels=["alpha"])
    await repo.complete_tasks("s", [Outcome(parent, TaskState.DONE)])
    await recorder.wait_for(ended(parent))
    await recorder.wait_for(created("beta"))  # released

    await repo.claim_tasks("s", 5, channels=["gamma"])
    assert await repo.cancel_tasks([other, child]) == sorted([other, child])
    await recorder.wait_for(lambda e: e.kind == "control" and e.task_ids == (other,))
    await wait_ids(recorder, "ended", other, child)

    await repo.publish(Event("custom", task_ids=(1, 2), channels=("x",)))
    assert await recorder.wait_for(lambda e: e.kind == "custom") == Event(
        "custom", task_ids=(1, 2), channels=("x",)
    )
    await subscription.close()
    await subscription.close()
    assert not subscription.healthy


async def test_own_events_arrive_once_through_listen(repo: PostgresRepository) -> None:
    recorder = EventRecorder()
    await repo.subscribe(recorder)
    await repo.create_tasks([NewTask("once", FUNCTION, channel="once")])
    # Notifications arrive in commit order on one connection: once the marker is in,
    # everything sent before it is too.
    await repo.publish(Event("marker", channels=("m1",)))
    await recorder.wait_for(marker("m1"))
    events = recorder.drain()
    assert [e for e in events if e.kind == "created" and "once" in e.channels] == [
        Event("created", channels=("once",))
    ]


async def test_subscribers_share_one_connection(repo: PostgresRepository) -> None:
    first, second = EventRecorder(), EventRecorder()
    one = await repo.subscribe(first)
    two = await repo.subscribe(second)
    assert isinstance(one, ListenerSubscription) and isinstance(two, ListenerSubscription)
    assert one.listener is two.listener
    await repo.create_tasks([NewTask("x", FUNCTION, channel="shared")])
    await first.wait_for(created("shared"))
    await second.wait_for(created("shared"))
    await one.close()
    await repo.create_tasks([NewTask("y", FUNCTION, channel="later")])
    await second.wait_for(created("later"))
    assert two.healthy
    await two.close()


async def test_long_id_lists_are_split_under_the_payload_limit(repo: PostgresRepository) -> None:
    recorder = EventRecorder()
    await repo.subscribe(recorder)
    ids = await repo.create_tasks([NewTask(f"t{i}", FUNCTION) for i in range(900)])
    claimed = await repo.claim_tasks("s", 900)
    assert len(claimed) == 900
    await repo.complete_tasks("s", [Outcome(i, TaskState.DONE) for i in ids])
    await wait_ids(recorder, "ended", *ids)

    big = Event("ended", task_ids=tuple(range(10**15, 10**15 + 2000)))
    payloads = encode_event(big)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD_BYTES for p in payloads)
    decoded = [decode_event(p) for p in payloads]
    assert all(e is not None and e.kind == "ended" for e in decoded)
    assert [i for e in decoded if e is not None for i in e.task_ids] == list(big.task_ids)
    assert decode_event("not json") is None
    assert decode_event('{"no": "kind"}') is None


async def test_without_notify_events_stay_in_process(pg_url: str) -> None:
    repo = PostgresRepository(pg_url, use_notify=False)
    await repo.open()
    try:
        assert repo.supports_notify is False
        recorder = EventRecorder()
        subscription = await repo.subscribe(recorder)
        assert subscription.healthy
        (task_id,) = await repo.create_tasks([NewTask("local", FUNCTION, channel="local")])
        await recorder.wait_for(created("local"))
        await repo.claim_tasks("s", 1)
        await repo.complete_tasks("s", [Outcome(task_id, TaskState.FAILED, error_name="E")])
        await recorder.wait_for(ended(task_id))
        await repo.publish(Event("marker", channels=("m",)))
        await recorder.wait_for(marker("m"))
        await subscription.close()
    finally:
        await repo.close()


async def test_listener_reconnects_after_its_backend_is_killed(
    repo: PostgresRepository, db: asyncpg.Connection
) -> None:
    recorder = EventRecorder()
    subscription = await repo.subscribe(recorder)
    assert isinstance(subscription, ListenerSubscription)
    listener = subscription.listener
    old_pid = listener.backend_pid
    assert old_pid is not None and subscription.healthy
    # A task waiting to be claimed: the synthetic event after the reconnect names its channel.
    await repo.create_tasks([NewTask("before", FUNCTION, channel="before")])
    await recorder.wait_for(created("before"))

    assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    async with asyncio.timeout(WAIT):
        await subscription.wait_healthy(False)
    assert not subscription.healthy
    async with asyncio.timeout(WAIT):
        await subscription.wait_healthy(True)
    assert listener.backend_pid not in (None, old_pid)

    # Notifications may have been missed: subscribers are told to look again.
    await recorder.wait_for(created("before"))
    await repo.create_tasks([NewTask("after", FUNCTION, channel="after")])
    await recorder.wait_for(created("after"))


# -- a connection that dies silently --------------------------------------------------------


class FreezingProxy:
    """A TCP proxy to PostgreSQL that can stop forwarding on its open connections, as a
    network partition would: nothing is closed, bytes just stop arriving."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen: list[asyncio.Event] = []
        self.pumps: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        """Stop forwarding on every connection open now (new ones still work)."""
        for flag in self.frozen:
            flag.set()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for pump in list(self.pumps):
            pump.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        frozen = asyncio.Event()
        self.frozen.append(frozen)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink, frozen), name="proxy-pump")
            self.pumps.add(pump)
            pump.add_done_callback(self.pumps.discard)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # hold the bytes forever, like a dead link
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.close()


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[FreezingProxy]:
    from taskqueue_core.tortoise.listener import connect_kwargs

    target = connect_kwargs(pg_url)
    frozen = FreezingProxy(target["host"], target["port"])
    await frozen.start()
    try:
        yield frozen
    finally:
        await frozen.close()


async def test_probe_notices_a_connection_that_went_silent(
    repo: PostgresRepository, proxy: FreezingProxy, pg_url: str
) -> None:
    head, rest = pg_url.split("@", 1)
    database = rest.split("/", 1)[1]
    proxied = f"{head}@127.0.0.1:{proxy.port}/{database}"
    listener = Listener(
        proxied, repo.notify_channel, probe_interval=0.2, probe_timeout=0.5, backoff_initial=0.05
    )
    recorder = EventRecorder()
    listener.add_handler(recorder)
    await listener.start()
    try:
        assert listener.healthy
        await repo.create_tasks([NewTask("one", FUNCTION, channel="one")])
        await recorder.wait_for(created("one"))

        proxy.freeze()  # no error, no close: only the probe can tell
        async with asyncio.timeout(WAIT):
            await listener.wait_healthy(False)
        async with asyncio.timeout(WAIT):
            await listener.wait_healthy(True)
        await recorder.wait_for(created("one"))  # the synthetic "look again"
        await repo.create_tasks([NewTask("two", FUNCTION, channel="two")])
        await recorder.wait_for(created("two"))
    finally:
        await listener.close()
    assert not listener.healthy


async def test_listener_keeps_trying_while_the_database_is_unreachable(
    proxy: FreezingProxy, pg_url: str
) -> None:
    await proxy.close()  # nothing listens on its port any more
    head, rest = pg_url.split("@", 1)
    database = rest.split("/", 1)[1]
    listener = Listener(f"{head}@127.0.0.1:{proxy.port}/{database}", "nowhere", connect_timeout=2.0)
    await listener.start()
    try:
        assert not listener.healthy
        assert listener.backend_pid is None
    finally:
        await listener.close()


async def test_listener_survives_a_raising_handler(repo: PostgresRepository) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    recorder = EventRecorder()
    await repo.subscribe(broken)
    await repo.subscribe(recorder)
    await repo.create_tasks([NewTask("x", FUNCTION, channel="robust")])
    await recorder.wait_for(created("robust"))


async def test_raw_connection_helper_matches_the_database(pg_url: str) -> None:
    from taskqueue_core.tortoise.listener import connect_kwargs

    conn = await asyncpg.connect(**connect_kwargs(pg_url + "?maxsize=3"))
    try:
        assert await conn.fetchval("SELECT current_database()") == pg_url.rsplit("/", 1)[1]
    finally:
        await conn.close()
    assert _asyncpg_url(pg_url).startswith("postgresql://")
