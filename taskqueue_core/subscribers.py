"""In-process events: the subscribers of one repository object, each called on its own loop.

The in-memory and SQLite repositories deliver every event this way, and the PostgreSQL one
when NOTIFY is off. A subscription is always healthy (there is no connection to lose); a
handler runs soon after the change, on the event loop it subscribed from
(``call_soon_threadsafe`` when the change happens in another thread), and one that raises is
logged and does not reach the writer that emitted the event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from taskqueue_core.models import Event
from taskqueue_core.repository import EventHandler

__all__ = ["LocalSubscribers", "LocalSubscription"]

logger = logging.getLogger("taskqueue.events")


class LocalSubscription:
    """One subscriber of a ``LocalSubscribers``: its handler and the loop it runs on."""

    def __init__(
        self, owner: LocalSubscribers, handler: EventHandler, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._owner = owner
        self._handler = handler
        self._loop = loop
        self._open = True

    @property
    def healthy(self) -> bool:
        """Always True: in-process delivery has no channel that can go down."""
        return True

    async def close(self) -> None:
        """Stop delivering events, including those already scheduled. Idempotent."""
        self._open = False
        self._owner.discard(self)

    def schedule(self, event: Event) -> None:
        """Call the handler with ``event`` soon, on its loop (from any thread)."""
        if not self._open or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._loop.call_soon(self._deliver, event)
        else:
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        if not self._open:
            return
        try:
            self._handler(event)
        except Exception:
            # A broken subscriber must not break the writer that emitted the event.
            logger.exception("event handler %r failed on %r", self._handler, event)


class LocalSubscribers:
    """The subscriptions of one repository object. False while there are none."""

    def __init__(self) -> None:
        self._members: set[LocalSubscription] = set()

    def __bool__(self) -> bool:
        return bool(self._members)

    def add(self, handler: EventHandler) -> LocalSubscription:
        """Subscribe ``handler`` on the running event loop."""
        subscription = LocalSubscription(self, handler, asyncio.get_running_loop())
        self._members.add(subscription)
        return subscription

    def discard(self, subscription: LocalSubscription) -> None:
        """Forget ``subscription`` (its ``close`` does this)."""
        self._members.discard(subscription)

    def publish(self, event: Event) -> None:
        """Schedule ``event`` for every subscriber."""
        for subscription in list(self._members):
            subscription.schedule(event)

    def publish_changes(
        self,
        channels: Iterable[str] = (),
        control: Iterable[int] = (),
        ended: Iterable[int] = (),
    ) -> None:
        """The events of one write, in the order every backend sends them: ``created`` (the
        channels made ready, sorted), ``control`` (tasks interrupted while doing), then
        ``ended`` (ids ascending); an event with nothing to name is not sent."""
        if not self._members:
            return
        ready = tuple(sorted(set(channels)))
        if ready:
            self.publish(Event("created", channels=ready))
        interrupted = tuple(sorted(set(control)))
        if interrupted:
            self.publish(Event("control", task_ids=interrupted))
        finished = tuple(sorted(set(ended)))
        if finished:
            self.publish(Event("ended", task_ids=finished))

    async def close(self) -> None:
        """Close every subscription."""
        for subscription in list(self._members):
            await subscription.close()
