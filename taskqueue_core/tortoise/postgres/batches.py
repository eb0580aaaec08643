"""A creation batch: the tasks of one ``create_tasks`` call, checked and laid out by column.

``batch_of`` checks every task and returns its ``Batch``, or raises ``InvalidTaskError`` or
``ArgumentNotSerializable`` naming the first task at fault, before anything is written;
``plan_of`` gives each task its starting state and its dependency edges from the states of
its existing parents. Together they are the arguments of ``inserts.CREATE_SQL`` and
``inserts.CREATE_FREE_SQL``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from taskqueue_core.exceptions import InvalidTaskError
from taskqueue_core.limits import (
    CHANNEL_MAX,
    INT32_MAX,
    JSON_ENCODER,
    NAME_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    SIGNATURE_MAX,
    check_new_task,
    json_has_nul,
    json_text,
    task_parents,
    utc,
)
from taskqueue_core.models import FunctionRef, NewTask, TaskState

T = TypeVar("T")

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
        parent_ids, batch_parents = check_new_task(new, position, what)
        prepared.append(
            _Prepared(
                new=new,
                parent_ids=parent_ids,
                batch_parents=batch_parents,
                args=json_text(list(new.args), f"{what}: args"),
                kwargs=json_text(new.kwargs, f"{what}: kwargs"),
                context=json_text(new.context, f"{what}: context"),
                timeout=_float_text(new.timeout),
                scheduled=_time_text(new.date_scheduled),
            )
        )
    return prepared


@dataclass(slots=True)
class Batch:
    """The tasks of one ``create_tasks`` call, checked, laid out column by column.

    A column holds one value per task, or a single value when every task has the same one
    (see ``CREATE_SQL``). A JSON column is ``(document, constant)``: a JSON array with one
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


def ids_of(text: str) -> list[int]:
    """The ids of a creation statement, sent as text (``1,2,3``).

    See ``inserts._TASK_COLUMNS_PARAMS``."""
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
    return None if value is None else utc(value).isoformat()


def texts_of(values: Sequence[int | None]) -> list[str | None]:
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


def batch_of(tasks: Sequence[NewTask]) -> Batch:
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


def _batch_of_one(new: NewTask) -> Batch | None:
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
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
        or type(max_retries) is not int
        or not 0 <= max_retries <= INT32_MAX
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
            parents = [task_parents(new, 0, "")]
        except InvalidTaskError:
            return None
    try:
        texts = (
            JSON_ENCODER.encode(args) if args else "[]",
            JSON_ENCODER.encode(kwargs) if kwargs else "{}",
            JSON_ENCODER.encode(context) if context else "{}",
        )
    except (TypeError, ValueError, RecursionError):
        return None
    if any(json_has_nul(text) for text in texts):
        return None
    timeout_text = _float_text(timeout)
    if timeout is not None and timeout_text is None:
        return None
    # One task: each JSON column is its constant.
    return Batch(
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


def _batch_by_column(tasks: Sequence[NewTask]) -> Batch | None:
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
        or min(priority_column) < PRIORITY_MIN
        or max(priority_column) > PRIORITY_MAX
        or min(retries_column) < 0
        or max(retries_column) > INT32_MAX
        or not all(map(_function_fits, function_column))
    ):
        return None
    parents: list[tuple[list[int], list[int]]] | None = None
    if any([t.parent_ids for t in tasks]) or any([t.batch_parents for t in tasks]):
        try:
            parents = [task_parents(new, position, "") for position, new in enumerate(tasks)]
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
    if any(document is not None and json_has_nul(document) for document, _ in json_columns):
        return None
    timeout_values = _one_or_each(timeouts)
    timeout_column = [_float_text(timeout) for timeout in timeout_values]
    if timeout_column.count(None) != timeout_values.count(None):
        return None  # a timeout too large for a float (_prepare names it)
    scheduled_column: list[str | None] = [None]
    if scheduled.count(None) != len(scheduled):
        scheduled_column = _one_or_each([_time_text(when) for when in scheduled])
    return Batch(
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
    """True when the columns of ``ref`` hold it (text of the column sizes, or NULL) and it is
    an import path or a blob."""
    if type(ref) is not FunctionRef:
        return False
    module, name, signature = ref.module_name, ref.function_name, ref.signature
    return (
        (module is None or (type(module) is str and len(module) <= NAME_MAX))
        and (name is None or (type(name) is str and len(name) <= NAME_MAX))
        and (signature is None or (type(signature) is str and len(signature) <= SIGNATURE_MAX))
        # Exactly one of an import path and a blob (``check_columns`` names which is wrong).
        and (module is not None and name is not None) != (ref.serialized_function is not None)
    )


def _json_column(values: Sequence[Any], empty: str) -> tuple[str | None, str | None]:
    """A JSON column as ``(document, None)``, or ``(None, empty)`` when every value is empty."""
    if not any(values):
        return None, empty
    return JSON_ENCODER.encode(values), None


def _batch_by_task(prepared: list[_Prepared]) -> Batch:
    """The batch of tasks ``_prepare`` checked one by one (it raised if one was at fault)."""
    news = [item.new for item in prepared]
    parents = [(item.parent_ids, item.batch_parents) for item in prepared]
    return Batch(
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


def plan_of(batch: Batch, parent_states: Mapping[int, str]) -> _Plan:
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
