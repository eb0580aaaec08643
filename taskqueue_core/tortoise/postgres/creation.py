"""Creation of tasks: a checked ``Batch`` (see ``batches``) written with the statement that fits.

``create`` is the work of ``PostgresRepository.create_tasks`` on one connection: a single
task without parents is ``CREATE_ONE_SQL``, a batch without parents ``CREATE_FREE_SQL``,
any other batch ``CREATE_SQL`` (after ``TOUCH_SQL`` has locked the existing parents, in one
transaction). ``columns_args`` and ``create_args`` are the arguments of those statements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import asyncpg

from taskqueue_core.exceptions import UnknownParent
from taskqueue_core.models import Event
from taskqueue_core.tortoise.listener import encode_event
from taskqueue_core.tortoise.postgres.batches import Batch, ids_of, plan_of, texts_of
from taskqueue_core.tortoise.postgres.events import emit_local
from taskqueue_core.tortoise.postgres.inserts import CREATE_FREE_SQL, CREATE_ONE_SQL, CREATE_SQL
from taskqueue_core.tortoise.postgres.statements import TOUCH_SQL

if TYPE_CHECKING:
    from taskqueue_core.tortoise.postgres.repository import PostgresRepository

_CREATED_PAYLOADS: dict[str, str] = {}
"""NOTIFY payloads of a task created in a channel, by channel (they repeat)."""


async def create(
    repo: PostgresRepository, conn: asyncpg.Connection, batch: Batch, *, own_transaction: bool
) -> list[int]:
    """Write ``batch`` on ``conn``; return its ids. ``own_transaction``: lock the existing
    parents and insert in a transaction of our own (else the caller's transaction holds)."""
    if batch.parents is None:
        # No parent at all: one statement, atomic on its own.
        if batch.count == 1:
            return [await create_one(repo, conn, batch)]
        return await create_free(repo, conn, batch)
    existing = sorted({parent for ids, _ in batch.parents for parent in ids})
    if not existing:
        row = await conn.fetchrow(CREATE_SQL, *create_args(batch, {}, repo._notify))
    else:
        transaction = conn.transaction() if own_transaction else contextlib.nullcontext()
        async with transaction:
            rows = await conn.fetch(TOUCH_SQL, existing)
            states = {r[0]: r[1] for r in rows}
            for position, (parent_ids, _) in enumerate(batch.parents):
                for parent_id in parent_ids:
                    if parent_id not in states:
                        raise UnknownParent(
                            f"task {position} ({batch.all_names[position]!r}): "
                            f"parent task {parent_id} does not exist"
                        )
            row = await conn.fetchrow(CREATE_SQL, *create_args(batch, states, repo._notify))
    assert row is not None
    emit_local(repo, ready=row["ready"], ended=[int(i) for i in row["ended"]])
    return ids_of(row["ids"])


async def create_one(repo: PostgresRepository, conn: asyncpg.Connection, batch: Batch) -> int:
    """Insert the one task of ``batch`` (it has no parent) with ``CREATE_ONE_SQL``."""
    [function] = batch.functions
    [channel] = batch.channels
    notify = repo._notify
    payload = None
    if notify is not None:
        payload = _CREATED_PAYLOADS.get(channel)
        if payload is None:
            [payload] = encode_event(Event("created", channels=(channel,)))
            if len(_CREATED_PAYLOADS) < 1024:
                _CREATED_PAYLOADS[channel] = payload
    row = await conn.fetchrow(
        CREATE_ONE_SQL,
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
    emit_local(repo, ready=[channel])
    task_id: int = row[0]
    return task_id


async def create_free(
    repo: PostgresRepository, conn: asyncpg.Connection, batch: Batch
) -> list[int]:
    """Insert ``batch`` (no task has a parent) with ``CREATE_FREE_SQL``."""
    channels = sorted(set(batch.channels))
    notify = repo._notify
    payloads: list[str] = []
    if notify is not None:
        payloads = encode_event(Event("created", channels=tuple(channels)))
    row = await conn.fetchrow(CREATE_FREE_SQL, *columns_args(batch), notify, payloads)
    assert row is not None
    emit_local(repo, ready=channels)
    return ids_of(row[0])


async def prepare_free(conn: asyncpg.Connection) -> None:
    """Run ``CREATE_FREE_SQL`` for no task on ``conn``, so that the driver has it prepared.

    A write whose statement is prepared sends it in its first step, with no round trip
    before: the write of a full batch that ``add_task`` starts in its own call
    (``CreationWriter``) then reaches the server before the burst of calls ends. Writes
    nothing. Raises the driver's errors (a database in read-only mode refuses it).
    """
    # $1 the count, $2 to $11 the task columns' arrays, $12 to $17 the JSON columns' documents
    # and constants, $18 the channel to NOTIFY on (none), $19 the payloads.
    await conn.fetchrow(CREATE_FREE_SQL, 0, *([[]] * 10), *([None] * 6), None, [])


def columns_args(batch: Batch) -> list[Any]:
    """The arguments ``$1`` to ``$17`` of the creation statements: the tasks' columns."""
    functions = batch.functions
    return [
        batch.count,
        batch.names,
        [f.module_name for f in functions],
        [f.function_name for f in functions],
        [None if f.serialized_function is None else f.serialized_function.hex() for f in functions],
        [f.signature for f in functions],
        batch.channels,
        texts_of(batch.priorities),
        texts_of(batch.max_retries),
        batch.timeouts,
        batch.scheduled,
        *batch.args,
        *batch.kwargs,
        *batch.context,
    ]


def create_args(batch: Batch, states: Mapping[int, str], notify: str | None) -> list[Any]:
    """The arguments of ``CREATE_SQL`` for ``batch``, given its existing parents' states and
    the channel to NOTIFY on (None: no NOTIFY)."""
    plan = plan_of(batch, states)
    return [
        *columns_args(batch),
        plan.states,
        texts_of(plan.pending),
        texts_of(plan.parent_id),
        texts_of(plan.parent_pos),
        texts_of(plan.cause_id),
        texts_of(plan.cause_pos),
        texts_of(plan.edge_child),
        texts_of(plan.edge_parent_id),
        texts_of(plan.edge_parent_pos),
        notify,
    ]
