"""Events of ``PostgresRepository``: subscriptions, publishing, and local delivery.

With NOTIFY, ``subscribe`` shares one ``Listener`` (a LISTEN connection) among the
repository's subscribers and ``unsubscribed`` closes it when the last one leaves; the
statements send their own NOTIFY. Without NOTIFY, events go to the subscribers of this
object only: ``emit_local`` is called by every write once its work is done.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from taskqueue_core.models import Event
from taskqueue_core.repository import EventHandler, Subscription
from taskqueue_core.tortoise.listener import Listener, ListenerSubscription, encode_event

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository


async def subscribe(repo: PostgresRepository, handler: EventHandler) -> Subscription:
    """``PostgresRepository.subscribe``: the shared listener is started on first use."""
    if not repo.use_notify:
        return repo._local.add(handler)
    if repo._listener_lock is None:
        repo._listener_lock = asyncio.Lock()
    async with repo._listener_lock:
        if repo._listener is None:
            listener = Listener(
                repo.database_url,
                repo.notify_channel,
                probe_interval=repo._probe_interval,
                probe_timeout=repo._probe_timeout,
            )
            await listener.start()
            repo._listener = listener
        subscription = ListenerSubscription(
            repo._listener, handler, functools.partial(unsubscribed, repo)
        )
        repo._subscriptions.add(subscription)
        return subscription


async def unsubscribed(repo: PostgresRepository, subscription: ListenerSubscription) -> None:
    """The last subscriber gone, the LISTEN connection is released."""
    repo._subscriptions.discard(subscription)
    assert repo._listener_lock is not None
    async with repo._listener_lock:
        listener = repo._listener
        if listener is not None and listener.handler_count == 0:
            repo._listener = None
            await listener.close()


async def publish(repo: PostgresRepository, event: Event) -> None:
    """``PostgresRepository.publish``: NOTIFY, or local delivery without it."""
    if not repo.use_notify:
        repo._local.publish(event)
        return
    payloads = encode_event(event)
    async with repo._connection() as conn:
        await conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            repo.notify_channel,
            payloads,
        )


def emit_local(
    repo: PostgresRepository,
    *,
    ready: Sequence[str] = (),
    control: Sequence[int] = (),
    ended: Sequence[int] = (),
) -> None:
    """Events of a write, to in-process subscribers when NOTIFY is off (with NOTIFY, the
    statement itself sent them)."""
    if not repo.use_notify:
        repo._local.publish_changes(ready, control, ended)
