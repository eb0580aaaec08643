"""Creating and migrating the taskqueue schema.

PostgreSQL databases are migrated with the aerich migrations shipped in the
``aerich_migrations`` package (``aerich_migrations/taskqueue/<n>_<date>_<name>.py``), found
through the installed package, so ``migrate`` works from a wheel as well as from a checkout.
SQLite databases (the embedded default) get the schema created from the models instead.
Both also get the two partial indexes the ORM cannot declare (see ``models``): the claim
index and the ``parent_task`` index.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from taskqueue_core.exceptions import ConfigError, RepositoryError
from taskqueue_core.tortoise.models import APP_LABEL, MODELS_MODULE

__all__ = [
    "CLAIM_INDEX_SQL",
    "MIGRATION_LOCK_KEY",
    "PARENT_INDEX_SQL",
    "POSTGRES_CLAIM_INDEX_SQL",
    "create_schema",
    "index_statements",
    "migrate",
    "migration_config",
    "migrations_location",
    "tortoise_config",
]

# The claim query orders by (-priority, date_scheduled, id) over enqueued rows only: a partial
# index on exactly those expressions lets it read the first N ready rows without sorting, and
# it stays small because finished tasks (the bulk of the table) are not in it. This portable
# form is the one ``create_schema`` gives SQLite.
CLAIM_INDEX_SQL = (
    'CREATE INDEX IF NOT EXISTS "queued_tasks_claim_idx" ON "queued_tasks" '
    '((-"priority"), "date_scheduled", "id") WHERE "state" = \'enqueued\''
)

# The same index as PostgreSQL creates it (in the initial migration). ``(...) IS TRUE`` says
# the same as ``state = 'enqueued'`` (state is NOT NULL) but no btree on ``state`` can serve
# it, so the claim query, which spells its condition the same way, can only be answered by
# this index, already in claim order. With the plain form, PostgreSQL may prefer the
# ``state`` index and sort every enqueued row when its statistics say they are few; a plan
# cached at such a moment stays in use while a burst of new tasks arrives, sorting them all
# on every claim until the next ANALYZE.
POSTGRES_CLAIM_INDEX_SQL = (
    'CREATE INDEX IF NOT EXISTS "queued_tasks_claim_idx" ON "queued_tasks" '
    '((-"priority"), "date_scheduled", "id") WHERE ("state" = \'enqueued\') IS TRUE'
)

# Children are looked up by ``parent_task = x`` (and the foreign key's ON DELETE SET NULL does
# the same), which implies a non-null value: the index leaves out the tasks without a parent,
# most of them, so that their row versions (created, claimed, ended) add no entry to it.
PARENT_INDEX_SQL = (
    'CREATE INDEX IF NOT EXISTS "queued_tasks_parent_idx" ON "queued_tasks" ("parent_task") '
    'WHERE "parent_task" IS NOT NULL'
)

# The full index of ``parent_task`` that schemas created before ``PARENT_INDEX_SQL`` have.
_FULL_PARENT_INDEX_SQL = 'DROP INDEX IF EXISTS "idx_queued_task_parent__75ab0b"'


def index_statements(*, postgres: bool) -> list[str]:
    """The statements that give an existing schema the indexes the ORM cannot declare (and
    remove the full ``parent_task`` index they replace); each is idempotent."""
    claim = POSTGRES_CLAIM_INDEX_SQL if postgres else CLAIM_INDEX_SQL
    return [claim, PARENT_INDEX_SQL, _FULL_PARENT_INDEX_SQL]


MIGRATION_LOCK_KEY = 0x7471_6D69_6772_6174
"""Session advisory lock held while migrating, so that two processes never migrate at once."""

_POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "asyncpg"})

# aerich keeps its state in class attributes of ``aerich.migrate.Migrate``: two migrations in
# one process must not interleave. One lock per event loop (a lock belongs to one loop).
_migrate_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def tortoise_config(
    database_url: str,
    *,
    connection_name: str = "taskqueue",
    pool_options: Mapping[str, Any] | None = None,
    with_models: bool = True,
) -> dict[str, Any]:
    """A Tortoise config with the taskqueue app alone on ``database_url``.

    ``pool_options``: extra keyword arguments for the driver's pool (for asyncpg, those of
    ``asyncpg.create_pool``, e.g. ``reset``); the connection is then given as a dict rather
    than a URL so that they can be passed. ``with_models=False`` gives the app no models: a
    connection pool only. Registering models binds the model classes (shared by every
    Tortoise setup of the process) to this config's connection, which would break a host
    application that uses them through its own config; the repositories need no models.
    """
    url = database_url.replace("postgresql://", "postgres://", 1)
    connection: str | dict[str, Any] = url
    if pool_options:
        from tortoise.backends.base.config_generator import expand_db_url

        expanded = expand_db_url(url)
        expanded["credentials"].update(pool_options)
        connection = expanded
    return {
        "connections": {connection_name: connection},
        "apps": {
            APP_LABEL: {
                # Tortoise wants a module; this one defines no models.
                "models": [MODELS_MODULE if with_models else __name__],
                "default_connection": connection_name,
                "migrations": None,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def migration_config(database_url: str, *, with_models: bool = True) -> dict[str, Any]:
    """``tortoise_config`` plus aerich's own model (its ``aerich`` table records what ran).

    The migrations were generated from exactly this app, so a diff of the models against the
    last migration's stored state must use it with the models. Applying migrations needs
    only aerich's model (every migration file carries the models' state): ``migrate`` uses
    ``with_models=False`` so as not to rebind taskqueue's model classes (see
    ``tortoise_config``).
    """
    config = tortoise_config(database_url)
    config["apps"][APP_LABEL]["models"] = (
        [MODELS_MODULE, "aerich.models"] if with_models else ["aerich.models"]
    )
    return config


def migrations_location() -> Path:
    """The directory aerich is given as ``location``: the installed ``aerich_migrations``.

    aerich looks for the app's migrations in ``<location>/taskqueue``.
    """
    import aerich_migrations

    # ``__path__`` rather than ``__file__``: an editable install may expose the package as a
    # namespace package (no ``__file__``), whose first path entry is the real directory.
    for entry in aerich_migrations.__path__:
        location = Path(entry)
        if (location / APP_LABEL).is_dir():
            return location.resolve()
    searched = list(aerich_migrations.__path__)
    raise RepositoryError(f"the aerich migrations of {APP_LABEL!r} are missing from {searched}")


async def create_schema(client: Any) -> None:
    """Create every taskqueue table and index that is missing, through a Tortoise client."""
    from tortoise.utils import get_schema_sql

    sql = get_schema_sql(client, safe=True)
    await client.execute_script(sql)
    postgres = getattr(client.schema_generator, "DIALECT", "") == "postgres"
    await client.execute_script(";\n".join(index_statements(postgres=postgres)))


async def migrate(database_url: str) -> list[str]:
    """Bring the database at ``database_url`` to the current schema; return what was applied.

    PostgreSQL: applies the aerich migrations not yet recorded in the ``aerich`` table and
    returns their file names (oldest first). SQLite: creates the missing tables and returns
    ``["schema"]`` when it created them. Idempotent: a second call applies nothing and
    returns []. Raises ``ConfigError`` for another scheme, and ``RepositoryError`` when the
    database cannot be reached or a migration fails (nothing of that migration is kept).
    """
    scheme = database_url.split("://", 1)[0]
    if scheme == "sqlite":
        return await _create_embedded(database_url)
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigError(
            f"cannot migrate {_redacted(database_url)!r}: expected postgres:// or sqlite://"
        )
    try:
        return await _migrate_postgres(database_url)
    except RepositoryError:
        raise
    except Exception as exc:
        raise RepositoryError(f"migrating {_redacted(database_url)} failed: {exc}") from exc


async def _create_embedded(database_url: str) -> list[str]:
    from tortoise.context import TortoiseContext

    ctx = TortoiseContext()
    with ctx:
        try:
            await ctx.init(config=tortoise_config(database_url))
            client = ctx.db("taskqueue")
            rows = await client.execute_query_dict(
                "SELECT 1 FROM sqlite_master WHERE name = 'queued_tasks'"
            )
            if rows:
                return []
            await create_schema(client)
            return ["schema"]
        finally:
            await ctx.close_connections()


async def _migrate_postgres(database_url: str) -> list[str]:
    import asyncpg
    from aerich import Command
    from tortoise.context import TortoiseContext

    from taskqueue_core.tortoise.listener import connect_kwargs

    # A second process migrating the same database waits here, then finds nothing to do.
    guard = await asyncpg.connect(**connect_kwargs(database_url))
    try:
        await guard.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        lock = _migrate_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            # aerich drives the global ``Tortoise``; a context of our own, made current only
            # here, keeps it away from whatever Tortoise setup the host process has.
            ctx = TortoiseContext()
            with ctx, _aerich_model_borrowed():
                try:
                    command = Command(
                        tortoise_config=migration_config(database_url, with_models=False),
                        app=APP_LABEL,
                        location=str(migrations_location()),
                    )
                    await command.init()
                    applied: list[str] = await command.upgrade(run_in_transaction=True)
                    return applied
                finally:
                    await ctx.close_connections()
    finally:
        await guard.close()


@contextlib.contextmanager
def _aerich_model_borrowed() -> Iterator[None]:
    """aerich's ``Aerich`` model free to join our app for a migration, and given back after.

    A Tortoise model belongs to one app of the process: once a host application's setup has
    taken ``aerich.models`` into an app of its own (on its own connection), Tortoise leaves
    it out of ours ("has no models"), and aerich would then look for its table through the
    host's connection alias, which our context does not have. The model's app and connection
    are put back afterwards, so the host's setup keeps working."""
    from aerich.models import Aerich

    meta = Aerich._meta
    saved = (meta.app, meta.default_connection)
    meta.app = None
    try:
        yield
    finally:
        meta.app, meta.default_connection = saved


def _redacted(database_url: str) -> str:
    """``database_url`` without its password, for error messages."""
    head, sep, tail = database_url.partition("://")
    if "@" not in tail:
        return database_url
    credentials, _, rest = tail.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{head}{sep}{user}@{rest}"
