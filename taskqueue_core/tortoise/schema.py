"""Creating and migrating the taskqueue schema.

PostgreSQL databases are migrated with the aerich migrations shipped in ``aerich_migrations``;
SQLite databases (the embedded default) get the schema created from the models on open.
Both also get the claim index, which the ORM cannot declare (see ``models``).
"""

from __future__ import annotations

from typing import Any

from taskqueue_core.tortoise.models import APP_LABEL, MODELS_MODULE

__all__ = ["CLAIM_INDEX_SQL", "create_schema", "migrate", "tortoise_config"]

# The claim query orders by (-priority, date_scheduled, id) over enqueued rows only: a partial
# index on exactly those expressions lets it read the first N ready rows without sorting, and
# it stays small because finished tasks (the bulk of the table) are not in it.
CLAIM_INDEX_SQL = (
    'CREATE INDEX IF NOT EXISTS "queued_tasks_claim_idx" ON "queued_tasks" '
    '((-"priority"), "date_scheduled", "id") WHERE "state" = \'enqueued\''
)


def tortoise_config(database_url: str, *, connection_name: str = "taskqueue") -> dict[str, Any]:
    """A Tortoise config with the taskqueue app alone on ``database_url``."""
    url = database_url.replace("postgresql://", "postgres://", 1)
    return {
        "connections": {connection_name: url},
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "default_connection": connection_name,
                "migrations": None,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def create_schema(client: Any) -> None:
    """Create every taskqueue table and index that is missing, through a Tortoise client."""
    from tortoise.utils import get_schema_sql

    sql = get_schema_sql(client, safe=True)
    await client.execute_script(sql)
    await client.execute_script(CLAIM_INDEX_SQL)


async def migrate(database_url: str) -> list[str]:
    """Bring the database at ``database_url`` to the current schema; return what was applied.

    Idempotent: a second call applies nothing and returns [].
    """
    from tortoise.context import TortoiseContext

    async with TortoiseContext() as ctx:
        await ctx.init(config=tortoise_config(database_url))
        client = ctx.db("taskqueue")
        rows = await client.execute_query_dict(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'queued_tasks'"
            if database_url.split("://", 1)[0] != "sqlite"
            else "SELECT 1 FROM sqlite_master WHERE name = 'queued_tasks'"
        )
        if rows:
            return []
        await create_schema(client)
        return ["schema"]
