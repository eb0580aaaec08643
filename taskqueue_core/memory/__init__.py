"""InMemoryRepository: the storage seam kept in this process's memory.

It is the reference semantics of ``TaskRepository`` (it passes the same ``tests/contract``
suite as the database backends) and a public fake for unit tests of code that uses the queue:
no database, no driver, nothing to clean up.

How it stays faithful to a database:

- Every JSON value (arguments, context, result, log info) is stored as JSON text and decoded
  on each read, so callers never share mutable objects with the store, tuples come back as
  lists, and a value a database would refuse (a set, NaN) is refused here too.
- Every verb is atomic: it runs from start to end without awaiting, so on one event loop no
  other coroutine ever sees a half-applied change. Events are delivered after the change, with
  ``loop.call_soon``, never from inside it.
- Datetimes are timezone-aware UTC; a naive datetime given to it is taken as UTC (as asyncpg
  does for ``timestamptz``).

Ready tasks live in one heap per channel ordered exactly like the claim query
(``-priority, date_scheduled, id``) and tasks scheduled for later in a heap by date, so a claim
costs ``O(limit * channels * log n)`` rather than a scan. Heap entries are invalidated lazily:
an entry counts only while its task is still ``enqueued`` with the same generation number.

Modules: ``rows`` (the stored forms of tasks and log rows, JSON encoding), ``store`` (the
state, its indexes and the primitives that change it), ``creation``, ``execution`` (claims,
outcomes, contexts, logs), ``control`` (admin writes), ``maintenance`` (servers, rescue,
pruning), ``reads`` and ``repository`` (``InMemoryRepository``, the public verbs).
"""

from taskqueue_core.memory.repository import InMemoryRepository

__all__ = ["InMemoryRepository"]
