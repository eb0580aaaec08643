"""The SQL text of task creation in ``PostgresRepository``: the batch statements and the
single-task INSERT (``creation`` runs them, ``batches`` lays out their arguments).

Built once, at import, from the fragments below and the NOTIFY fragments of ``statements``.
Parameters are positional (``$1``, ...) in the order ``creation`` passes them.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskqueue_core.models import PARENT_CANCELLED, PARENT_FAILED
from taskqueue_core.tortoise.postgres.statements import NOTES_CTE, notify_column

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
# Two statements share these parameters: ``CREATE_FREE_SQL`` for a batch in which no task
# has a parent (every task starts enqueued: no edges, no states to compute, and the NOTIFY
# payloads come from the caller), and ``CREATE_SQL`` for any batch.
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
# The columns of ``CREATE_SQL`` only: each task's state and parents (see ``plan_of``).
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


CREATE_FREE_SQL = f"""
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

CREATE_SQL = f"""
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
{NOTES_CTE}
SELECT
    (SELECT array_to_string(a, ',') FROM ids) AS ids,
    ARRAY(SELECT id::text FROM ended) AS ended,
    ARRAY(SELECT channel::text FROM ready) AS ready,
    {notify_column("$27")}
"""

# One task without parents, the most common creation (``enqueue`` of a single task): a plain
# INSERT of scalars, no arrays to decode, the NOTIFY payload built by the caller.
CREATE_ONE_SQL = """
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
