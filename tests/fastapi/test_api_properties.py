"""Property tests of the admin API against its own OpenAPI schema.

Every operation, the mutating ones included, is called with requests generated from the
schema: requests it allows and requests it refuses (wrong types, out-of-range numbers, unknown
parameters, missing bodies, other methods...). Whatever the request:

- the answer is a 2xx or a 4xx, never a 5xx;
- a 4xx carries a JSON ``detail`` that says what is wrong;
- status code, content type, headers and body are those the schema documents, a request the
  schema allows is not refused, and a request it refuses is not accepted.

The application runs in-process (schemathesis' ASGI transport, no server) with its lifespan,
an embedded worker pool and a fresh PostgreSQL database per operation, on which tasks in every
state exist before the first request. Generated ids are often those of these tasks, so that
reads find them and actions change them, rather than answering 404 to random ids.

Generation is deterministic (fixed seed, derandomized Hypothesis, no example database) and
bounded by ``EXAMPLES``, so that a run is repeatable and takes seconds.

Not covered here: the access dependency (the router is public; see test_router_access.py) and
sequences of calls (each request is judged on its own, against the state earlier ones left).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckContext
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from taskqueue_core import TaskQueue
from taskqueue_fastapi import get_admin_router, taskqueue_lifespan
from taskqueue_fastapi.schemas import MAX_TASK_ID
from tests.conftest import create_database, database_url, drop_database
from tests.fastapi import tasks
from tests.fastapi.conftest import make_config

pytestmark = pytest.mark.postgres

EXAMPLES = 50
"""Generated requests per operation and generation phase (each operation also gets the
schema's examples and the boundary cases of its coverage phase)."""

WAIT = 15.0
"""Bound on each wait for the seeded tasks to reach their states."""

SEEDED: list[int] = []
"""Ids of the tasks the running app was seeded with (filled by its lifespan, before any
request is generated)."""

CHANNELS = ("busy", "idle")
"""The seeded tasks' channels; ``busy`` is the only one the embedded pool claims from."""

ALL_STATES = {"waiting", "enqueued", "doing", "done", "failed", "cancelled", "stopped"}


async def seed(queue: TaskQueue) -> list[int]:
    """Create tasks in every state; return their ids, pending and running ones first.

    Tasks on ``busy`` are run by the embedded pool: they end done or failed, and one runs until
    it is interrupted. Tasks on ``idle`` stay pending, or are cancelled and stopped here.
    """
    ran = [
        await queue.enqueue(tasks.add, 1, 2, channel="busy", name="sum"),
        await queue.enqueue(tasks.write_logs, 3, channel="busy"),
        await queue.enqueue(tasks.report_progress, 40.0, channel="busy"),
        await queue.enqueue(tasks.greet, "Ada", greeting="¡hola", channel="busy"),
        await queue.enqueue(tasks.fail, "boom", channel="busy"),
    ]
    key = f"properties-{id(queue)}"
    running = await queue.enqueue(tasks.wait_forever, key, channel="busy", name="forever")
    parent = await queue.enqueue(tasks.greet, "Grace", channel="idle", priority=5)
    pending = [
        parent,
        await queue.enqueue(tasks.add, 2, 2, channel="idle", parent=parent, name="child"),
        await queue.enqueue(tasks.add, 3, 3, channel="idle", delay=3600.0),
    ]
    cancelled = await queue.enqueue(tasks.add, 4, 4, channel="idle")
    stopped = await queue.enqueue(tasks.add, 5, 5, channel="idle")
    await queue.cancel([await cancelled.get_task_id()])
    await queue.stop([await stopped.get_task_id()])

    await asyncio.wait_for(tasks.started(key).wait(), WAIT)
    await asyncio.gather(*(ref.wait(WAIT) for ref in ran), return_exceptions=True)
    # Tasks the actions can change first: generation favours the first ones.
    ids = [await ref.get_task_id() for ref in (*pending, running, cancelled, stopped, *ran)]
    states = await queue.repository.get_states(ids)
    assert {state.value for state in states.values()} == ALL_STATES, states
    return ids


def build_app(url: str) -> FastAPI:
    """A public admin router under ``/admin``; the lifespan opens the queue on ``url`` with an
    embedded pool and seeds it (ids in ``SEEDED``)."""
    queue_lifespan = taskqueue_lifespan(make_config(url, shutdown_grace=0.2), channels=["busy"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with queue_lifespan(app) as state:
            SEEDED[:] = await seed(state["taskqueue"])
            yield state

    app = FastAPI(lifespan=lifespan)
    # Access control is the host's dependency, tested elsewhere; here every request reaches
    # the API itself.
    app.include_router(get_admin_router(public=True), prefix="/admin")
    return app


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240611,
        "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True},
        # Each operation is tested on its own; sequences of calls are not generated.
        "phases": {"stateful": {"enabled": False}},
    }
)

# The schema is read from an app that is never started: the OpenAPI document does not depend
# on the database. Each test runs an app of its own with the same routes.
schema = schemathesis.openapi.from_dict(
    build_app("postgres://unused/unused").openapi(), config=CONFIG
)


def seeded_ids() -> st.SearchStrategy[list[int]]:
    """One or two ids of seeded tasks (built when a case is drawn: the app runs by then)."""
    return st.lists(st.sampled_from(tuple(SEEDED)), min_size=1, max_size=2)


def aim(case: schemathesis.Case, ids: list[int]) -> schemathesis.Case:
    """``case`` about the seeded tasks ``ids`` instead of its generated ones, where it names
    tasks (changed in place). Only requests the schema allows are aimed, and they stay
    allowed: schemathesis keeps judging them as such."""
    if "task_id" in case.path_parameters:
        case.path_parameters["task_id"] = ids[0]
    if "parent" in case.query:
        case.query["parent"] = ids[0]
    if isinstance(case.body, dict):
        if "ids" in case.body:
            case.body["ids"] = ids
        if "channel" in case.body:
            case.body["channel"] = CHANNELS[ids[0] % len(CHANNELS)]
    return case


def is_positive(case: schemathesis.Case) -> bool:
    """True for a request generated as one the schema allows."""
    return case.meta is not None and case.meta.generation.mode.is_positive


@schema.hook
def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> Any:
    """Two thirds of the allowed requests that name tasks name seeded ones. (Refused requests
    are left as generated: schemathesis judges them by what it generated.)"""
    if not is_positive(case):
        return st.just(case)
    return st.one_of(st.none(), seeded_ids(), seeded_ids()).map(
        lambda ids: case if ids is None else aim(case, ids)
    )


def error_says_what_is_wrong(
    ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A 4xx is JSON whose ``detail`` names the problem: a message, FastAPI's list of
    located validation errors, or (409) the refused tasks with a message."""
    if not 400 <= response.status_code < 500:
        return
    try:
        detail = response.json()["detail"]
    except (ValueError, TypeError, KeyError) as error:
        raise AssertionError(f"a {response.status_code} without a JSON detail") from error
    if isinstance(detail, str):
        assert detail.strip(), "empty detail"
    elif isinstance(detail, list):
        assert detail, "empty list of errors"
        for item in detail:
            assert item["msg"] and item["loc"], item
    else:
        assert response.status_code == 409, detail
        assert detail["message"] and detail["refused"], detail


# -- requests the schema cannot judge ----------------------------------------------------------
# For these, schemathesis' verdict on whether the request is allowed is wrong, so its
# acceptance and rejection checks are left out and the test judges the answer itself.


def inverted_time_range(case: schemathesis.Case) -> bool:
    """The listing's range does not end after it starts: refused (422), which JSON Schema
    cannot say (it has no comparison between two parameters)."""
    query = case.query if isinstance(case.query, dict) else {}
    try:
        start = datetime.fromisoformat(str(query["enqueued_after"]))
        end = datetime.fromisoformat(str(query["enqueued_before"]))
        return bool(start >= end)
    except (KeyError, ValueError, TypeError):
        return False


def body_ids(case: schemathesis.Case) -> list[Any]:
    """The ``ids`` of an action's body, if it has a list of them."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("ids"), list):
        return list(body["ids"])
    return []


def ids_written_as_floats(case: schemathesis.Case) -> bool:
    """An id written ``12.0``: refused (the API takes integers written as integers), while
    JSON Schema counts 12.0 as an integer."""
    return any(isinstance(i, float) and i.is_integer() for i in body_ids(case))


def ids_near_the_bound(case: schemathesis.Case) -> bool:
    """An id within a few thousand of 2**63. The schema bounds ids with
    ``exclusiveMaximum: 2**63``, a float in the OpenAPI document (FastAPI writes nested bounds
    so), and a validator comparing in doubles cannot tell these ids from 2**63."""
    ints = [i for i in body_ids(case) if isinstance(i, int) and not isinstance(i, bool)]
    return any(abs(i - 2**63) <= 4096 for i in ints)


def judge_exactly(case: schemathesis.Case, response: schemathesis.Response) -> None:
    """The answer to a request the schema cannot judge: never a success when the request
    breaks a rule; a 422 naming it when the request breaks no other."""
    refused = []
    if inverted_time_range(case):
        refused.append("enqueued_after must be earlier than enqueued_before")
    if ids_written_as_floats(case):
        refused.append("Input should be a valid integer")
    if any(isinstance(i, int) and i > MAX_TASK_ID for i in body_ids(case)):
        refused.append("task ids must be positive 64-bit integers")
    if refused:
        assert response.status_code >= 400, f"accepted although {refused}"
    if is_positive(case) and case.method == case.operation.method.upper():
        if refused:
            assert response.status_code == 422, response.text
            # Pydantic stops at the first rule an item breaks: one reason at least is named.
            assert any(reason in response.text for reason in refused), response.text
        elif ids_near_the_bound(case):
            assert response.status_code == 404, response.text  # valid ids of no task


@pytest.fixture
def admin_app(pg_template: str) -> Iterator[FastAPI]:
    """The admin app on a fresh database, running and seeded; stopped after the test."""
    name = asyncio.run(create_database(template=pg_template))
    try:
        app = build_app(database_url(name))
        with asgi.get_client(app) as client:  # starts the lifespan, which seeds
            assert client.get("/openapi.json").status_code == 200
        yield app
        asgi.shutdown_lifespans()
    finally:
        asyncio.run(drop_database(name))


@schema.parametrize()
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=EXAMPLES,
    # The app is function-scoped on purpose (one per operation), and a request costs what
    # PostgreSQL costs.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_admin_api_conforms_to_its_schema(case: schemathesis.Case, admin_app: FastAPI) -> None:
    unjudgeable = inverted_time_range(case) or ids_written_as_floats(case)
    unjudgeable = unjudgeable or ids_near_the_bound(case)
    excluded = [positive_data_acceptance, negative_data_rejection] if unjudgeable else []
    response = case.call_and_validate(
        app=admin_app, additional_checks=[error_says_what_is_wrong], excluded_checks=excluded
    )
    status = response.status_code
    assert 200 <= status < 300 or 400 <= status < 500, status
    if unjudgeable:
        judge_exactly(case, response)

    if inverted_time_range(case) and is_positive(case) and case.method == "GET":
        # The listing's boundary cases all come with one time for both ends, so they would
        # never get past the range check: send each again without the end of the range.
        query = {k: v for k, v in case.query.items() if k != "enqueued_before"}
        again = case.derive(query=query).call_and_validate(
            app=admin_app, additional_checks=[error_says_what_is_wrong]
        )
        assert again.status_code == 200, again.text
