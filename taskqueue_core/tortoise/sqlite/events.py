"""Events of the SQLite repository: its subscribers and what one write sends them.

Events reach only the subscribers of one ``SqliteRepository`` object, after the write
commits (``supports_notify`` is False: other processes poll). ``emit_changes`` sends the
events of one write in the order every backend sends them; ``dispatch`` delivers one event,
and a failing handler neither undoes the write nor starves the other subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from taskqueue_core.models import Event
from taskqueue_core.repository import EventHandler

if TYPE_CHECKING:
    from taskqueue_core.tortoise.sqlite.repository import SqliteRepository

__all__ = ["LocalSubscription", "dispatch", "emit_changes"]

logger = logging.getLogger("taskqueue.sqlite")


class LocalSubscription:
    """A subscriber of one repository object; always healthy (nothing can disconnect)."""

    def __init__(self, owner: SqliteRepository, handler: EventHandler) -> None:
        self._owner = owner
        self.handler = handler

    @property
    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._owner._unsubscribe(self)


def emit_changes(
    subscriptions: Sequence[LocalSubscription],
    channels: Iterable[str],
    control: Iterable[int],
    ended: Iterable[int],
) -> None:
    """The events of one write, in the order every backend sends them: ``created``
    (channels made ready, sorted), ``control`` (tasks interrupted while doing), then
    ``ended`` (ids ascending); an event with nothing to name is not sent."""
    ready = tuple(sorted(set(channels)))
    if ready:
        dispatch(subscriptions, Event(kind="created", channels=ready))
    interrupted = tuple(sorted(set(control)))
    if interrupted:
        dispatch(subscriptions, Event(kind="control", task_ids=interrupted))
    finished = tuple(sorted(set(ended)))
    if finished:
        dispatch(subscriptions, Event(kind="ended", task_ids=finished))


def dispatch(subscriptions: Sequence[LocalSubscription], event: Event) -> None:
    """Deliver ``event`` to every subscriber in ``subscriptions``."""
    # Called after the commit, in the event loop; a failing handler must not undo
    # a write that already happened, nor starve the other subscribers.
    for subscription in list(subscriptions):
        try:
            subscription.handler(event)
        except Exception:
            logger.exception("taskqueue event handler %r failed", subscription.handler)
