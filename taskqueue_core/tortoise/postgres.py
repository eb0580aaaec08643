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
asyncpg's reset query on release (see ``_keep_session``), which measured 2-3x the cost of a
short statement. LISTEN uses a dedicated connection (``listener``).

Errors from asyncpg or Tortoise become ``RepositoryError`` (the driver's error is
``__cause__``), including a lost connection, so that callers can retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from tortoise.exceptions import BaseORMException

from taskqueue_core.exceptions import (
    ArgumentNotSerializable,
    ConfigError,
    InvalidTaskError,
    InvalidTransition,
    RepositoryError,
    UnknownParent,
    UnknownTask,
)
from taskqueue_core.limits import CHANNEL_MAX, NAME_MAX, SIGNATURE_MAX
from taskqueue_core.models import (
    PARENT_CANCELLED,
    PARENT_FAILED,
    Event,
    FunctionRef,
    LogRecord,
    NewLogRecord,
    NewTask,
    Outcome,
    ServerInfo,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskState,
    TaskTree,
)
from taskqueue_core.repository import EventHandler, Subscription
from taskqueue_core.tortoise.listener import Listener, ListenerSubscription, encode_event

__all__ = ["REAPER_LOCK_KEY", "WORKER_LOST", "PostgresRepository"]

logger = logging.getLogger("taskqueue.postgres")

T = TypeVar("T")

WORKER_LOST = "WorkerLost"
"""``exception_name`` of a task whose server died while it ran (see ``rescue_stale``)."""

REAPER_LOCK_KEY = 0x7471_7265_6170_6572
"""Transaction advisory lock taken by ``rescue_stale``: one reaper at a time."""

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left mid-operation by a server restart
    BaseORMException,
    OSError,  # connection refused/reset, and TimeoutError
)
# A statement that lost a deadlock (or a serialization conflict) was rolled back whole and
# can simply run again.
_RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
_WRITE_ATTEMPTS = 5
_GUARD_ROUNDS = 50  # re-runs of a guarded statement; each needs a concurrent change to happen

_OUTCOME_STATES = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.ENQUEUED, TaskState.CANCELLED, TaskState.STOPPED}
)
_INT32 = (-(2**31), 2**31 - 1)
_PRUNE_CHUNK = 5000

# -- SQL --------------------------------------------------------------------------------------

_TASK_COLUMNS = (
    "id, name, module_name, function_name, serialized_function, signature, state, "
    "args::text, kwargs::text, context::text, result::text, parent_task, pending_parents, "
    "channel, priority, retry_count, max_retries, timeout, date_enqueued, date_scheduled, "
    "date_started, date_done, date_failed, date_cancelled, date_stopped, date_ended, "
    "execution_time, claimed_by, exception_name, exception_message, exception_info"
)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _TASK_COLUMNS.split(","))


_SELECT_TASKS = f"SELECT {_TASK_COLUMNS} FROM queued_tasks"

# The claim. The CTE reads the claim index in order and stops after $2 rows it could lock;
# rows another claimer holds are skipped, not waited for. ``(state = 'enqueued') IS TRUE`` is
# the predicate of the claim index word for word, and no other index can serve it (see
# ``schema.POSTGRES_CLAIM_INDEX_SQL``). FOR NO KEY UPDATE is the lock the UPDATE takes anyway,
# and unlike FOR UPDATE it does not block foreign-key checks (a log row or a child edge being
# inserted for one of these tasks). ``= ANY(ARRAY(...))`` makes the outer update a primary
# key lookup whatever the planner guesses for ``LIMIT $2`` in a generic plan (a join could
# turn into a scan of the whole table).
#
# The claim commits without waiting for its WAL flush (``synchronous_commit`` off for this
# transaction only: ``set_config(..., true)`` is ``SET LOCAL``, so a pooled or a host's
# connection keeps its own setting). The flush wait is most of a claim's time, and the claim
# does not need it: a claim lost in a database crash leaves its tasks ``enqueued``, so they
# run again (at-least-once), and the outcome of a claimed task is written by a synchronous
# commit, which flushes the WAL up to and including the claim before it returns.
_CLAIM_SQL = """
WITH async_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
),
ready AS (
    SELECT id FROM queued_tasks
    WHERE (state = 'enqueued') IS TRUE AND date_scheduled <= now() {channel_filter}
    ORDER BY (-priority), date_scheduled, id
    LIMIT $2
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE queued_tasks AS t
SET state = 'doing', date_started = now(), claimed_by = $1
WHERE t.id = ANY(ARRAY(SELECT id FROM ready)) AND EXISTS (SELECT FROM async_commit)
RETURNING {columns}
"""
_CLAIM_ANY_SQL = _CLAIM_SQL.format(channel_filter="", columns=_columns("t"))
_CLAIM_CHANNELS_SQL = _CLAIM_SQL.format(
    channel_filter="AND channel = ANY($3::text[])", columns=_columns("t")
)

# The next due time, through the claim index. The index is ordered by priority first, so a
# plain min(date_scheduled) would read every enqueued entry; instead ``levels`` walks the
# distinct priorities (one index probe each, a loose index scan), and for each the first
# entry scheduled after now is one more probe. A queue has few priority levels.
_NEXT_DUE_SQL = """
WITH RECURSIVE levels (rank) AS (
    SELECT min(-priority) FROM queued_tasks WHERE (state = 'enqueued') IS TRUE
    UNION ALL
    SELECT (
        SELECT min(-priority) FROM queued_tasks
        WHERE (state = 'enqueued') IS TRUE AND -priority > l.rank
    )
    FROM levels AS l WHERE l.rank IS NOT NULL
)
SELECT min((
    SELECT date_scheduled FROM queued_tasks
    WHERE (state = 'enqueued') IS TRUE AND -priority = l.rank AND date_scheduled > now()
        {channel_filter}
    ORDER BY (-priority), date_scheduled, id
    LIMIT 1
))
FROM levels AS l WHERE l.rank IS NOT NULL
"""
_NEXT_DUE_ANY_SQL = _NEXT_DUE_SQL.format(channel_filter="")
_NEXT_DUE_CHANNELS_SQL = _NEXT_DUE_SQL.format(channel_filter="AND channel = ANY($1::text[])")

# Plans. The row counts of CTEs are guesses to the planner, ``parent_id`` is skewed (one
# parent may have thousands of children) and the share of each state changes faster than
# ANALYZE runs, so a join could become a scan of a whole table (or of every waiting task)
# per batch. Every lookup is therefore spelled ``key = ANY(ARRAY(SELECT ...))``, an array
# PostgreSQL assumes small and answers with the index on ``key``, and state guards are
# written ``(state = ...) IS TRUE``, which the index on ``state`` cannot serve, so that it is
# never mistaken for a cheaper way in.
#
# The cascade of a failure or a cancellation, as CTEs. It expects a CTE ``seeds(id, root,
# kind)``: the first tasks to end, each with the task whose end started the cascade and the
# state to give them. ``tree`` walks down through waiting tasks only (a stopped or finished
# task shields its descendants); ``doomed`` keeps one row per task (a failure wins over a
# cancellation); ``killed`` ends them, each only if its row is still the version the tree
# read (``xmin``: see the module docstring). Rows of ``doomed`` not in ``killed`` changed
# meanwhile and get a follow-up statement.
_CASCADE_CTES = f"""
tree (id, root, kind, snap) AS (
    SELECT c.id, s.root, s.kind, c.xmin
    FROM seeds AS s JOIN queued_tasks AS c ON c.id = s.id
    WHERE c.id = ANY(ARRAY(SELECT id FROM seeds)) AND (c.state = 'waiting') IS TRUE
    UNION
    SELECT c.id, tr.root, tr.kind, c.xmin
    FROM tree AS tr
    JOIN queued_task_dependencies AS d ON d.parent_id = tr.id
    JOIN queued_tasks AS c ON c.id = d.task_id
    WHERE (c.state = 'waiting') IS TRUE
),
doomed AS (
    SELECT DISTINCT ON (id) id, root, kind, snap
    FROM tree
    ORDER BY id, (kind <> 'failed'), root
),
killed AS (
    UPDATE queued_tasks AS c SET
        state = d.kind,
        date_failed = CASE WHEN d.kind = 'failed' THEN now() ELSE c.date_failed END,
        date_cancelled = CASE WHEN d.kind = 'cancelled' THEN now() ELSE c.date_cancelled END,
        date_ended = now(),
        exception_name = CASE WHEN d.kind = 'failed'
            THEN '{PARENT_FAILED}' ELSE '{PARENT_CANCELLED}' END,
        exception_message = CASE WHEN d.kind = 'failed'
            THEN format('parent task %s failed', d.root)
            ELSE format('parent task %s was cancelled', d.root) END,
        exception_info = NULL
    FROM doomed AS d
    WHERE c.id = ANY(ARRAY(SELECT id FROM doomed))
      AND c.id = d.id AND c.xmin = d.snap AND (c.state = 'waiting') IS TRUE
    RETURNING c.id
),
"""

# Follow-up rows of a cascade, as JSON [[id, root, kind], ...] (rare, so no arrays needed).
_KILL_LEFT = """(
    SELECT json_agg(json_build_array(d.id, d.root, d.kind))::text
    FROM doomed AS d WHERE NOT EXISTS (SELECT 1 FROM killed AS k WHERE k.id = d.id)
)"""

# NOTIFY payloads built in SQL from CTEs ``ready(channel)``, ``control(id)`` and
# ``ended(id)``: created first, then control, then ended (the order subscribers of the other
# backends see). Long id lists are split over several payloads, each under 8000 bytes.
_NOTES_CTE = """
notes (ord, payload) AS (
    SELECT 1, json_build_object(
        'kind', 'created', 'channels', array_agg(channel ORDER BY channel))::text
    FROM (SELECT channel, (row_number() OVER (ORDER BY channel) - 1) / 50 AS chunk FROM ready) AS r
    GROUP BY chunk
    UNION ALL
    SELECT 2, json_build_object('kind', 'control', 'task_ids', array_agg(id ORDER BY id))::text
    FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 300 AS chunk FROM control) AS c
    GROUP BY chunk
    UNION ALL
    SELECT 3, json_build_object('kind', 'ended', 'task_ids', array_agg(id ORDER BY id))::text
    FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 300 AS chunk FROM ended) AS e
    GROUP BY chunk
)
"""


def _notify_column(param: str) -> str:
    """A select-list item that sends every row of ``notes`` (in order) when ``param`` is set."""
    return (
        f"(SELECT count(pg_notify({param}, n.payload)) FROM "
        f"(SELECT payload FROM notes ORDER BY ord) AS n WHERE {param}::text IS NOT NULL) "
        "AS notified"
    )


# Outcomes of a batch. ``pre`` is the snapshot's view of the rows this server still runs
# (with their xmin); ``upd`` applies each outcome to the row only if it is that very version.
# ``pre`` looks each outcome's row up by key (a LATERAL subquery with LIMIT 1 cannot be turned
# into a join, so it stays one primary key probe per outcome), and ``upd`` fetches those row
# versions again by their ``ctid`` (one TID scan, no index) and pairs them with ``pre`` on it.
# The original spelling, a join of ``pre`` with an index scan on ``id = ANY($2)``, is
# quadratic: the function scan, or the index's array keys, are redone for every row (300 ms
# for 1,000 outcomes); a bare ``ctid = o.tid`` join lets the planner hash a sequential scan
# of the table instead. With the TID list the table is never scanned, whatever the estimates.
_COMPLETE_SQL = (
    """
WITH RECURSIVE
o AS (
    SELECT * FROM unnest(
        $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::timestamptz[], $9::bool[], $10::float8[], $11::text[]
    ) AS o(id, state, result, error_name, error_message, error_info,
           retry_at, count_attempt, execution_time, context)
),
pre AS (
    SELECT o.*, r.snap, r.tid,
           (o.state = 'failed' OR (o.state = 'enqueued' AND o.error_name IS NOT NULL))
               AS set_error
    FROM o CROSS JOIN LATERAL (
        SELECT t.xmin AS snap, t.ctid AS tid FROM queued_tasks AS t
        WHERE t.id = o.id AND (t.state = 'doing') IS TRUE AND t.claimed_by = $1
        LIMIT 1
    ) AS r
),
upd AS (
    UPDATE queued_tasks AS t SET
        state = o.state,
        result = CASE WHEN o.state = 'done' THEN o.result::jsonb ELSE t.result END,
        context = COALESCE(o.context::jsonb, t.context),
        execution_time = COALESCE(o.execution_time, t.execution_time),
        exception_name = CASE WHEN o.state = 'done' THEN NULL
            WHEN o.set_error THEN o.error_name ELSE t.exception_name END,
        exception_message = CASE WHEN o.state = 'done' THEN NULL
            WHEN o.set_error THEN o.error_message ELSE t.exception_message END,
        exception_info = CASE WHEN o.state = 'done' THEN NULL
            WHEN o.set_error THEN o.error_info ELSE t.exception_info END,
        date_done = CASE WHEN o.state = 'done' THEN now() ELSE t.date_done END,
        date_failed = CASE WHEN o.state = 'failed' THEN now() ELSE t.date_failed END,
        date_cancelled = CASE WHEN o.state = 'cancelled' THEN now() ELSE t.date_cancelled END,
        date_stopped = CASE WHEN o.state = 'stopped' THEN now() ELSE t.date_stopped END,
        date_ended = CASE WHEN o.state = 'enqueued' THEN t.date_ended ELSE now() END,
        date_scheduled = CASE WHEN o.state = 'enqueued'
            THEN COALESCE(o.retry_at, now()) ELSE t.date_scheduled END,
        claimed_by = CASE WHEN o.state = 'enqueued' THEN NULL ELSE t.claimed_by END,
        retry_count = t.retry_count
            + CASE WHEN o.state = 'enqueued' AND COALESCE(o.count_attempt, true) THEN 1 ELSE 0 END
    FROM pre AS o
    WHERE t.ctid = ANY(ARRAY(SELECT tid FROM pre))
      AND t.ctid = o.tid AND t.xmin = o.snap AND (t.state = 'doing') IS TRUE AND t.claimed_by = $1
    RETURNING t.id, t.state, t.channel
),
seeds AS (
    SELECT d.task_id AS id, u.id AS root, u.state AS kind
    FROM queued_task_dependencies AS d JOIN upd AS u ON u.id = d.parent_id
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM upd WHERE state IN ('failed', 'cancelled')))
),
"""
    + _CASCADE_CTES
    + """
counts AS (
    -- In id order: the released children's new row versions are then written in the order
    -- they are claimed, so a claim (and its completion) finds its batch on a few pages
    -- instead of one page per child (a 10,000-child fan-out drained 10-15 % faster).
    SELECT d.task_id AS id, count(*)::int AS n
    FROM queued_task_dependencies AS d
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM upd WHERE state = 'done'))
    GROUP BY d.task_id
    ORDER BY d.task_id
),
released AS (
    UPDATE queued_tasks AS c SET
        pending_parents = GREATEST(c.pending_parents - n.n, 0),
        state = CASE WHEN c.pending_parents - n.n <= 0 THEN 'enqueued' ELSE 'waiting' END
    FROM counts AS n
    WHERE c.id = ANY(ARRAY(SELECT id FROM counts)) AND c.id = n.id AND (c.state = 'waiting') IS TRUE
      AND c.id <> ALL(ARRAY(SELECT id FROM doomed))
    RETURNING c.id, c.state, c.channel
),
ended AS (
    SELECT id FROM upd WHERE state <> 'enqueued'
    UNION ALL
    SELECT id FROM killed
),
ready AS (
    SELECT channel FROM upd WHERE state = 'enqueued'
    UNION
    SELECT channel FROM released WHERE state = 'enqueued'
),
control AS (SELECT NULL::bigint AS id WHERE false),
"""
    + _NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM upd) AS changed,
    ARRAY(SELECT id FROM pre EXCEPT SELECT id FROM upd) AS contended,
    ARRAY(SELECT id FROM ended) AS ended,
    ARRAY(SELECT channel FROM ready) AS ready,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + _notify_column("$12")
)

# Follow-up of a cascade: end the given waiting tasks and their waiting descendants.
_KILL_SQL = (
    """
WITH RECURSIVE
seeds AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS s(id, root, kind)
),
"""
    + _CASCADE_CTES
    + """
ended AS (SELECT id FROM killed),
ready AS (SELECT NULL::text AS channel WHERE false),
control AS (SELECT NULL::bigint AS id WHERE false),
"""
    + _NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM killed) AS ended,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + _notify_column("$4")
)

# Admin cancel ($2 = 'cancelled', with the cascade) and stop ($2 = 'stopped', none).
_CONTROL_SQL = (
    """
WITH RECURSIVE
pre AS (
    SELECT t.id, t.xmin AS snap, t.state AS previous
    FROM queued_tasks AS t
    WHERE t.id = ANY($1::bigint[]) AND (t.state IN ('waiting', 'enqueued', 'doing')) IS TRUE
),
upd AS (
    UPDATE queued_tasks AS t SET
        state = $2::text,
        date_cancelled = CASE WHEN $2::text = 'cancelled' THEN now() ELSE t.date_cancelled END,
        date_stopped = CASE WHEN $2::text = 'stopped' THEN now() ELSE t.date_stopped END,
        date_ended = now()
    FROM pre
    WHERE t.id = ANY($1::bigint[])
      AND t.id = pre.id AND t.xmin = pre.snap
      AND (t.state IN ('waiting', 'enqueued', 'doing')) IS TRUE
    RETURNING t.id, pre.previous
),
seeds AS (
    SELECT d.task_id AS id, u.id AS root, 'cancelled'::text AS kind
    FROM queued_task_dependencies AS d JOIN upd AS u ON u.id = d.parent_id
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM upd)) AND $2::text = 'cancelled'
),
"""
    + _CASCADE_CTES
    + """
ended AS (
    SELECT id FROM upd
    UNION ALL
    SELECT id FROM killed
),
ready AS (SELECT NULL::text AS channel WHERE false),
control AS (SELECT id FROM upd WHERE previous = 'doing'),
"""
    + _NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM pre EXCEPT SELECT id FROM upd) AS contended,
    ARRAY(SELECT id FROM control) AS control,
    ARRAY(SELECT id FROM ended) AS ended,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + _notify_column("$3")
)

# The reaper. Doing tasks of servers without a fresh heartbeat row that started before the
# limit: re-enqueued with one more attempt counted, or failed when none is left.
_RESCUE_SQL = (
    """
WITH RECURSIVE
pre AS (
    SELECT t.id, t.xmin AS snap
    FROM queued_tasks AS t
    WHERE t.state = 'doing'
      AND (t.date_started IS NULL OR t.date_started < $1)
      AND NOT EXISTS (
          SELECT 1 FROM queued_task_workers AS w
          WHERE w.server_name = t.claimed_by AND w.last_heartbeat >= $1
      )
),
upd AS (
    UPDATE queued_tasks AS t SET
        state = CASE WHEN t.retry_count >= t.max_retries THEN 'failed' ELSE 'enqueued' END,
        retry_count = CASE WHEN t.retry_count >= t.max_retries
            THEN t.retry_count ELSE t.retry_count + 1 END,
        exception_name = '"""
    + WORKER_LOST
    + """',
        exception_message = format(
            'server %s stopped heartbeating while the task ran', quote_nullable(t.claimed_by)),
        exception_info = NULL,
        claimed_by = CASE WHEN t.retry_count >= t.max_retries THEN t.claimed_by END,
        date_scheduled = CASE WHEN t.retry_count >= t.max_retries
            THEN t.date_scheduled ELSE now() END,
        date_failed = CASE WHEN t.retry_count >= t.max_retries THEN now() ELSE t.date_failed END,
        date_ended = CASE WHEN t.retry_count >= t.max_retries THEN now() ELSE t.date_ended END
    FROM pre
    WHERE t.id = ANY(ARRAY(SELECT id FROM pre))
      AND t.id = pre.id AND t.xmin = pre.snap AND t.state = 'doing'
    RETURNING t.id, t.state, t.channel
),
seeds AS (
    SELECT d.task_id AS id, u.id AS root, 'failed'::text AS kind
    FROM queued_task_dependencies AS d JOIN upd AS u ON u.id = d.parent_id
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM upd WHERE state = 'failed'))
),
"""
    + _CASCADE_CTES
    + """
gone AS (
    DELETE FROM queued_task_workers WHERE last_heartbeat < $1 RETURNING server_name
),
ended AS (
    SELECT id FROM upd WHERE state = 'failed'
    UNION ALL
    SELECT id FROM killed
),
ready AS (SELECT DISTINCT channel FROM upd WHERE state = 'enqueued'),
control AS (SELECT NULL::bigint AS id WHERE false),
"""
    + _NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM upd) AS rescued,
    ARRAY(SELECT id FROM pre EXCEPT SELECT id FROM upd) AS contended,
    ARRAY(SELECT id FROM ended) AS ended,
    ARRAY(SELECT channel FROM ready) AS ready,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + _notify_column("$2")
)

# Makes the parents of a task being created (or restored) depend-able: the row lock orders
# this writer against anyone ending the parent, and the new row version (new xmin) makes a
# concurrent guarded statement that read the old version skip the parent and retry.
_TOUCH_SQL = """
UPDATE queued_tasks AS p SET state = p.state
WHERE p.id = ANY($1::bigint[])
RETURNING p.id, p.state
"""

# Creation. A batch travels column by column, and a column whose value is the same for every
# task (the function, the channel, the options, the state: the common case) is an array of
# ONE element that every row uses (``_column_sql``); the JSON columns are one JSON array
# document each (one element per task), or one constant. Decoding big arrays is most of
# the server's work for a batch and encoding them most of the client's, so both shrink to
# what actually varies (typically the arguments alone).
#
# Ids come from the sequence in a one-row CTE (an array, sorted: position i gets ids[i], so
# ids follow positions) and every position is resolved by subscripting that array: the
# statement has no join, so its cost is linear in the batch and its estimates cannot explode.
# (Joining CTEs on positions made PostgreSQL guess millions of rows for a few thousand,
# which switched JIT compilation on: most of the time of a 5,000-task batch went there.)
#
# Two statements share these parameters: ``_CREATE_FREE_SQL`` for a batch in which no task
# has a parent (every task starts enqueued: no edges, no states to compute, and the NOTIFY
# payloads come from the caller), and ``_CREATE_SQL`` for any batch.
#
# (column, parameter, SQL of the value from the array element ``{}``). Every array travels as
# text[] (and the ids come back as text): arrays of any other type make asyncpg look their
# types up in the catalog on every new connection, a query of ~10 ms.
_TASK_COLUMNS_PARAMS = (
    ("name", "$2::text[]", "{}"),
    ("module_name", "$3::text[]", "{}"),
    ("function_name", "$4::text[]", "{}"),
    ("serialized_function", "$5::text[]", "decode({}, 'hex')"),
    ("signature", "$6::text[]", "{}"),
    ("channel", "$7::text[]", "{}"),
    ("priority", "$8::text[]", "{}::int"),
    ("max_retries", "$9::text[]", "{}::int"),
    ("timeout", "$10::text[]", "{}::float8"),
    ("scheduled", "$11::text[]", "{}::timestamptz"),
)
# The JSON columns: a document (a JSON array, one element per task) or, when it is NULL, a
# constant for every task.
_JSON_COLUMNS_PARAMS = (
    ("args", "$12", "$13"),
    ("kwargs", "$14", "$15"),
    ("context", "$16", "$17"),
)
# The columns of ``_CREATE_SQL`` only: each task's state and parents (see ``_plan``).
_PLAN_COLUMNS_PARAMS = (
    ("state", "$18::text[]", "{}"),
    ("pending", "$19::text[]", "{}::int"),
    ("parent_id", "$20::text[]", "{}::bigint"),
    ("parent_pos", "$21::text[]", "{}::int"),
    ("cause_id", "$22::text[]", "{}::bigint"),
    ("cause_pos", "$23::text[]", "{}::int"),
)

_NEW_IDS_CTE = """ids AS (
    SELECT array_agg(s.id ORDER BY s.id) AS a
    FROM (
        SELECT nextval('queued_tasks_id_seq'::regclass) AS id FROM generate_series(1, $1::int)
    ) AS s
)"""


def _rows_sql(columns: Sequence[tuple[str, str, str]]) -> str:
    """``FROM`` items giving row ``r`` of every task: its ``ord`` (1-based) and ``columns``,
    each the one element of its array when it has one, else the task's own."""
    unnest = [f"unnest({param})" for _, param, _ in columns]
    unnest += [f"json_array_elements({document}::json)" for _, document, _ in _JSON_COLUMNS_PARAMS]
    aliases = [column for column, _, _ in columns]
    aliases += [column for column, _, _ in _JSON_COLUMNS_PARAMS]
    values = ["v.ord"]
    values += [
        value.format(f"CASE WHEN cardinality({param}) = 1 THEN ({param})[1] ELSE v.{column} END")
        + f" AS {column}"
        for column, param, value in columns
    ]
    values += [
        f"COALESCE(v.{column}::jsonb, {constant}::jsonb) AS {column}"
        for column, _, constant in _JSON_COLUMNS_PARAMS
    ]
    separator = ",\n        "
    return f"""ROWS FROM (
        generate_series(1, $1::int),
        {separator.join(unnest)}
    ) AS v(ord, {", ".join(aliases)}),
    LATERAL (SELECT
        {separator.join(values)}
    ) AS r"""


_CREATE_FREE_SQL = f"""
WITH {_NEW_IDS_CTE},
ins AS (
    INSERT INTO queued_tasks (
        id, name, module_name, function_name, serialized_function, signature, state,
        args, kwargs, context, pending_parents, channel, priority, retry_count,
        max_retries, timeout, date_enqueued, date_scheduled
    )
    SELECT
        ids.a[r.ord], r.name, r.module_name, r.function_name, r.serialized_function,
        r.signature, 'enqueued', r.args, r.kwargs, r.context, 0, r.channel, r.priority, 0,
        r.max_retries, r.timeout, now(), COALESCE(r.scheduled, now())
    FROM ids, {_rows_sql(_TASK_COLUMNS_PARAMS)}
)
SELECT
    (SELECT array_to_string(a, ',') FROM ids) AS ids,
    (SELECT count(pg_notify($18, p)) FROM unnest($19::text[]) AS p) AS notified
"""

_CREATE_SQL = f"""
WITH {_NEW_IDS_CTE},
ins AS (
    INSERT INTO queued_tasks (
        id, name, module_name, function_name, serialized_function, signature, state,
        args, kwargs, context, result, parent_task, pending_parents, channel, priority,
        retry_count, max_retries, timeout, date_enqueued, date_scheduled,
        date_failed, date_cancelled, date_ended, exception_name, exception_message
    )
    SELECT
        ids.a[r.ord], r.name, r.module_name, r.function_name, r.serialized_function,
        r.signature, r.state, r.args, r.kwargs, r.context, NULL,
        COALESCE(r.parent_id, ids.a[r.parent_pos]), r.pending, r.channel, r.priority,
        0, r.max_retries, r.timeout, now(), COALESCE(r.scheduled, now()),
        CASE WHEN r.state = 'failed' THEN now() END,
        CASE WHEN r.state = 'cancelled' THEN now() END,
        CASE WHEN r.state IN ('failed', 'cancelled') THEN now() END,
        CASE r.state WHEN 'failed' THEN '{PARENT_FAILED}'
                     WHEN 'cancelled' THEN '{PARENT_CANCELLED}' END,
        CASE r.state
            WHEN 'failed' THEN format(
                'parent task %s failed', COALESCE(r.cause_id, ids.a[r.cause_pos]))
            WHEN 'cancelled' THEN format(
                'parent task %s was cancelled', COALESCE(r.cause_id, ids.a[r.cause_pos]))
        END
    FROM ids, {_rows_sql(_TASK_COLUMNS_PARAMS + _PLAN_COLUMNS_PARAMS)}
    RETURNING id, state, channel
),
edges AS (
    INSERT INTO queued_task_dependencies (task_id, parent_id)
    SELECT ids.a[e.child_pos::int], COALESCE(e.parent_id::bigint, ids.a[e.parent_pos::int])
    FROM ids, unnest($24::text[], $25::text[], $26::text[]) AS e(child_pos, parent_id, parent_pos)
),
ended AS (SELECT id FROM ins WHERE state IN ('failed', 'cancelled')),
ready AS (SELECT DISTINCT channel FROM ins WHERE state = 'enqueued'),
control AS (SELECT NULL::bigint AS id WHERE false),
{_NOTES_CTE}
SELECT
    (SELECT array_to_string(a, ',') FROM ids) AS ids,
    ARRAY(SELECT id::text FROM ended) AS ended,
    ARRAY(SELECT channel::text FROM ready) AS ready,
    {_notify_column("$27")}
"""

# One task without parents, the most common creation (``enqueue`` of a single task): a plain
# INSERT of scalars, no arrays to decode, the NOTIFY payload built by the caller.
_CREATE_ONE_SQL = """
WITH ins AS (
    INSERT INTO queued_tasks (
        name, module_name, function_name, serialized_function, signature, state,
        args, kwargs, context, pending_parents, channel, priority, retry_count,
        max_retries, timeout, date_enqueued, date_scheduled
    ) VALUES (
        $1, $2, $3, $4, $5, 'enqueued', $6::text::jsonb, $7::text::jsonb, $8::text::jsonb,
        0, $9, $10, 0, $11, $12::text::float8, now(), COALESCE($13::text::timestamptz, now())
    )
    RETURNING id
)
SELECT id, CASE WHEN $14::text IS NOT NULL THEN pg_notify($14, $15) END FROM ins
"""

# retry_tasks, step by step in one transaction (an admin path: clarity over round trips).
_RETRY_ROOTS_SQL = """
UPDATE queued_tasks AS t SET
    state = 'waiting', retry_count = 0, date_scheduled = now(), claimed_by = NULL,
    exception_name = NULL, exception_message = NULL, exception_info = NULL,
    date_done = NULL, date_failed = NULL, date_cancelled = NULL, date_stopped = NULL,
    date_ended = NULL
WHERE t.id = ANY($1::bigint[]) AND t.state IN ('failed', 'cancelled', 'stopped')
RETURNING t.id
"""
# One level of descendants that ended only because an ancestor did. A statement per level:
# each level's rows are locked by the previous statement, so the next snapshot sees every
# child a concurrent writer added under them.
_RETRY_LEVEL_SQL = f"""
UPDATE queued_tasks AS c SET
    state = 'waiting', claimed_by = NULL,
    exception_name = NULL, exception_message = NULL, exception_info = NULL,
    date_done = NULL, date_failed = NULL, date_cancelled = NULL, date_stopped = NULL,
    date_ended = NULL
FROM queued_task_dependencies AS d
WHERE d.parent_id = ANY($1::bigint[]) AND c.id = d.task_id
  AND ((c.state = 'failed' AND c.exception_name = '{PARENT_FAILED}')
       OR (c.state = 'cancelled' AND c.exception_name = '{PARENT_CANCELLED}'))
RETURNING c.id
"""
_RETRY_PARENTS_SQL = """
UPDATE queued_tasks AS p SET state = p.state
WHERE p.id IN (
    SELECT d.parent_id FROM queued_task_dependencies AS d WHERE d.task_id = ANY($1::bigint[])
)
"""
_RETRY_SETTLE_SQL = (
    """
WITH counts AS (
    SELECT t.id, count(p.id) FILTER (WHERE p.state <> 'done')::int AS n
    FROM unnest($1::bigint[]) AS t(id)
    LEFT JOIN queued_task_dependencies AS d ON d.task_id = t.id
    LEFT JOIN queued_tasks AS p ON p.id = d.parent_id
    GROUP BY t.id
),
settled AS (
    UPDATE queued_tasks AS c SET
        pending_parents = counts.n,
        state = CASE WHEN counts.n = 0 THEN 'enqueued' ELSE 'waiting' END
    FROM counts
    WHERE c.id = counts.id
    RETURNING c.id, c.state, c.channel
),
ready AS (SELECT DISTINCT channel FROM settled WHERE state = 'enqueued'),
control AS (SELECT NULL::bigint AS id WHERE false),
ended AS (SELECT NULL::bigint AS id WHERE false),
"""
    + _NOTES_CTE
    + """
SELECT ARRAY(SELECT channel FROM ready) AS ready, """
    + _notify_column("$2")
)

_UPDATE_CONTEXTS_SQL = """
UPDATE queued_tasks AS t SET context = c.context::jsonb
FROM unnest($1::bigint[], $2::text[]) AS c(id, context)
WHERE t.id = c.id
"""

_APPEND_LOGS_SQL = """
INSERT INTO queued_task_logs (queued_task_id, type, name, message, info, date_created)
SELECT r.task_id, r.type, r.name, r.message, r.info::jsonb, COALESCE(r.date_created, now())
FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]
) WITH ORDINALITY AS r(task_id, type, name, message, info, date_created, ord)
WHERE EXISTS (SELECT 1 FROM queued_tasks AS t WHERE t.id = r.task_id)
ORDER BY r.ord
"""

_DELETE_PENDING_SQL = """
DELETE FROM queued_tasks
WHERE state IN ('waiting', 'enqueued') AND ($1::text IS NULL OR channel = $1::text)
"""

_PRUNE_SQL = """
DELETE FROM queued_tasks
WHERE id IN (
    SELECT id FROM queued_tasks
    WHERE state IN ('done', 'failed', 'cancelled', 'stopped') AND date_ended < $1
    LIMIT $2
)
AND state IN ('done', 'failed', 'cancelled', 'stopped') AND date_ended < $1
"""

_REGISTER_SQL = """
INSERT INTO queued_task_workers (
    server_name, hostname, pid, max_workers, active_workers, idle_workers,
    is_running, last_heartbeat, started_at, version
)
VALUES ($1, $2, $3, $4, $5, $6, true, now(), COALESCE($7, now()), $8)
ON CONFLICT (server_name) DO UPDATE SET
    hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, max_workers = EXCLUDED.max_workers,
    active_workers = EXCLUDED.active_workers, idle_workers = EXCLUDED.idle_workers,
    is_running = true, last_heartbeat = EXCLUDED.last_heartbeat,
    started_at = EXCLUDED.started_at, version = EXCLUDED.version
"""

_SERVER_COLUMNS = (
    "server_name, hostname, pid, max_workers, active_workers, idle_workers, is_running, "
    "last_heartbeat, started_at, version"
)

_TREE_SQL = f"""
WITH RECURSIVE tree (id) AS (
    SELECT $1::bigint
    UNION
    SELECT d.task_id FROM tree JOIN queued_task_dependencies AS d ON d.parent_id = tree.id
)
SELECT {_TASK_COLUMNS} FROM queued_tasks WHERE id IN (SELECT id FROM tree) ORDER BY id
"""

_STATS_SQL = """
SELECT channel, state, count(*)::int AS n,
       count(*) FILTER (WHERE date_done >= now() - interval '1 minute')::int AS done_recently,
       count(*) FILTER (WHERE date_failed >= now() - interval '1 minute')::int AS failed_recently
FROM queued_tasks
GROUP BY channel, state
"""

_WORKER_STATS_SQL = """
SELECT count(*)::int AS servers,
       COALESCE(sum(max_workers), 0)::int AS total,
       COALESCE(sum(active_workers), 0)::int AS active,
       COALESCE(sum(idle_workers), 0)::int AS idle
FROM queued_task_workers WHERE is_running
"""


# -- values -----------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken as UTC, as asyncpg does)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# ``\u0000`` in JSON text is a NUL only when its backslash is not itself escaped.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _encode(value: Any, what: str) -> str:
    """``value`` as JSON text for a jsonb column, or ``ArgumentNotSerializable`` naming it."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ArgumentNotSerializable(f"{what} is not JSON-serializable: {exc}") from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ArgumentNotSerializable(f"{what} contains a NUL character, which jsonb cannot store")
    return text


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_STATES = {state.value: state for state in TaskState}
_FUNCTIONS: dict[tuple[str | None, str | None, str | None], FunctionRef] = {}


def _json(text: str) -> Any:
    # Most tasks carry empty arguments and context: skip the parser for those.
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def _function(
    module: str | None, name: str | None, blob: bytes | None, sig: str | None
) -> FunctionRef:
    """The ``FunctionRef`` of a row; import-path references are shared (they repeat a lot)."""
    if blob is not None:
        return FunctionRef(module, name, blob, sig)
    key = (module, name, sig)
    ref = _FUNCTIONS.get(key)
    if ref is None:
        if len(_FUNCTIONS) > 4096:
            _FUNCTIONS.clear()
        ref = _FUNCTIONS[key] = FunctionRef(module_name=module, function_name=name, signature=sig)
    return ref


def _task(r: asyncpg.Record) -> Task:
    """A ``Task`` from a row of ``_TASK_COLUMNS`` (by position: the hot path reads many)."""
    return Task(
        id=r[0],
        name=r[1],
        function=_function(r[2], r[3], r[4], r[5]),
        state=_STATES[r[6]],
        args=_json(r[7]),
        kwargs=_json(r[8]),
        context=_json(r[9]),
        result=None if r[10] is None else json.loads(r[10]),
        parent_task=r[11],
        pending_parents=r[12],
        channel=r[13],
        priority=r[14],
        retry_count=r[15],
        max_retries=r[16],
        timeout=r[17],
        date_enqueued=r[18],
        date_scheduled=r[19],
        date_started=r[20],
        date_done=r[21],
        date_failed=r[22],
        date_cancelled=r[23],
        date_stopped=r[24],
        date_ended=r[25],
        execution_time=r[26],
        claimed_by=r[27],
        exception_name=r[28],
        exception_message=r[29],
        exception_info=r[30],
    )


def _server(r: asyncpg.Record) -> ServerInfo:
    return ServerInfo(
        server_name=r[0],
        hostname=r[1],
        pid=r[2],
        max_workers=r[3],
        active_workers=r[4],
        idle_workers=r[5],
        is_running=r[6],
        last_heartbeat=r[7],
        started_at=r[8],
        version=r[9],
    )


def _check_length(value: str | None, limit: int, what: str) -> None:
    if value is not None and len(value) > limit:
        raise InvalidTaskError(f"{what} is longer than {limit} characters ({len(value)})")


def _check_int32(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTaskError(f"{what} must be an int, got {value!r}")
    if not _INT32[0] <= value <= _INT32[1]:
        raise InvalidTaskError(f"{what} is out of range: {value}")


def _sparse(values: list[T]) -> list[T] | None:
    """``values``, or None when every one is None.

    ``unnest`` pads a NULL array with NULLs, so the statement sees the same rows while
    PostgreSQL decodes one array less: in the common batch (every outcome done, no error,
    no new context) most outcome columns are empty, and skipping them measured ~10% less
    server CPU per completion.
    """
    return values if any(value is not None for value in values) else None


def _unique(values: Sequence[int]) -> list[int]:
    """``values`` without repeats, first occurrence kept (a parent counts once)."""
    return list(dict.fromkeys(values))


_CREATED_PAYLOADS: dict[str, str] = {}
"""NOTIFY payloads of a task created in a channel, by channel (they repeat)."""

_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""``_encode``'s encoder, built once (``json.dumps`` with options builds one per call)."""

_NONE_TYPE = type(None)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A ``NewTask`` checked and encoded, ready to be written."""

    new: NewTask
    parent_ids: list[int]
    batch_parents: list[int]
    args: str
    kwargs: str
    context: str
    timeout: str | None
    scheduled: str | None


def _prepare(tasks: Sequence[NewTask]) -> list[_Prepared]:
    """Check every task and encode its JSON, task by task; raise naming the first at fault."""
    prepared: list[_Prepared] = []
    for position, new in enumerate(tasks):
        what = f"task {position} ({new.name!r})"
        parent_ids, batch_parents = _parents_of(new, position, what)
        if not isinstance(new.args, list | tuple):
            raise InvalidTaskError(f"{what}: args must be a list, got {type(new.args).__name__}")
        for label, value in (("kwargs", new.kwargs), ("context", new.context)):
            if not isinstance(value, dict):
                raise InvalidTaskError(
                    f"{what}: {label} must be a dict, got {type(value).__name__}"
                )
        _check_length(new.name, 255, f"{what}: name")
        _check_length(new.channel, 64, f"{what}: channel")
        _check_length(new.function.module_name, 255, f"{what}: module_name")
        _check_length(new.function.function_name, 255, f"{what}: function_name")
        _check_length(new.function.signature, 64, f"{what}: signature")
        _check_int32(new.priority, f"{what}: priority")
        _check_int32(new.max_retries, f"{what}: max_retries")
        if new.max_retries < 0:
            raise InvalidTaskError(f"{what}: max_retries must be 0 or more")
        timeout = _float_text(new.timeout)
        if new.timeout is not None and timeout is None:
            raise InvalidTaskError(f"{what}: timeout must be a number, got {new.timeout!r}")
        prepared.append(
            _Prepared(
                new=new,
                parent_ids=parent_ids,
                batch_parents=batch_parents,
                args=_encode(list(new.args), f"{what}: args"),
                kwargs=_encode(new.kwargs, f"{what}: kwargs"),
                context=_encode(new.context, f"{what}: context"),
                timeout=timeout,
                scheduled=_time_text(new.date_scheduled),
            )
        )
    return prepared


def _parents_of(new: NewTask, position: int, what: str) -> tuple[list[int], list[int]]:
    """The task's parent ids and batch parents, each without repeats; checked."""
    parent_ids = _unique(new.parent_ids)
    for parent_id in parent_ids:
        if isinstance(parent_id, bool) or not isinstance(parent_id, int):
            raise InvalidTaskError(f"{what}: parent id {parent_id!r} is not an int")
    batch_parents = _unique(new.batch_parents)
    for index in batch_parents:
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidTaskError(f"{what}: batch_parents entry {index!r} is not an int")
        if not 0 <= index < position:
            raise InvalidTaskError(
                f"{what}: batch_parents entry {index} is not an earlier position in the same batch"
            )
    return parent_ids, batch_parents


@dataclass(slots=True)
class _Batch:
    """The tasks of one ``create_tasks`` call, checked, laid out column by column.

    A column holds one value per task, or a single value when every task has the same one
    (see ``_CREATE_SQL``). A JSON column is ``(document, constant)``: a JSON array with one
    element per task and None, or None and the JSON text every task has. Timeouts and
    scheduled times are already the text the statement casts back (``_float_text``,
    ``_time_text``).
    """

    count: int
    names: list[str]
    functions: list[FunctionRef]
    channels: list[str]
    priorities: list[int]
    max_retries: list[int]
    timeouts: list[str | None]
    scheduled: list[str | None]
    args: tuple[str | None, str | None]
    kwargs: tuple[str | None, str | None]
    context: tuple[str | None, str | None]
    parents: list[tuple[list[int], list[int]]] | None
    """Per task, its parent ids and batch parents (without repeats); None when no task has
    any."""
    all_names: Sequence[str]
    """Every task's name, for messages."""

    def json_text(self, column: tuple[str | None, str | None]) -> str:
        """The JSON text of a column of a batch of ONE task."""
        document, constant = column
        if constant is not None:
            return constant
        assert document is not None
        return document[1:-1]  # "[<the one element>]"


def _ids(text: str) -> list[int]:
    """The ids of a creation statement, sent as text (``1,2,3``; see ``_TASK_COLUMNS_PARAMS``)."""
    return list(map(int, text.split(",")))


def _float_text(value: Any) -> str | None:
    """A float column's value as text (exactly: ``repr`` round-trips); None for None, and
    for anything that is no number (bools included) or too large to be a float."""
    if value is None or (type(value) is not float and type(value) is not int):
        return None
    try:
        return repr(float(value))
    except OverflowError:
        return None


def _time_text(value: datetime | None) -> str | None:
    """A timestamptz column's value as text (ISO 8601, in UTC)."""
    return None if value is None else _utc(value).isoformat()


def _texts(values: Sequence[int | None]) -> list[str | None]:
    """Integers as the text[] elements of a creation statement."""
    return [None if value is None else str(value) for value in values]


def _one_or_each(values: Sequence[T]) -> list[T]:
    """``values`` as a statement column: one element when they are all equal, else all."""
    first = values[0]
    # ``count`` compares by identity first: shared values (one FunctionRef, one channel
    # string) cost a pointer comparison each.
    if values.count(first) == len(values):
        return [first]
    return list(values)


def _batch(tasks: Sequence[NewTask]) -> _Batch:
    """Check every task and lay the batch out by column; raise before anything is written.

    The checks run on whole columns (C loops through ``map``, ``set``, ``max``); when one
    finds anything unusual, the task-by-task checks of ``_prepare`` run instead, so an error
    names the first task at fault with the same message either way. Raises
    ``InvalidTaskError`` or ``ArgumentNotSerializable``.
    """
    batch = _batch_of_one(tasks[0]) if len(tasks) == 1 else _batch_by_column(tasks)
    if batch is None:
        batch = _batch_by_task(_prepare(tasks))
    return batch


_TASK_FIELDS = operator.attrgetter(
    "name",
    "function",
    "channel",
    "priority",
    "max_retries",
    "timeout",
    "date_scheduled",
    "args",
    "kwargs",
    "context",
    "parent_ids",
    "batch_parents",
)


def _batch_of_one(new: NewTask) -> _Batch | None:
    """The batch of ``new`` alone (``_batch_by_column``'s checks, on one task's fields)."""
    (
        name,
        function,
        channel,
        priority,
        max_retries,
        timeout,
        scheduled,
        args,
        kwargs,
        context,
        parent_ids,
        batch_parents,
    ) = _TASK_FIELDS(new)
    if (
        type(name) is not str
        or len(name) > NAME_MAX
        or type(channel) is not str
        or not channel
        or len(channel) > CHANNEL_MAX
        or type(priority) is not int
        or not _INT32[0] <= priority <= _INT32[1]
        or type(max_retries) is not int
        or not 0 <= max_retries <= _INT32[1]
        or (scheduled is not None and type(scheduled) is not datetime)
        or (timeout is not None and type(timeout) is not float and type(timeout) is not int)
        or (type(args) is not list and type(args) is not tuple)
        or type(kwargs) is not dict
        or type(context) is not dict
        or not _function_fits(function)
    ):
        return None
    parents: list[tuple[list[int], list[int]]] | None = None
    if parent_ids or batch_parents:
        try:
            parents = [_parents_of(new, 0, "")]
        except InvalidTaskError:
            return None
    try:
        texts = (
            _JSON.encode(args) if args else "[]",
            _JSON.encode(kwargs) if kwargs else "{}",
            _JSON.encode(context) if context else "{}",
        )
    except (TypeError, ValueError, RecursionError):
        return None
    if any(_has_nul(text) for text in texts):
        return None
    timeout_text = _float_text(timeout)
    if timeout is not None and timeout_text is None:
        return None
    # One task: each JSON column is its constant.
    return _Batch(
        count=1,
        names=[name],
        functions=[function],
        channels=[channel],
        priorities=[priority],
        max_retries=[max_retries],
        timeouts=[timeout_text],
        scheduled=[_time_text(scheduled)],
        args=(None, texts[0]),
        kwargs=(None, texts[1]),
        context=(None, texts[2]),
        parents=parents,
        all_names=[name],
    )


def _batch_by_column(tasks: Sequence[NewTask]) -> _Batch | None:
    """The batch, or None when a column holds anything but the plain, valid values."""
    # (A list per column, not a tuple per task: no object per task to allocate and collect.)
    names = [t.name for t in tasks]
    functions = [t.function for t in tasks]
    channels = [t.channel for t in tasks]
    priorities = [t.priority for t in tasks]
    max_retries = [t.max_retries for t in tasks]
    timeouts = [t.timeout for t in tasks]
    scheduled = [t.date_scheduled for t in tasks]
    args = [t.args for t in tasks]
    kwargs = [t.kwargs for t in tasks]
    context = [t.context for t in tasks]
    # Types first, over every value: equal values of other types (3.0 == 3 == True) must
    # not hide behind a first value that passes.
    if (
        set(map(type, names)) != {str}
        or set(map(type, channels)) != {str}
        or set(map(type, priorities)) != {int}
        or set(map(type, max_retries)) != {int}
        or not set(map(type, scheduled)) <= {_NONE_TYPE, datetime}
        or not set(map(type, timeouts)) <= {_NONE_TYPE, int, float}
        or not set(map(type, args)) <= {list, tuple}
        or set(map(type, kwargs)) != {dict}
        or set(map(type, context)) != {dict}
    ):
        return None
    name_column = _one_or_each(names)
    channel_column = _one_or_each(channels)
    priority_column = _one_or_each(priorities)
    retries_column = _one_or_each(max_retries)
    function_column = _one_or_each(functions)
    if (
        max(map(len, name_column)) > NAME_MAX
        or not all(channel_column)
        or max(map(len, channel_column)) > CHANNEL_MAX
        or min(priority_column) < _INT32[0]
        or max(priority_column) > _INT32[1]
        or min(retries_column) < 0
        or max(retries_column) > _INT32[1]
        or not all(map(_function_fits, function_column))
    ):
        return None
    parents: list[tuple[list[int], list[int]]] | None = None
    if any([t.parent_ids for t in tasks]) or any([t.batch_parents for t in tasks]):
        try:
            parents = [_parents_of(new, position, "") for position, new in enumerate(tasks)]
        except InvalidTaskError:
            return None
    try:
        json_columns = (
            _json_column(args, "[]"),
            _json_column(kwargs, "{}"),
            _json_column(context, "{}"),
        )
    except (TypeError, ValueError, RecursionError):
        return None
    if any(document is not None and _has_nul(document) for document, _ in json_columns):
        return None
    timeout_values = _one_or_each(timeouts)
    timeout_column = [_float_text(timeout) for timeout in timeout_values]
    if timeout_column.count(None) != timeout_values.count(None):
        return None  # a timeout too large for a float (_prepare names it)
    scheduled_column: list[str | None] = [None]
    if scheduled.count(None) != len(scheduled):
        scheduled_column = _one_or_each([_time_text(when) for when in scheduled])
    return _Batch(
        count=len(names),
        names=name_column,
        functions=function_column,
        channels=channel_column,
        priorities=priority_column,
        max_retries=retries_column,
        timeouts=timeout_column,
        scheduled=scheduled_column,
        args=json_columns[0],
        kwargs=json_columns[1],
        context=json_columns[2],
        parents=parents,
        all_names=names,
    )


def _function_fits(ref: FunctionRef) -> bool:
    """True when the columns of ``ref`` hold it (text of the column sizes, or NULL)."""
    if type(ref) is not FunctionRef:
        return False
    module, name, signature = ref.module_name, ref.function_name, ref.signature
    return (
        (module is None or (type(module) is str and len(module) <= NAME_MAX))
        and (name is None or (type(name) is str and len(name) <= NAME_MAX))
        and (signature is None or (type(signature) is str and len(signature) <= SIGNATURE_MAX))
    )


def _json_column(values: Sequence[Any], empty: str) -> tuple[str | None, str | None]:
    """A JSON column as ``(document, None)``, or ``(None, empty)`` when every value is empty."""
    if not any(values):
        return None, empty
    return _JSON.encode(values), None


def _has_nul(text: str) -> bool:
    return "\\u0000" in text and _NUL_ESCAPE.search(text) is not None


def _batch_by_task(prepared: list[_Prepared]) -> _Batch:
    """The batch of tasks ``_prepare`` checked one by one (it raised if one was at fault)."""
    news = [item.new for item in prepared]
    parents = [(item.parent_ids, item.batch_parents) for item in prepared]
    return _Batch(
        count=len(news),
        names=_one_or_each([n.name for n in news]),
        functions=_one_or_each([n.function for n in news]),
        channels=_one_or_each([n.channel for n in news]),
        priorities=_one_or_each([n.priority for n in news]),
        max_retries=_one_or_each([n.max_retries for n in news]),
        timeouts=_one_or_each([item.timeout for item in prepared]),
        scheduled=_one_or_each([item.scheduled for item in prepared]),
        args=("[" + ",".join(item.args for item in prepared) + "]", None),
        kwargs=("[" + ",".join(item.kwargs for item in prepared) + "]", None),
        context=("[" + ",".join(item.context for item in prepared) + "]", None),
        parents=parents if any(p or b for p, b in parents) else None,
        all_names=[n.name for n in news],
    )


@dataclass(slots=True)
class _Plan:
    """The state columns of a batch and its edges, computed from the parents' states."""

    states: list[str]
    pending: list[int]
    parent_id: list[int | None]
    parent_pos: list[int | None]
    cause_id: list[int | None]
    cause_pos: list[int | None]
    edge_child: list[int]
    edge_parent_id: list[int | None]
    edge_parent_pos: list[int | None]


_NO_PARENTS = _Plan([TaskState.ENQUEUED.value], [0], [None], [None], [None], [None], [], [], [])
"""The plan of a batch in which no task has a parent (never mutated)."""


def _plan(batch: _Batch, parent_states: Mapping[int, str]) -> _Plan:
    """Each task's starting state and pending count, and its edges (positions are 1-based).

    As if each parent had just ended: a parent failed makes the task failed, else a parent
    cancelled makes it cancelled (naming that parent); else it waits for the parents not
    done. Batch parents are new, so never done; their own computed state counts.
    """
    if batch.parents is None:
        return _NO_PARENTS
    plan = _Plan([], [], [], [], [], [], [], [], [])
    for position, (parent_ids, batch_parents) in enumerate(batch.parents):
        ord_ = position + 1
        failed: tuple[int | None, int | None] | None = None
        cancelled: tuple[int | None, int | None] | None = None
        pending = 0
        for parent_id in parent_ids:
            state = parent_states[parent_id]
            pending += state != TaskState.DONE
            if state == TaskState.FAILED and failed is None:
                failed = (parent_id, None)
            elif state == TaskState.CANCELLED and cancelled is None:
                cancelled = (parent_id, None)
            plan.edge_child.append(ord_)
            plan.edge_parent_id.append(parent_id)
            plan.edge_parent_pos.append(None)
        for index in batch_parents:
            state = plan.states[index]
            pending += 1
            if state == TaskState.FAILED and failed is None:
                failed = (None, index + 1)
            elif state == TaskState.CANCELLED and cancelled is None:
                cancelled = (None, index + 1)
            plan.edge_child.append(ord_)
            plan.edge_parent_id.append(None)
            plan.edge_parent_pos.append(index + 1)
        if failed is not None:
            state_value, cause = TaskState.FAILED.value, failed
        elif cancelled is not None:
            state_value, cause = TaskState.CANCELLED.value, cancelled
        else:
            state_value = TaskState.WAITING.value if pending else TaskState.ENQUEUED.value
            cause = (None, None)
        plan.states.append(state_value)
        plan.pending.append(pending)
        plan.cause_id.append(cause[0])
        plan.cause_pos.append(cause[1])
        if parent_ids:
            plan.parent_id.append(parent_ids[0])
            plan.parent_pos.append(None)
        elif batch_parents:
            plan.parent_id.append(None)
            plan.parent_pos.append(batch_parents[0] + 1)
        else:
            plan.parent_id.append(None)
            plan.parent_pos.append(None)
    # Batch parents read ``plan.states`` by position above: compress only now.
    plan.states = _one_or_each(plan.states)
    plan.pending = _one_or_each(plan.pending)
    plan.parent_id = _one_or_each(plan.parent_id)
    plan.parent_pos = _one_or_each(plan.parent_pos)
    plan.cause_id = _one_or_each(plan.cause_id)
    plan.cause_pos = _one_or_each(plan.cause_pos)
    return plan


# -- subscriptions without NOTIFY -----------------------------------------------------------


class _LocalSubscription:
    """A subscriber in this process, used when NOTIFY is off; events come by ``call_soon``."""

    def __init__(
        self, owner: PostgresRepository, handler: EventHandler, loop: asyncio.AbstractEventLoop
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
        """Stop delivering events. Idempotent."""
        self._open = False
        self._owner._local.discard(self)

    def schedule(self, event: Event) -> None:
        if self._open and not self._loop.is_closed():
            self._loop.call_soon(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        if not self._open:
            return
        try:
            self._handler(event)
        except Exception:
            logger.exception("event handler %r failed on %r", self._handler, event)


# -- the repository ---------------------------------------------------------------------------


class PostgresRepository:
    """``TaskRepository`` on PostgreSQL (migrated with ``taskq migrate``).

    ``database_url``: ``postgres://user:password@host:port/database`` (Tortoise URL options
    such as ``?maxsize=20`` size the pool). ``notify_channel``: the LISTEN/NOTIFY channel.
    ``use_notify``: with it, every write sends its events with NOTIFY inside its own
    transaction (delivered at commit, to every process, this one included, through LISTEN);
    without it, events reach only subscribers of this object and other processes poll.
    ``client``: a Tortoise asyncpg client of the host application to use instead of opening
    a connection pool of our own; it is never closed here.

    ``listen_probe_interval`` / ``listen_probe_timeout``: how often the LISTEN connection is
    probed with ``SELECT 1``, and how long a probe may take before the connection is
    declared dead and replaced.
    """

    def __init__(
        self,
        database_url: str,
        *,
        notify_channel: str = "queue_new_task",
        use_notify: bool = True,
        client: Any = None,
        listen_probe_interval: float = 5.0,
        listen_probe_timeout: float = 5.0,
    ) -> None:
        self.database_url = database_url
        self.notify_channel = notify_channel
        self.use_notify = use_notify
        self.supports_notify: bool = use_notify
        self._given_client = client
        self._client: Any = None
        self._context: Any = None
        self._probe_interval = listen_probe_interval
        self._probe_timeout = listen_probe_timeout
        self._listener: Listener | None = None
        self._listener_lock: asyncio.Lock | None = None
        self._subscriptions: set[ListenerSubscription] = set()
        self._local: set[_LocalSubscription] = set()

    def __repr__(self) -> str:
        return f"<PostgresRepository channel={self.notify_channel!r} notify={self.use_notify}>"

    @property
    def _notify(self) -> str | None:
        """The channel statements NOTIFY on, or None (the SQL then skips its pg_notify)."""
        return self.notify_channel if self.use_notify else None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (own pool, unless a client was given) and check the schema. Idempotent.

        Raises ``RepositoryError`` when the database cannot be reached or was not migrated,
        and ``ConfigError`` when the given client is not a Tortoise asyncpg client.
        """
        if self._client is not None:
            return
        if self._given_client is not None:
            self._check_client(self._given_client)
            self._client = self._given_client
        else:
            from tortoise.context import TortoiseContext

            from taskqueue_core.tortoise.schema import tortoise_config

            context = TortoiseContext()
            config = tortoise_config(
                self.database_url, pool_options={"reset": _keep_session}, with_models=False
            )
            try:
                # A pool only: the repository's SQL needs no models, and registering them
                # would rebind the model classes away from a host application's own
                # Tortoise setup. The context is current only while it initialises.
                with context, warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Module .* has no models", RuntimeWarning)
                    await context.init(config=config)
                    client = context.db("taskqueue")
            except _DRIVER_ERRORS as exc:
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await context.close_connections()
                raise RepositoryError(f"cannot open the task database: {exc}") from exc
            self._context, self._client = context, client
        try:
            async with self._connection() as conn:
                found = await conn.fetchval("SELECT to_regclass('queued_tasks') IS NOT NULL")
        except RepositoryError:
            await self.close()
            raise
        if not found:
            await self.close()
            raise RepositoryError(
                "the database has no taskqueue tables: run `taskq migrate` "
                "(taskqueue_core.tortoise.schema.migrate) first"
            )

    async def close(self) -> None:
        """Close subscriptions, the LISTEN connection and our own pool. Idempotent."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        for local in list(self._local):
            await local.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        context, self._context = self._context, None
        if context is not None:
            self._client = None
            with contextlib.suppress(*_DRIVER_ERRORS):
                await context.close_connections()
        elif self._given_client is not None:
            self._client = None

    @staticmethod
    def _check_client(client: Any) -> None:
        from tortoise.backends.asyncpg.client import AsyncpgDBClient

        if not isinstance(client, AsyncpgDBClient):
            raise ConfigError(
                f"PostgresRepository needs a Tortoise asyncpg client, got {type(client).__name__}"
            )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A raw asyncpg connection from the client's pool; driver errors become ours."""
        client = self._client
        if client is None:
            raise RepositoryError("the repository is not open")
        try:
            async with client.acquire_connection() as conn:
                yield conn
        except _DRIVER_ERRORS as exc:
            raise RepositoryError(f"task database error: {exc}") from exc

    async def _write(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a connection, again (a few times) if it lost a deadlock."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                async with self._connection() as conn:
                    return await work(conn)
            except RepositoryError as exc:
                if attempt == _WRITE_ATTEMPTS or not isinstance(exc.__cause__, _RETRYABLE_ERRORS):
                    raise
                logger.info("retrying a write after %r", exc.__cause__)
        raise AssertionError("unreachable")

    # -- creation ------------------------------------------------------------------------

    async def create_tasks(self, tasks: Sequence[NewTask], *, transaction: Any = None) -> list[int]:
        """Insert ``tasks`` with their dependency edges, all or nothing; return their ids.

        ``parent_task`` is ``parent_ids[0]`` when there is one, else the first batch parent;
        a parent named twice counts once. Raises ``UnknownParent`` (naming the id),
        ``InvalidTaskError`` or ``ArgumentNotSerializable`` before anything is written.
        ``transaction``: a Tortoise client from ``in_transaction()`` (or an asyncpg
        connection inside a transaction) to write through; the caller commits, and the
        NOTIFY goes out with that commit. Without NOTIFY, subscribers of this object hear
        of the tasks at once, before the caller commits.

        One statement whatever the size of the batch (its cost is linear in it), plus, when
        tasks name existing parents, the statement that locks them first (both in one
        transaction).
        """
        if not tasks:
            return []
        batch = _batch(tasks)
        if transaction is not None:
            async with self._joined(transaction) as conn:
                return await self._create(conn, batch, own_transaction=False)
        return await self._write(lambda conn: self._create(conn, batch, own_transaction=True))

    @contextlib.asynccontextmanager
    async def _joined(self, transaction: Any) -> AsyncIterator[asyncpg.Connection]:
        """The asyncpg connection of a caller's transaction; driver errors become ours."""
        from tortoise.backends.base.client import TransactionalDBClient

        if isinstance(transaction, TransactionalDBClient):
            if transaction._finalized:
                raise InvalidTaskError("transaction= is already committed or rolled back")
            try:
                async with transaction.acquire_connection() as conn:
                    yield conn
            except _DRIVER_ERRORS as exc:
                raise RepositoryError(f"task database error: {exc}") from exc
            return
        if isinstance(transaction, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
            if not transaction.is_in_transaction():
                raise InvalidTaskError("transaction= must be a connection inside a transaction")
            try:
                yield transaction
            except _DRIVER_ERRORS as exc:
                raise RepositoryError(f"task database error: {exc}") from exc
            return
        raise InvalidTaskError(
            "transaction= must be a Tortoise client from in_transaction() or an asyncpg "
            f"connection inside a transaction, got {type(transaction).__name__}"
        )

    async def _create(
        self, conn: asyncpg.Connection, batch: _Batch, *, own_transaction: bool
    ) -> list[int]:
        if batch.parents is None:
            # No parent at all: one statement, atomic on its own.
            if batch.count == 1:
                return [await self._create_one(conn, batch)]
            return await self._create_free(conn, batch)
        existing = sorted({parent for ids, _ in batch.parents for parent in ids})
        if not existing:
            row = await conn.fetchrow(_CREATE_SQL, *self._create_args(batch, {}))
        else:
            transaction = conn.transaction() if own_transaction else contextlib.nullcontext()
            async with transaction:
                rows = await conn.fetch(_TOUCH_SQL, existing)
                states = {r[0]: r[1] for r in rows}
                for position, (parent_ids, _) in enumerate(batch.parents):
                    for parent_id in parent_ids:
                        if parent_id not in states:
                            raise UnknownParent(
                                f"task {position} ({batch.all_names[position]!r}): "
                                f"parent task {parent_id} does not exist"
                            )
                row = await conn.fetchrow(_CREATE_SQL, *self._create_args(batch, states))
        assert row is not None
        self._emit_local(ready=row["ready"], ended=[int(i) for i in row["ended"]])
        return _ids(row["ids"])

    async def _create_one(self, conn: asyncpg.Connection, batch: _Batch) -> int:
        """Insert the one task of ``batch`` (it has no parent) with ``_CREATE_ONE_SQL``."""
        [function] = batch.functions
        [channel] = batch.channels
        notify = self._notify
        payload = None
        if notify is not None:
            payload = _CREATED_PAYLOADS.get(channel)
            if payload is None:
                [payload] = encode_event(Event("created", channels=(channel,)))
                if len(_CREATED_PAYLOADS) < 1024:
                    _CREATED_PAYLOADS[channel] = payload
        row = await conn.fetchrow(
            _CREATE_ONE_SQL,
            batch.names[0],
            function.module_name,
            function.function_name,
            function.serialized_function,
            function.signature,
            batch.json_text(batch.args),
            batch.json_text(batch.kwargs),
            batch.json_text(batch.context),
            channel,
            batch.priorities[0],
            batch.max_retries[0],
            batch.timeouts[0],
            batch.scheduled[0],
            notify,
            payload,
        )
        assert row is not None
        self._emit_local(ready=[channel])
        task_id: int = row[0]
        return task_id

    async def _create_free(self, conn: asyncpg.Connection, batch: _Batch) -> list[int]:
        """Insert ``batch`` (no task has a parent) with ``_CREATE_FREE_SQL``."""
        channels = sorted(set(batch.channels))
        notify = self._notify
        payloads: list[str] = []
        if notify is not None:
            payloads = encode_event(Event("created", channels=tuple(channels)))
        row = await conn.fetchrow(_CREATE_FREE_SQL, *self._columns_args(batch), notify, payloads)
        assert row is not None
        self._emit_local(ready=channels)
        return _ids(row[0])

    @staticmethod
    def _columns_args(batch: _Batch) -> list[Any]:
        """The arguments ``$1`` to ``$17`` of the creation statements: the tasks' columns."""
        functions = batch.functions
        return [
            batch.count,
            batch.names,
            [f.module_name for f in functions],
            [f.function_name for f in functions],
            [
                None if f.serialized_function is None else f.serialized_function.hex()
                for f in functions
            ],
            [f.signature for f in functions],
            batch.channels,
            _texts(batch.priorities),
            _texts(batch.max_retries),
            batch.timeouts,
            batch.scheduled,
            *batch.args,
            *batch.kwargs,
            *batch.context,
        ]

    def _create_args(self, batch: _Batch, states: Mapping[int, str]) -> list[Any]:
        """The arguments of ``_CREATE_SQL`` for ``batch``, given its existing parents' states."""
        plan = _plan(batch, states)
        return [
            *self._columns_args(batch),
            plan.states,
            _texts(plan.pending),
            _texts(plan.parent_id),
            _texts(plan.parent_pos),
            _texts(plan.cause_id),
            _texts(plan.cause_pos),
            _texts(plan.edge_child),
            _texts(plan.edge_parent_id),
            _texts(plan.edge_parent_pos),
            self._notify,
        ]

    # -- execution -----------------------------------------------------------------------

    async def claim_tasks(
        self, server_name: str, limit: int, channels: Sequence[str] | None = None
    ) -> list[Task]:
        """Move up to ``limit`` ready tasks to ``doing`` for ``server_name``, in claim order.

        One statement. ``channels=[]`` claims nothing.
        """
        if limit <= 0 or (channels is not None and not channels):
            return []
        async with self._connection() as conn:
            if channels is None:
                rows = await conn.fetch(_CLAIM_ANY_SQL, server_name, limit)
            else:
                rows = await conn.fetch(_CLAIM_CHANNELS_SQL, server_name, limit, list(channels))
        tasks = [_task(r) for r in rows]
        # RETURNING gives no order; give them in claim order.
        tasks.sort(key=lambda t: (-t.priority, t.date_scheduled or t.date_enqueued, t.id))
        return tasks

    async def next_due(self, channels: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``date_scheduled`` after now among enqueued tasks of ``channels``
        (None: any), or None when no enqueued task is scheduled for later. A few index
        probes through the claim index, however many tasks are enqueued."""
        if channels is not None and not channels:
            return None
        async with self._connection() as conn:
            if channels is None:
                due: datetime | None = await conn.fetchval(_NEXT_DUE_ANY_SQL)
            else:
                due = await conn.fetchval(_NEXT_DUE_CHANNELS_SQL, list(channels))
        return due

    async def complete_tasks(self, server_name: str, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply ``outcomes`` to tasks still ``doing`` for ``server_name``; return the ids changed.

        One statement per batch (more only when a concurrent writer touched one of the rows;
        see the module docstring). The ids are returned in the order of ``outcomes``; a second
        outcome for the same task is ignored, as the task is no longer doing by then.
        Raises ``InvalidTransition`` for an outcome state that is not done, failed, enqueued,
        cancelled or stopped, and ``ArgumentNotSerializable`` for a result or context that is
        not JSON, before anything is written.
        """
        seen: set[int] = set()
        batch: list[tuple[Outcome, str | None, str | None]] = []
        for outcome in outcomes:
            if outcome.state not in _OUTCOME_STATES:
                raise InvalidTransition(
                    f"task {outcome.task_id}: an outcome cannot be {str(outcome.state)!r}"
                )
            result = (
                _encode(outcome.result, f"result of task {outcome.task_id}")
                if outcome.state is TaskState.DONE and outcome.result is not None
                else None
            )
            context = (
                None
                if outcome.context is None
                else _encode(outcome.context, f"context of task {outcome.task_id}")
            )
            if outcome.task_id in seen:
                continue
            seen.add(outcome.task_id)
            batch.append((outcome, result, context))
        if not batch:
            return []
        changed: set[int] = set()
        async with self._connection() as conn:
            await self._complete(conn, server_name, batch, changed)
        return [outcome.task_id for outcome, _, _ in batch if outcome.task_id in changed]

    async def _complete(
        self,
        conn: asyncpg.Connection,
        server_name: str,
        batch: list[tuple[Outcome, str | None, str | None]],
        changed: set[int],
    ) -> None:
        """Apply ``batch``, adding the ids changed to ``changed``; re-run for contended rows."""
        for _ in range(_GUARD_ROUNDS):
            row = await _fetchrow(
                conn,
                _COMPLETE_SQL,
                server_name,
                [o.task_id for o, _, _ in batch],
                [o.state.value for o, _, _ in batch],
                _sparse([result for _, result, _ in batch]),
                _sparse([o.error_name for o, _, _ in batch]),
                _sparse([o.error_message for o, _, _ in batch]),
                _sparse([o.error_info for o, _, _ in batch]),
                _sparse([None if o.retry_at is None else _utc(o.retry_at) for o, _, _ in batch]),
                None
                if all(o.count_attempt for o, _, _ in batch)
                else [o.count_attempt for o, _, _ in batch],
                _sparse([o.execution_time for o, _, _ in batch]),
                _sparse([context for _, _, context in batch]),
                self._notify,
            )
            changed.update(row["changed"])
            cascaded = await self._finish_cascade(conn, row["kill_left"])
            self._emit_local(ready=row["ready"], ended=[*row["ended"], *cascaded])
            contended = set(row["contended"])
            if not contended:
                return
            batch = [item for item in batch if item[0].task_id in contended]
        logger.warning("complete_tasks gave up on contended tasks %s", sorted(contended))

    async def _finish_cascade(self, conn: asyncpg.Connection, kill_left: str | None) -> list[int]:
        """End the cascaded tasks a guarded statement had to leave; return their ids.

        Each follow-up statement sends its own ``ended`` NOTIFY; the caller emits the local
        events (when NOTIFY is off) once its work is committed.
        """
        ended: list[int] = []
        for _ in range(_GUARD_ROUNDS):
            if not kill_left:
                return ended
            left = json.loads(kill_left)
            row = await _fetchrow(
                conn,
                _KILL_SQL,
                [int(item[0]) for item in left],
                [int(item[1]) for item in left],
                [str(item[2]) for item in left],
                self._notify,
            )
            ended.extend(row["ended"])
            kill_left = row["kill_left"]
        logger.warning("a cascade gave up on contended tasks: %s", kill_left)
        return ended

    async def get_states(self, task_ids: Sequence[int]) -> dict[int, TaskState]:
        """The current state of each existing id (missing ids are left out)."""
        if not task_ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, state FROM queued_tasks WHERE id = ANY($1::bigint[])", list(task_ids)
            )
        found = {r[0]: TaskState(r[1]) for r in rows}
        return {i: found[i] for i in task_ids if i in found}

    async def update_contexts(self, contexts: Mapping[int, dict[str, Any]]) -> None:
        """Replace the stored context of each task (any state; missing ids are ignored).

        Raises ``ArgumentNotSerializable`` (nothing written) if a context is not JSON.
        """
        if not contexts:
            return
        ids = list(contexts)
        texts = [_encode(contexts[i], f"context of task {i}") for i in ids]
        async with self._connection() as conn:
            await conn.execute(_UPDATE_CONTEXTS_SQL, ids, texts)

    async def append_logs(self, records: Sequence[NewLogRecord]) -> None:
        """Insert log rows in one statement; ``date_created`` None means now.

        Records of missing tasks are dropped. ``type`` and ``name`` longer than their columns
        (16 and 255 characters) are cut, and NUL characters (which PostgreSQL text cannot
        hold) replaced, rather than losing the line. Raises ``ArgumentNotSerializable``
        (nothing written) if an ``info`` is not JSON.
        """
        if not records:
            return
        infos = [
            None if r.info is None else _encode(r.info, f"log info of task {r.task_id}")
            for r in records
        ]
        args = [
            [r.task_id for r in records],
            [r.type[:16].replace("\x00", "\ufffd") for r in records],
            [r.name[:255].replace("\x00", "\ufffd") for r in records],
            [r.message.replace("\x00", "\ufffd") for r in records],
            infos,
            [None if r.date_created is None else _utc(r.date_created) for r in records],
        ]

        async def insert(conn: asyncpg.Connection) -> None:
            try:
                await conn.execute(_APPEND_LOGS_SQL, *args)
            except asyncpg.ForeignKeyViolationError:
                # A task was deleted between the check and the insert: drop its lines.
                await conn.execute(_APPEND_LOGS_SQL, *args)

        await self._write(insert)

    # -- control (admin writes) ----------------------------------------------------------

    async def cancel_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel waiting, enqueued or doing tasks and their waiting descendants.

        Returns every id changed, descendants included, ascending. Emits ``control`` for
        the tasks that were doing and ``ended`` for all.
        """
        return await self._control(task_ids, TaskState.CANCELLED)

    async def stop_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Stop waiting, enqueued or doing tasks; descendants stay waiting. Ids ascending.

        Emits ``control`` for those that were doing, and ``ended`` for all.
        """
        return await self._control(task_ids, TaskState.STOPPED)

    async def _control(self, task_ids: Sequence[int], state: TaskState) -> list[int]:
        ids = _unique(task_ids)
        if not ids:
            return []

        changed: list[int] = []
        async with self._connection() as conn:
            remaining = ids
            for _ in range(_GUARD_ROUNDS):
                row = await _fetchrow(conn, _CONTROL_SQL, remaining, state.value, self._notify)
                cascaded = await self._finish_cascade(conn, row["kill_left"])
                changed.extend(row["ended"])
                changed.extend(cascaded)
                self._emit_local(control=row["control"], ended=[*row["ended"], *cascaded])
                remaining = list(row["contended"])
                if not remaining:
                    break
        return sorted(set(changed))

    async def retry_tasks(self, task_ids: Sequence[int]) -> list[int]:
        """Re-enqueue failed, cancelled or stopped tasks and restore what their end cascaded to.

        A retried task is due at once (``date_scheduled`` = now) with ``retry_count`` 0; the
        descendants restored (those failed or cancelled with ``ParentFailed`` /
        ``ParentCancelled``) keep their schedule and count. Each becomes ``enqueued`` when
        all its parents are done, else ``waiting`` with ``pending_parents`` recomputed.
        Returns the ids changed (retried and restored), ascending. Emits ``created`` naming
        the channels of the tasks now enqueued.
        """
        ids = _unique(task_ids)
        if not ids:
            return []

        async def work(conn: asyncpg.Connection) -> list[int]:
            async with conn.transaction():
                roots = [r[0] for r in await conn.fetch(_RETRY_ROOTS_SQL, ids)]
                if not roots:
                    return []
                touched = list(roots)
                level = roots
                while level:
                    level = [r[0] for r in await conn.fetch(_RETRY_LEVEL_SQL, level)]
                    touched.extend(level)
                # Lock the parents (and give them a new row version) before counting them:
                # a parent ending concurrently either committed before this (and is counted
                # done) or will see the restored children when it retries.
                await conn.execute(_RETRY_PARENTS_SQL, touched)
                row = await conn.fetchrow(_RETRY_SETTLE_SQL, touched, self._notify)
                assert row is not None
            self._emit_local(ready=row["ready"])
            return sorted(set(touched))

        return await self._write(work)

    async def delete_pending(self, channel: str | None = None) -> int:
        """Delete waiting and enqueued tasks (of ``channel``, or all); return how many.

        Their logs and edges go with them; tasks that depended on them keep existing
        (``parent_task`` becomes null) and are not released by them.
        """
        async with self._connection() as conn:
            status = await conn.execute(_DELETE_PENDING_SQL, channel)
        return _rowcount(status)

    # -- servers and maintenance ---------------------------------------------------------

    async def register_server(self, server: ServerInfo) -> None:
        """Insert or replace the row of ``server.server_name`` (running, heartbeat now).

        ``started_at`` is kept when given, else now.
        """
        async with self._connection() as conn:
            await conn.execute(
                _REGISTER_SQL,
                server.server_name,
                server.hostname,
                server.pid,
                server.max_workers,
                server.active_workers,
                server.idle_workers,
                None if server.started_at is None else _utc(server.started_at),
                server.version,
            )

    async def heartbeat(self, server_name: str, active_workers: int, idle_workers: int) -> bool:
        """Record the server alive now with these counts; False when it has no row."""
        async with self._connection() as conn:
            status = await conn.execute(
                "UPDATE queued_task_workers SET active_workers = $2, idle_workers = $3, "
                "last_heartbeat = now() WHERE server_name = $1",
                server_name,
                active_workers,
                idle_workers,
            )
        return _rowcount(status) > 0

    async def unregister_server(self, server_name: str) -> None:
        """Delete the server's row (nothing happens when there is none)."""
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM queued_task_workers WHERE server_name = $1", server_name
            )

    async def rescue_stale(self, stale_before: datetime) -> list[int]:
        """Re-enqueue (or fail, when attempts are used up) tasks of dead servers.

        Returns the ids of the ``doing`` tasks handled, ascending (descendants failed by the
        cascade are not listed). A re-enqueued task is due now with ``retry_count`` + 1 and
        ``WorkerLost`` as its last error; a task with no attempt left (``retry_count`` >=
        ``max_retries``) becomes failed, cascading as a failure. Stale server rows are
        deleted. One reaper at a time: the work runs under a transaction advisory lock and
        a caller that cannot take it returns [] at once.
        """
        limit = _utc(stale_before)

        async def work(conn: asyncpg.Connection) -> list[int]:
            rescued: list[int] = []
            ready: list[str] = []
            ended: list[int] = []
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", REAPER_LOCK_KEY):
                    return []
                for _ in range(_GUARD_ROUNDS):
                    row = await conn.fetchrow(_RESCUE_SQL, limit, self._notify)
                    assert row is not None
                    rescued.extend(row["rescued"])
                    ready.extend(row["ready"])
                    ended.extend(row["ended"])
                    ended.extend(await self._finish_cascade(conn, row["kill_left"]))
                    if not row["contended"]:
                        break
            self._emit_local(ready=sorted(set(ready)), ended=ended)
            return sorted(set(rescued))

        return await self._write(work)

    async def prune(self, ended_before: datetime) -> int:
        """Delete finished tasks that ended before ``ended_before``, with logs and edges.

        Children keep existing (``parent_task`` becomes null). Deletes in chunks so that no
        statement holds many locks for long. Returns how many.
        """
        limit = _utc(ended_before)
        total = 0
        async with self._connection() as conn:
            while True:
                count = _rowcount(await conn.execute(_PRUNE_SQL, limit, _PRUNE_CHUNK))
                total += count
                if count < _PRUNE_CHUNK:
                    return total

    # -- reads ---------------------------------------------------------------------------

    async def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The existing tasks among ``task_ids``, in the given order (missing ids left out)."""
        if not task_ids:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"{_SELECT_TASKS} WHERE id = ANY($1::bigint[])", list(set(task_ids))
            )
        found = {r[0]: _task(r) for r in rows}
        return [found[i] for i in task_ids if i in found]

    async def list_tasks(
        self, filter: TaskFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> TaskPage:
        """Tasks matching ``filter``, highest id first, and the total that match.

        ``name`` matches a case-insensitive substring; ``enqueued_after`` is inclusive and
        ``enqueued_before`` exclusive (a half-open range).
        """
        where, args = _filter_sql(filter or TaskFilter())
        async with self._connection() as conn:
            total = await conn.fetchval(f"SELECT count(*) FROM queued_tasks{where}", *args)
            n = len(args)
            rows = await conn.fetch(
                f"{_SELECT_TASKS}{where} ORDER BY id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
                *args,
                max(limit, 0),
                max(offset, 0),
            )
        return TaskPage(tasks=[_task(r) for r in rows], total=int(total))

    async def get_tree(self, task_id: int) -> TaskTree:
        """The task and every descendant (ascending ids) with the edges between them.

        Raises ``UnknownTask``.
        """
        async with self._connection() as conn:
            rows = await conn.fetch(_TREE_SQL, task_id)
            if not rows:
                raise UnknownTask(f"task {task_id} does not exist")
            ids = [r[0] for r in rows]
            edges = await conn.fetch(
                "SELECT task_id, parent_id FROM queued_task_dependencies "
                "WHERE task_id = ANY($1::bigint[]) AND parent_id = ANY($1::bigint[]) "
                "ORDER BY task_id, id",
                ids,
            )
        return TaskTree(tasks=[_task(r) for r in rows], edges=[(e[0], e[1]) for e in edges])

    async def get_logs(
        self, task_id: int, *, after_id: int | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """Log rows of the task in insertion (id) order, with id greater than ``after_id``."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, queued_task_id, type, name, message, info::text, date_created "
                "FROM queued_task_logs WHERE queued_task_id = $1 AND id > $2 "
                "ORDER BY id LIMIT $3",
                task_id,
                after_id or 0,
                max(limit, 0),
            )
        return [
            LogRecord(
                id=r[0],
                task_id=r[1],
                type=r[2],
                name=r[3],
                message=r[4],
                info=_decode(r[5]),
                date_created=r[6],
            )
            for r in rows
        ]

    async def stats(self) -> Stats:
        """Counts by state (every state listed) and channel, last-minute throughput, workers."""
        async with self._connection() as conn:
            rows = await conn.fetch(_STATS_SQL)
            workers = await conn.fetchrow(_WORKER_STATS_SQL)
        assert workers is not None
        by_state = {state.value: 0 for state in TaskState}
        by_channel: dict[str, dict[str, int]] = {}
        done = failed = 0
        for r in rows:
            by_state[r["state"]] = by_state.get(r["state"], 0) + r["n"]
            by_channel.setdefault(r["channel"], {})[r["state"]] = r["n"]
            done += r["done_recently"]
            failed += r["failed_recently"]
        return Stats(
            by_state=by_state,
            by_channel=by_channel,
            done_last_minute=done,
            failed_last_minute=failed,
            servers_running=workers["servers"],
            workers_total=workers["total"],
            workers_active=workers["active"],
            workers_idle=workers["idle"],
        )

    async def list_servers(self) -> list[ServerInfo]:
        """Every registered server, by name."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SERVER_COLUMNS} FROM queued_task_workers ORDER BY server_name"
            )
        return [_server(r) for r in rows]

    # -- events --------------------------------------------------------------------------

    async def subscribe(self, handler: EventHandler) -> Subscription:
        """Deliver every event to ``handler`` until the subscription is closed.

        With NOTIFY: through one LISTEN connection shared by this repository's subscribers
        (events of this process arrive through it too, exactly once). The subscription's
        ``healthy`` is False while that connection is down; after a reconnect a ``created``
        event naming the channels with enqueued tasks is delivered, as notifications may have
        been missed. Without NOTIFY: events of this object only, soon after each change.
        """
        if not self.use_notify:
            local = _LocalSubscription(self, handler, asyncio.get_running_loop())
            self._local.add(local)
            return local
        if self._listener_lock is None:
            self._listener_lock = asyncio.Lock()
        async with self._listener_lock:
            if self._listener is None:
                listener = Listener(
                    self.database_url,
                    self.notify_channel,
                    probe_interval=self._probe_interval,
                    probe_timeout=self._probe_timeout,
                )
                await listener.start()
                self._listener = listener
            subscription = ListenerSubscription(self._listener, handler, self._unsubscribed)
            self._subscriptions.add(subscription)
            return subscription

    async def _unsubscribed(self, subscription: ListenerSubscription) -> None:
        """The last subscriber gone, the LISTEN connection is released."""
        self._subscriptions.discard(subscription)
        assert self._listener_lock is not None
        async with self._listener_lock:
            listener = self._listener
            if listener is not None and listener.handler_count == 0:
                self._listener = None
                await listener.close()

    async def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber (other processes too, with NOTIFY)."""
        if not self.use_notify:
            self._emit_local_event(event)
            return
        payloads = encode_event(event)
        async with self._connection() as conn:
            await conn.execute(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                self.notify_channel,
                payloads,
            )

    def _emit_local(
        self,
        *,
        ready: Sequence[str] = (),
        control: Sequence[int] = (),
        ended: Sequence[int] = (),
    ) -> None:
        """Events of a write, to in-process subscribers when NOTIFY is off (with NOTIFY, the
        statement itself sent them)."""
        if self.use_notify or not self._local:
            return
        if ready:
            self._emit_local_event(Event("created", channels=tuple(sorted(ready))))
        if control:
            self._emit_local_event(Event("control", task_ids=tuple(sorted(control))))
        if ended:
            self._emit_local_event(Event("ended", task_ids=tuple(sorted(ended))))

    def _emit_local_event(self, event: Event) -> None:
        for subscription in list(self._local):
            subscription.schedule(event)


# -- helpers --------------------------------------------------------------------------------


async def _fetchrow(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record:
    """The one row of a statement run on its own (autocommit), run again if it lost a deadlock.

    Such a statement was rolled back whole, so running it again is safe; this keeps the
    follow-up statements of a batch (its contended rows, its cascade) from being dropped by
    a retry of the whole batch. Inside a transaction the error goes up to ``_write``, which
    runs the whole transaction again.
    """
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        try:
            row = await conn.fetchrow(sql, *args)
        except _RETRYABLE_ERRORS:
            if attempt == _WRITE_ATTEMPTS or conn.is_in_transaction():
                raise
            logger.info("statement lost a deadlock; running it again")
            continue
        assert row is not None
        return row
    raise AssertionError("unreachable")


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool ``reset`` of our own pool: nothing beyond asyncpg's rollback of an open transaction.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL; ...`` each time a
    connection goes back to the pool: one more round trip per statement, which measured
    2-3x the cost of a short query itself. This repository leaves no session state behind
    (no SET, no LISTEN on pooled connections, advisory locks are transaction-scoped), so
    there is nothing to reset.
    """


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 3`` or ``UPDATE 0``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _filter_sql(filter: TaskFilter) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or "") and its arguments for ``list_tasks``."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filter.states is not None:
        clauses.append(f"state = ANY({arg([TaskState(s).value for s in filter.states])}::text[])")
    if filter.name is not None:
        pattern = filter.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"name ILIKE {arg('%' + pattern + '%')}")
    if filter.channel is not None:
        clauses.append(f"channel = {arg(filter.channel)}")
    if filter.parent_task is not None:
        clauses.append(f"parent_task = {arg(filter.parent_task)}")
    if filter.enqueued_after is not None:
        clauses.append(f"date_enqueued >= {arg(_utc(filter.enqueued_after))}")
    if filter.enqueued_before is not None:
        clauses.append(f"date_enqueued < {arg(_utc(filter.enqueued_before))}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
