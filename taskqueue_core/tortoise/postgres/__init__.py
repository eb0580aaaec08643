"""PostgresRepository: the production ``TaskRepository``, on PostgreSQL through Tortoise.

Hot paths are hand-written SQL, one statement per batch:

- **claim**: a CTE picks the first ready rows ``FOR NO KEY UPDATE SKIP LOCKED`` in the order of
  the partial claim index (``(-priority), date_scheduled, id`` over ``state = 'enqueued'``),
  and the outer ``UPDATE ... RETURNING`` moves them to ``doing``. The CTE is what makes the
  claim safe: the ``LIMIT`` applies to rows this transaction could lock, so two claimers
  skip each other's rows instead of blocking on them or taking the same ones.
- **complete**: one statement applies a whole batch of outcomes (``unnest`` of arrays) and,
  in data-modifying CTEs of the same statement, releases the children of tasks done, fails or
  cancels the waiting descendants of tasks failed or cancelled (a recursive CTE), and sends
  the NOTIFY payloads. Being one statement, it is atomic without an explicit transaction.
  The children of a task with more than ``RELEASE_CHUNK`` are released after that statement,
  in chunks of their own statements (``releases``), so that its first children can run while
  the others are released.
- **create**: ids come from the sequence in the insert statement itself (``nextval`` over
  ``generate_series``, as one sorted array), so tasks and their dependency edges (batch
  parents resolved by position, subscripting that array) go in with one ``INSERT ... SELECT
  FROM unnest(...)`` each, in one statement whose cost is linear in the batch. Columns that
  are the same for the whole batch travel once; a single task without parents is a plain
  ``INSERT ... VALUES``.

Why ``xmin`` guards (the one subtle part). A statement reads the dependency edges with the
snapshot taken when it started. Had a child been added under a parent after that snapshot
but before the statement updated the parent, the cascade would miss it and the child would
wait forever. So every writer that makes a task depend on a parent *updates* the parent row
(``SET state = state``: a new row version, under a row lock) in the same transaction, and
every statement that ends a task and cascades from it only updates the row version it read
(``t.xmin = <xmin read by the snapshot>``). If the parent changed in between, PostgreSQL
re-checks the condition on the newest version (EvalPlanQual), the row is left alone, and the
statement reports it as contended; the caller runs the statement again for those rows with a
fresh snapshot, which sees the new child. Cascaded rows are guarded the same way, and the
ones skipped are finished by a follow-up statement. Contention is rare (it takes a child
being created under a task in the very moment it ends), so the common case stays one
statement per batch.

Connections: without ``client`` the repository opens its own ``TortoiseContext`` on
``database_url`` (an app without models: a pool only, so that the model classes stay bound
to the host application's own Tortoise setup, if any); with ``client`` (a Tortoise asyncpg
client of the host application) it uses that one and never closes it. Statements run on the
raw asyncpg connection that the client's ``acquire_connection()`` lends from its pool:
asyncpg's ``fetch`` with its prepared-statement cache and positional records, without
Tortoise's per-query logging and dict conversion (a claim of 20 tasks through
``execute_query_dict`` measured ~15% more client CPU and time). Our own pool also skips
asyncpg's reset query on release (see ``connections.keep_session``), which measured 2-3x
the cost of a short statement. LISTEN uses a dedicated connection (``listener``).

Errors from asyncpg or Tortoise become ``RepositoryError`` (the driver's error is
``__cause__``), including a lost connection, so that callers can retry.

Modules: ``repository`` (``PostgresRepository``: the verbs, their contracts, the connections
they run on), and the work of the verbs by concern: ``creation``, ``execution`` (claims,
outcomes, logs), ``releases`` (the rest of a big fan-out's release), ``control`` (admin
writes), ``maintenance`` (servers, the reaper, pruning), ``reads`` and ``events``; shared by
them: ``connections`` (pools, driver errors, deadlock retries), ``cascades`` (the follow-up of
a guarded cascade), ``statements`` (the SQL text; that of creation in ``inserts``), ``codec``
(rows to the core's dataclasses, values to column text), ``batches`` (the layout of a creation
batch) and ``filters`` (the ``WHERE`` clause of ``list_tasks``).
"""

from taskqueue_core.models import WORKER_LOST
from taskqueue_core.tortoise.postgres.repository import REAPER_LOCK_KEY, PostgresRepository

__all__ = ["REAPER_LOCK_KEY", "WORKER_LOST", "PostgresRepository"]
