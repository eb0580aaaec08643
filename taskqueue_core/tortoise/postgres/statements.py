"""The SQL text of ``PostgresRepository`` (creation's is in ``inserts``), and the small
functions that build it.

Statements assembled from fragments (the cascade CTEs, the NOTIFY payloads) are built once,
at import. Parameters are positional (``$1``, ...) in the order the repository passes them.
The comment above each statement says why it is spelled the way it is; the ``xmin`` guards
they share are explained in the package docstring.
"""

from __future__ import annotations

from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED, WORKER_LOST

_TASK_COLUMNS = (
    "id, name, module_name, function_name, serialized_function, signature, state, "
    "args::text, kwargs::text, context::text, result::text, parent_task, pending_parents, "
    "channel, priority, retry_count, max_retries, timeout, date_enqueued, date_scheduled, "
    "date_started, date_done, date_failed, date_cancelled, date_stopped, date_ended, "
    "execution_time, claimed_by, exception_name, exception_message, exception_info"
)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _TASK_COLUMNS.split(","))


SELECT_TASKS = f"SELECT {_TASK_COLUMNS} FROM queued_tasks"

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
CLAIM_ANY_SQL = _CLAIM_SQL.format(channel_filter="", columns=_columns("t"))
CLAIM_CHANNELS_SQL = _CLAIM_SQL.format(
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
NEXT_DUE_ANY_SQL = _NEXT_DUE_SQL.format(channel_filter="")
NEXT_DUE_CHANNELS_SQL = _NEXT_DUE_SQL.format(channel_filter="AND channel = ANY($1::text[])")

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
# read (``xmin``: see the package docstring). Rows of ``doomed`` not in ``killed`` changed
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
NOTES_CTE = """
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


def notify_column(param: str) -> str:
    """A select-list item that sends every row of ``notes`` (in order) when ``param`` is set."""
    return (
        f"(SELECT count(pg_notify({param}, n.payload)) FROM "
        f"(SELECT payload FROM notes ORDER BY ord) AS n WHERE {param}::text IS NOT NULL) "
        "AS notified"
    )


RELEASE_CHUNK = 1000
"""Most children a done task releases in the statement that completes it (``COMPLETE_SQL``),
and the most a chunk of a bigger release holds (``RELEASE_SQL``, see ``releases``)."""

# Outcomes of a batch. ``pre`` is the snapshot's view of the rows this server still runs
# (with their xmin); ``upd`` applies each outcome to the row only if it is that very version.
# ``pre`` looks each outcome's row up by key (a LATERAL subquery with LIMIT 1 cannot be turned
# into a join, so it stays one primary key probe per outcome), and ``upd`` fetches those row
# versions again by their ``ctid`` (one TID scan, no index) and pairs them with ``pre`` on it.
# The original spelling, a join of ``pre`` with an index scan on ``id = ANY($2)``, is
# quadratic: the function scan, or the index's array keys, are redone for every row (300 ms
# for 1,000 outcomes); a bare ``ctid = o.tid`` join lets the planner hash a sequential scan
# of the table instead. With the TID list the table is never scanned, whatever the estimates.
#
# A task done releases its children in the same statement, unless it has more than
# ``RELEASE_CHUNK``: then ``upd`` stores its first child's id as its ``release_next``
# (``big``, one aggregate over the batch's edges) and the children are released by
# ``RELEASE_SQL``, a chunk per transaction, so that the first ones run while the others are
# being released. (A subquery per outcome instead of ``big`` made the generic plan look
# dearer than planning each batch anew, which then cost 1 ms a batch. Releasing the first
# chunk here too would need a join with ``upd`` in ``released``, whose row estimate then
# drops to one and turns that update into a quadratic nested loop.)
COMPLETE_SQL = (
    """
WITH RECURSIVE
o AS (
    SELECT * FROM unnest(
        $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::timestamptz[], $9::bool[], $10::float8[], $11::text[]
    ) AS o(id, state, result, error_name, error_message, error_info,
           retry_at, count_attempt, execution_time, context)
),
big AS (
    SELECT d.parent_id AS id, min(d.task_id) AS first
    FROM queued_task_dependencies AS d
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM o WHERE state = 'done'))
    GROUP BY d.parent_id
    HAVING count(*) > """
    + str(RELEASE_CHUNK)
    + """
),
pre AS (
    SELECT o.*, r.snap, r.tid,
           (o.state = 'failed' OR (o.state = 'enqueued' AND o.error_name IS NOT NULL))
               AS set_error,
           b.first AS cut
    FROM o CROSS JOIN LATERAL (
        SELECT t.xmin AS snap, t.ctid AS tid FROM queued_tasks AS t
        WHERE t.id = o.id AND (t.state = 'doing') IS TRUE AND t.claimed_by = $1
        LIMIT 1
    ) AS r
    LEFT JOIN big AS b ON b.id = o.id
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
            + CASE WHEN o.state = 'enqueued' AND COALESCE(o.count_attempt, true) THEN 1 ELSE 0 END,
        release_next = o.cut
    FROM pre AS o
    WHERE t.ctid = ANY(ARRAY(SELECT tid FROM pre))
      AND t.ctid = o.tid AND t.xmin = o.snap AND (t.state = 'doing') IS TRUE AND t.claimed_by = $1
    RETURNING t.id, t.state, t.channel, t.release_next
),
seeds AS (
    SELECT d.task_id AS id, u.id AS root, u.state AS kind
    FROM queued_task_dependencies AS d JOIN upd AS u ON u.id = d.parent_id
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM upd WHERE state IN ('failed', 'cancelled')))
),
"""
    + _CASCADE_CTES
    + """
releasers AS (
    -- A parent with more children than a chunk is left to ``releases``.
    SELECT id FROM upd WHERE state = 'done' AND release_next IS NULL
),
children AS (
    -- In id order: the released children's new row versions are then written in the order
    -- they are claimed, so a claim (and its completion) finds its batch on a few pages
    -- instead of one page per child (a 10,000-child fan-out drained 10-15 % faster).
    SELECT DISTINCT d.task_id AS id
    FROM queued_task_dependencies AS d
    WHERE d.parent_id = ANY(ARRAY(SELECT id FROM releasers))
    ORDER BY d.task_id
),
released AS (
    -- Each child counts its own edges to the parents released here (one probe of its few
    -- edges): no join with ``children``, whose row estimate can be far too low, and which
    -- the planner then rescans for every child (quadratic: 200 ms for 1,000 children).
    UPDATE queued_tasks AS c SET (pending_parents, state) = (
        SELECT GREATEST(c.pending_parents - count(*), 0),
               CASE WHEN c.pending_parents - count(*) <= 0 THEN 'enqueued' ELSE 'waiting' END
        FROM queued_task_dependencies AS d
        WHERE d.task_id = c.id AND (d.parent_id = ANY(ARRAY(SELECT id FROM releasers))) IS TRUE
    )
    WHERE c.id = ANY(ARRAY(SELECT id FROM children)) AND (c.state = 'waiting') IS TRUE
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
    + NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM upd) AS changed,
    ARRAY(SELECT id FROM pre EXCEPT SELECT id FROM upd) AS contended,
    ARRAY(SELECT id FROM ended) AS ended,
    ARRAY(SELECT channel FROM ready) AS ready,
    ARRAY(SELECT id FROM upd WHERE release_next IS NOT NULL) AS releasing,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + notify_column("$12")
)

# Follow-up of a cascade: end the given waiting tasks and their waiting descendants.
KILL_SQL = (
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
    + NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM killed) AS ended,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + notify_column("$4")
)

# Admin cancel ($2 = 'cancelled', with the cascade) and stop ($2 = 'stopped', none).
CONTROL_SQL = (
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
    + NOTES_CTE
    + """
SELECT
    ARRAY(SELECT id FROM pre EXCEPT SELECT id FROM upd) AS contended,
    ARRAY(SELECT id FROM control) AS control,
    ARRAY(SELECT id FROM ended) AS ended,
    """
    + _KILL_LEFT
    + """ AS kill_left,
    """
    + notify_column("$3")
)

# The reaper. Doing tasks of servers without a fresh heartbeat row that started before the
# limit: re-enqueued with one more attempt counted, or failed when none is left.
RESCUE_SQL = (
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
    + NOTES_CTE
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
    + notify_column("$2")
)

# Makes the existing parents of a creation batch depend-able and reads their states: the row
# lock orders this writer against anyone ending the parent, and the new row version (new xmin)
# makes a concurrent guarded statement that read the old version skip the parent and retry. A
# parent done whose children are still being released (``release_next`` set) reads as
# ``doing``: its new child waits for it, and a later chunk of the release, which reads the
# children from ``release_next`` on, releases it (a new child's id is above every existing one).
TOUCH_SQL = """
UPDATE queued_tasks AS p SET state = p.state
WHERE p.id = ANY($1::bigint[])
RETURNING p.id, CASE WHEN p.release_next IS NULL THEN p.state ELSE 'doing' END
"""

# retry_tasks, step by step in one transaction (an admin path: clarity over round trips).
RETRY_ROOTS_SQL = """
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
RETRY_LEVEL_SQL = f"""
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
RETRY_PARENTS_SQL = """
UPDATE queued_tasks AS p SET state = p.state
WHERE p.id IN (
    SELECT d.parent_id FROM queued_task_dependencies AS d WHERE d.task_id = ANY($1::bigint[])
)
"""
RETRY_SETTLE_SQL = (
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
    + NOTES_CTE
    + """
SELECT ARRAY(SELECT channel FROM ready) AS ready, """
    + notify_column("$2")
)

UPDATE_CONTEXTS_SQL = """
UPDATE queued_tasks AS t SET context = c.context::jsonb
FROM unnest($1::bigint[], $2::text[]) AS c(id, context)
WHERE t.id = c.id
"""

# ``$1``: a JSON array of [task_id, type, name, message, info, microseconds since the epoch]
# (``execution.log_args``); ``->>`` gives text, so info is JSON text inside the JSON. An
# interval times a number multiplies in float8: whole seconds and the microseconds left are
# each exact that way for any date, their product in microseconds is not. The document is
# read as jsonb: parsed once, its rows' fields are then looked up, where ``->>`` on a json
# element parses that element's text again for every field (measured: a quarter less server
# time for a batch of 1,000 lines).
APPEND_LOGS_SQL = """
INSERT INTO queued_task_logs (queued_task_id, type, name, message, info, date_created)
SELECT r.task_id, r.type, r.name, r.message, r.info::jsonb,
       COALESCE(
           timestamptz 'epoch' + (r.micros / 1000000) * interval '1 second'
               + (r.micros % 1000000) * interval '1 microsecond',
           now()
       )
FROM (
    SELECT (e->>0)::bigint, e->>1, e->>2, e->>3, e->>4, (e->>5)::bigint, ord
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(e, ord)
) AS r(task_id, type, name, message, info, micros, ord)
WHERE EXISTS (SELECT 1 FROM queued_tasks AS t WHERE t.id = r.task_id)
ORDER BY r.ord
"""

DELETE_PENDING_SQL = """
DELETE FROM queued_tasks WHERE state IN ('waiting', 'enqueued')
"""

# The pending tasks of one channel, and the waiting tasks of any channel below them (a task
# waiting on a deleted task could never start). ``UNION`` visits a fan-in child once. The
# DELETE checks the state again: a task claimed meanwhile is not deleted.
DELETE_PENDING_CHANNEL_SQL = """
WITH RECURSIVE doomed AS (
    SELECT id FROM queued_tasks
    WHERE state IN ('waiting', 'enqueued') AND channel = $1::text
    UNION
    SELECT d.task_id
    FROM doomed AS p
    JOIN queued_task_dependencies AS d ON d.parent_id = p.id
    JOIN queued_tasks AS c ON c.id = d.task_id AND c.state = 'waiting'
)
DELETE FROM queued_tasks
WHERE id IN (SELECT id FROM doomed) AND state IN ('waiting', 'enqueued')
"""

PRUNE_SQL = """
DELETE FROM queued_tasks
WHERE id IN (
    SELECT id FROM queued_tasks
    WHERE state IN ('done', 'failed', 'cancelled', 'stopped') AND date_ended < $1
    LIMIT $2
)
AND state IN ('done', 'failed', 'cancelled', 'stopped') AND date_ended < $1
"""

REGISTER_SQL = """
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

SERVER_COLUMNS = (
    "server_name, hostname, pid, max_workers, active_workers, idle_workers, is_running, "
    "last_heartbeat, started_at, version"
)

TREE_SQL = f"""
WITH RECURSIVE tree (id) AS (
    SELECT $1::bigint
    UNION
    SELECT d.task_id FROM tree JOIN queued_task_dependencies AS d ON d.parent_id = tree.id
)
SELECT {_TASK_COLUMNS} FROM queued_tasks WHERE id IN (SELECT id FROM tree) ORDER BY id
"""

STATS_SQL = """
SELECT channel, state, count(*)::int AS n,
       count(*) FILTER (WHERE date_done >= now() - interval '1 minute')::int AS done_recently,
       count(*) FILTER (WHERE date_failed >= now() - interval '1 minute')::int AS failed_recently
FROM queued_tasks
GROUP BY channel, state
"""

WORKER_STATS_SQL = """
SELECT count(*)::int AS servers,
       COALESCE(sum(max_workers), 0)::int AS total,
       COALESCE(sum(active_workers), 0)::int AS active,
       COALESCE(sum(idle_workers), 0)::int AS idle
FROM queued_task_workers WHERE is_running
"""


# One chunk of a release (``releases``): the next $2 children of task $1 from its
# ``release_next`` on. ``moved`` advances ``release_next`` to the first child beyond the chunk
# (NULL: the release is over) only on the row version read (``xmin``) with the
# ``release_next`` read, so that two releasers (a worker and the reaper) never both count an
# edge: the one that loses moves nothing and releases nothing. A new child locks the parent
# (``TOUCH_SQL``) and so changes its ``xmin``: a chunk whose snapshot missed the child's edge
# moves nothing either, and runs again with a snapshot that has it.
RELEASE_SQL = (
    """
WITH
p AS (
    SELECT t.release_next AS start, t.xmin AS snap FROM queued_tasks AS t
    WHERE t.id = $1 AND t.release_next IS NOT NULL
),
span AS (
    SELECT d.task_id FROM queued_task_dependencies AS d
    WHERE d.parent_id = $1 AND d.task_id >= (SELECT start FROM p)
    ORDER BY d.task_id
    LIMIT $2::int + 1
),
moved AS (
    UPDATE queued_tasks AS t SET release_next = (
        SELECT task_id FROM span ORDER BY task_id OFFSET $2::int LIMIT 1
    )
    FROM p
    WHERE t.id = $1 AND t.xmin = p.snap AND t.release_next = p.start
    RETURNING t.release_next AS next
),
released AS (
    UPDATE queued_tasks AS c SET
        pending_parents = GREATEST(c.pending_parents - 1, 0),
        state = CASE WHEN c.pending_parents <= 1 THEN 'enqueued' ELSE 'waiting' END
    WHERE c.id = ANY(ARRAY(
        SELECT s.task_id FROM span AS s, moved AS m
        WHERE m.next IS NULL OR s.task_id < m.next
    ))
      AND (c.state = 'waiting') IS TRUE
    RETURNING c.state, c.channel
),
ready AS (SELECT DISTINCT channel FROM released WHERE state = 'enqueued'),
control AS (SELECT NULL::bigint AS id WHERE false),
ended AS (SELECT NULL::bigint AS id WHERE false),
"""
    + NOTES_CTE
    + """
SELECT
    EXISTS (SELECT FROM p) AS found,
    EXISTS (SELECT FROM moved) AS moved,
    (SELECT next FROM moved) AS next,
    ARRAY(SELECT channel FROM ready) AS ready,
    """
    + notify_column("$3")
)

# Releases whose worker stopped before the last chunk: the tasks done before $1 whose
# ``release_next`` is still set, through the partial index ``queued_tasks_release_idx``.
RELEASES_LEFT_SQL = """
SELECT id FROM queued_tasks
WHERE release_next IS NOT NULL AND date_done < $1
ORDER BY id
LIMIT 100
"""
