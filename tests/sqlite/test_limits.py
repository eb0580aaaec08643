"""The shared column limits (``taskqueue_core.limits``) at their edges on SQLite, which
would itself store any value: it refuses what the PostgreSQL columns cannot hold."""

from __future__ import annotations

import pytest

from taskqueue_core.exceptions import InvalidTaskError
from taskqueue_core.limits import INT32_MAX, PRIORITY_MAX, PRIORITY_MIN
from taskqueue_core.tortoise.sqlite import SqliteRepository
from tests.sqlite.helpers import new


async def test_priority_range_is_the_shared_one(repo: SqliteRepository) -> None:
    """The lowest ``integer``, -2**31, is refused: the claim index orders by -priority,
    which PostgreSQL cannot hold for it."""
    ids = await repo.create_tasks(
        [new("low", priority=PRIORITY_MIN), new("high", priority=PRIORITY_MAX)]
    )
    tasks = await repo.get_tasks(ids)
    assert [t.priority for t in tasks] == [PRIORITY_MIN, PRIORITY_MAX]
    with pytest.raises(InvalidTaskError, match=r"task 1 \('below'\): priority is out of range"):
        await repo.create_tasks([new("fine"), new("below", priority=PRIORITY_MIN - 1)])
    assert (await repo.list_tasks()).total == 2


async def test_max_retries_takes_the_whole_positive_range(repo: SqliteRepository) -> None:
    (task_id,) = await repo.create_tasks([new("many", max_retries=INT32_MAX)])
    assert (await repo.get_tasks([task_id]))[0].max_retries == INT32_MAX
    with pytest.raises(InvalidTaskError, match="max_retries is out of range"):
        await repo.create_tasks([new("too many", max_retries=INT32_MAX + 1)])
