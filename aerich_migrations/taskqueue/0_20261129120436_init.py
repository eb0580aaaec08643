"""The initial taskqueue schema: the four tables of the models, aerich's own table, and the
partial claim index that the ORM cannot declare (``schema.POSTGRES_CLAIM_INDEX_SQL``, which
explains its ``IS TRUE``).

``parent_id`` of the dependency edges gets a fixed distinct-count estimate (a tenth of the
rows: ten children per parent on average). Its real distribution is skewed (one parent may
have thousands of children), and ANALYZE's figure would make the planner read the whole
edge table to find the children of a few tasks, on every completion.

Statements are ``IF NOT EXISTS``, so a database whose tables were created from the models
before migrations existed is adopted rather than refused.
"""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "queued_tasks" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(255) NOT NULL,
    "module_name" VARCHAR(255),
    "function_name" VARCHAR(255),
    "serialized_function" BYTEA,
    "signature" VARCHAR(64),
    "state" VARCHAR(16) NOT NULL,
    "args" JSONB NOT NULL,
    "kwargs" JSONB NOT NULL,
    "context" JSONB NOT NULL,
    "result" JSONB,
    "pending_parents" INT NOT NULL,
    "channel" VARCHAR(64) NOT NULL,
    "priority" INT NOT NULL,
    "retry_count" INT NOT NULL,
    "max_retries" INT NOT NULL,
    "timeout" DOUBLE PRECISION,
    "date_enqueued" TIMESTAMPTZ NOT NULL,
    "date_scheduled" TIMESTAMPTZ NOT NULL,
    "date_started" TIMESTAMPTZ,
    "date_done" TIMESTAMPTZ,
    "date_failed" TIMESTAMPTZ,
    "date_cancelled" TIMESTAMPTZ,
    "date_stopped" TIMESTAMPTZ,
    "date_ended" TIMESTAMPTZ,
    "execution_time" DOUBLE PRECISION,
    "claimed_by" VARCHAR(255),
    "exception_name" VARCHAR(255),
    "exception_message" TEXT,
    "exception_info" TEXT,
    "parent_task" BIGINT REFERENCES "queued_tasks" ("id") ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "idx_queued_task_state_d8b149" ON "queued_tasks" ("state");
CREATE INDEX IF NOT EXISTS "idx_queued_task_date_en_c87125" ON "queued_tasks" ("date_enqueued");
CREATE INDEX IF NOT EXISTS "idx_queued_task_parent__75ab0b" ON "queued_tasks" ("parent_task");
COMMENT ON TABLE "queued_tasks" IS 'A task: what to run, where it is in its life, and what came of it.';
CREATE TABLE IF NOT EXISTS "queued_task_dependencies" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "parent_id" BIGINT NOT NULL REFERENCES "queued_tasks" ("id") ON DELETE CASCADE,
    "task_id" BIGINT NOT NULL REFERENCES "queued_tasks" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_queued_task_task_id_1ab114" UNIQUE ("task_id", "parent_id")
);
CREATE INDEX IF NOT EXISTS "queued_task_dependencies_parent_idx" ON "queued_task_dependencies" ("parent_id");
COMMENT ON TABLE "queued_task_dependencies" IS 'An edge: ``task_id`` waits for ``parent_id``. One row per parent (fan-in).';
CREATE TABLE IF NOT EXISTS "queued_task_logs" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "type" VARCHAR(16) NOT NULL,
    "name" VARCHAR(255) NOT NULL,
    "message" TEXT NOT NULL,
    "info" JSONB,
    "date_created" TIMESTAMPTZ NOT NULL,
    "queued_task_id" BIGINT NOT NULL REFERENCES "queued_tasks" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "queued_task_logs_task_date_idx" ON "queued_task_logs" ("queued_task_id", "date_created");
COMMENT ON TABLE "queued_task_logs" IS 'A log line written by a task.';
CREATE TABLE IF NOT EXISTS "queued_task_workers" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "server_name" VARCHAR(255) NOT NULL UNIQUE,
    "hostname" VARCHAR(255) NOT NULL,
    "pid" INT NOT NULL,
    "max_workers" INT NOT NULL,
    "active_workers" INT NOT NULL,
    "idle_workers" INT NOT NULL,
    "is_running" BOOL NOT NULL,
    "last_heartbeat" TIMESTAMPTZ NOT NULL,
    "started_at" TIMESTAMPTZ NOT NULL,
    "version" VARCHAR(32) NOT NULL
);
COMMENT ON TABLE "queued_task_workers" IS 'A running server: one process of workers, kept alive by heartbeats.';
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS "queued_tasks_claim_idx" ON "queued_tasks" ((-"priority"), "date_scheduled", "id") WHERE ("state" = 'enqueued') IS TRUE;
ALTER TABLE "queued_task_dependencies" ALTER COLUMN "parent_id" SET (n_distinct = -0.1);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "queued_task_logs";
DROP TABLE IF EXISTS "queued_task_dependencies";
DROP TABLE IF EXISTS "queued_task_workers";
DROP TABLE IF EXISTS "queued_tasks";"""


MODELS_STATE = (
    "eJztXGtz2jgU/Ssaf0pn0kxCnpvZ2RlIaMtuAt2Ebl/TcYQtQBMju7Jcwnbz31fyA79ksA"
    "lxDPWXFks6snKOLN179fipMGjff3eQg/b+Fv/qff6snIOfCoETxH/IC+wCBVpWLFukMTgw"
    "XJCboqsi03YLD2xGocZ43hAaNuJJOrI1ii2GTSIQTSAKn4PpGDLATEAdsssfEEUAM4BtgA"
    "n/YQMDDzkaEt0rqfFWAnPIs/bEe3RT4y/CZLS+Kh2C+V+jMnOEGMfyir9+48mY6OgB2cGj"
    "da8OMTL0GHVYFxW46SqbWW5aC486hL1xy4oGD1TNNJwJCctbMzY2yRyACROpI0QQhQyJNz"
    "DqCAaJYxg+4QGpXmPDIl4rIxgdDaFjCB0E2mtAmKaoarfXV2/bfVVVUhoFiAjHfpJmEqEv"
    "b6rtEjASTXj9W6NxeHja2D88OTs+Oj09Pts/42Xd9qazTh+9xoRseVW5nHXedrp90SCTdy"
    "Kvh4mERxcDGfRQrhgh++7/Kf4vxpDK2Q/KJ/jnf1iS/4DtRQIECaECYccvQ4IJfFANREZs"
    "zB8bx8cL6P2neXPxrnmzw0u9ipPc9bMaXp7gO+R3YuqOgdSiNCdgK7Htd+ZfiOyhQzTRrM"
    "J0p4A14bkItxHF0MD/8lksoFA2mBNIZ3LiMypI0D+YMWRvngCLBuurXkvUPLHt74YvQKvT"
    "bd583rlufnIlmMz8rKte921Q3jJtNqJuRUrrc7/dTAqCRwQyhxbq/THQ9vX8k6McHf/kKL"
    "Pfi6wEy4xTUYjhAPBc02aphkuM3YOTHOwenGSyK7Li7EI6stPk/nnb68rJDconuNWxxsB/"
    "3G61U6bhukwT5fdg0AIDBxsME3tPvO8PpfwRRfATG1ECiucDSoT9C8lwIipoJaS4nxYVI0"
    "RUQw7x2q2Rg7+eoQdWRI8IpBZk7YLwLNH+AnqEiCfJUbEJt2zeLUR03h7VghSJJqQEyIwe"
    "SJDLQwnr+h72n2tG9kIJjYOj06Ozw5OjeQRhnrIocBAECSLjzBgSgowiFk4EUl5oYP5zQ+"
    "1Ii2KTYjYr0n8jkLrjJjsuRYzOOFsOkQzKmZwmUDWtSVrFZyBIwqjIUJtAlUfr4YbQyvAE"
    "mY6kp74xTJhBagSTIHQoQFtlOlz2PrSu2uD9Tfuic9vxzYggKuJliiSegJlLwU27eZXgWO"
    "dEqIh4Sy1ppi95tqBUTnYKnLTZfPRe8GPznPkF9Pc71+3bfvP6fcx8u2z22yKnEVfDT91J"
    "OvrzSsDHTv8dEI/gS6/bTlp583L9L4poE3SYqRJzqkI9SmSQHCSltba1MRKx89XEjqHLUb"
    "sqX9uGys0gZauKHWLXIPXmjKubqbRuEknMNYfMAbDWuPIaDyFedeQOobXOlddZg0RDxqpS"
    "x9C12pVX22amZa08R8+xtdKVVxpxHlf1svRa5eqrzPnTHHenTKBF7shFGloHMHIEMDQDcr"
    "p0dSCJEi8Ix8dQ27en41l2M6EHDVkr7R9LI2vKC1I+QbYNRxLW++ghc0SRgLeB+EUzRvtT"
    "PzZZpJZTY/vGguLJNdYsFTAZmqtJECBr/ovz7y1Gq0V3wvsw5p81WGmBZTnz27knXhxHGN"
    "5Lt8R7tEpsG5MiPCJ/IW8va4e3XDiiEuqzToNslBaPQXcLUsP3UzidH+SId15Ogo4M5Fkz"
    "vAWg++GKWzSC7QHUxOYwXc2gXRtjQ+dVSb4BH/nmrxtkwIw9ws/G+UuMPCnSE9szOFMq0k"
    "ey5diVybpEYm8MItpsc9c1FvPm99SauKLEGaZsE+jKhF2Zo21iSgxuZsOMDGqx4S6dNWlM"
    "kimQcPNV998t3rSkoy07exjvk3lPIXLSfJi/ZyPHiUQCxPd0Du7u3BqwfncHplCcGByalK"
    "fOp4e7uz3QIwhQcwosRIGXAXaGkLzG5JXkZOJaq5acUPyqzE0nb8r/ljiz+FMJZYrMc6IU"
    "erAodzo4C3MRAz2yCFXnNTy4AvhfiOLWxml2Hx7rc5KVPCf5NBM9rxYbMAyWKUd8jCtMfg"
    "RUU78u7ygYMkv2jaqmRV7vKNIHY77RRfP2onnZViQGas3uGnzPOb/Zrmdpdpuwd5cZbL5N"
    "nNtSC0zyPHdG8LLAwNw+mlLMGCJgMAPQvfZBdh3EktLLb3qIWU3RNnsyeUv4FLm9sYApJf"
    "5i36gSNdRWVEXnjkVWlEtgiv/sdZWg/BbeNrH+c7P1VR7PfJVH8RWqp65LVY3lshdG5MtR"
    "2acrMxah6rOVBc5WxubnFPd5tueF2HoHfaV386SNs/yGURpb+9jr8rEj3NbOYG5nMN0jK+"
    "sRfjTpves7LXYK/WK7BfzCqQvJ7RpShxDOPbAR/YHoOTC532dRU+N2i7jdz69tF9wjiwFo"
    "4B9IuINjBCkb8FHeljmQa6mzvlCwwkPX7gIXz1O98A66BGw91vLLyvH8HsmY2wNFiY5its"
    "InKYFnSzakZK/5bJ85tNabBCJTVE5GE6iaWQmzfKLnM+kK5KaB9QUYSXKxbqxCbRJWE5si"
    "1lZ9c1Fis5mmgSDJoDYGTN4XypHPxWxgQpR8X2ivdxWLKrQ6yfDZh+tW+2bnwJ3XwhMlac"
    "oNaDN1bm0XjfCk0XWMp9IxHv+SA7W41HFkLXOlZebOky29fTnbE4hASryyTSnFDThs5PAC"
    "DhuZToDIkoToXix01EQUa2NFHjDyM3eXhIlgWGxZZCib9TXHZX6VoMwTDabscMumfPebHQ"
    "AQ31UBhv3iW8juwf5+nm0L+/vZ+xZEnuRaY9m+tyXXGkuvayzhWuMNX+x90Vnt8X+1yrB9"
)
