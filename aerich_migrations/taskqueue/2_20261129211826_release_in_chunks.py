"""The children of a done task are released in chunks (``postgres.releases``).

``queued_tasks.release_next`` (PostgreSQL's own bookkeeping, not in the models) holds, while
a release is under way, the smallest child id not released yet; a partial index finds those
tasks (``statements.RELEASES_LEFT_SQL``), for the reaper to finish a release whose worker died.
The index of dependency edges by parent becomes (``parent_id``, ``task_id``), so that a
chunk reads the next children in id order.
"""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE INDEX IF NOT EXISTS "queued_task_dependencies_children_idx" ON "queued_task_dependencies" ("parent_id", "task_id");
        DROP INDEX IF EXISTS "queued_task_dependencies_parent_idx";
        ALTER TABLE "queued_tasks" ADD COLUMN IF NOT EXISTS "release_next" BIGINT;
        CREATE INDEX IF NOT EXISTS "queued_tasks_release_idx" ON "queued_tasks" ("id") WHERE "release_next" IS NOT NULL;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "queued_tasks_release_idx";
        ALTER TABLE "queued_tasks" DROP COLUMN IF EXISTS "release_next";
        DROP INDEX IF EXISTS "queued_task_dependencies_children_idx";
        CREATE INDEX IF NOT EXISTS "queued_task_dependencies_parent_idx" ON "queued_task_dependencies" ("parent_id");"""


MODELS_STATE = (
    "eJztXGtz2jgU/Ssaf0pn0kxCns3s7AwktGWbQDeh29d0HGEL0MTIriyXsN3895X8wC8ZbE"
    "JcQ/2lxZKOrJwjS/dePX4qDNr33x3koL2/xb96nz8r5+CnQuAE8R/yArtAgZYVyxZpDA4M"
    "F+Sm6KrItN3CA5tRqDGeN4SGjXiSjmyNYothkwhEE4jC52A6hgwwE1CH7PIHRBHADGAbYM"
    "J/2MDAQ46GRPdKaryVwBzyrD3xHt3U+IswGa2vSodg/teozBwhxrG84q/feDImOnpAdvBo"
    "3atDjAw9Rh3WRQVuuspmlpvWwqMOYa/dsqLBA1UzDWdCwvLWjI1NMgdgwkTqCBFEIUPiDY"
    "w6gkHiGIZPeECq19iwiNfKCEZHQ+gYQgeB9hoQpimq2u311dt2X1WVlEYBIsKxn6SZROjL"
    "m2q7BIxEE16+ajQOD08b+4cnZ8dHp6fHZ/tnvKzb3nTW6aPXmJAtryqXs86bTrcvGmTyTu"
    "T1MJHw6GIggx7KFSNk3/0/xf/FGFI5+0H5BP/8D0vyH7C9SIAgIVQg7PhlSDCBD6qByIiN"
    "+WPj+HgBvf80by7eNm92eKkXcZK7flbDyxN8h/xOTN0xkFqU5gRsJbb9zvwbkT10iCaaVZ"
    "juFLAmPBfhNqIYGvhfPosFFMoGcwLpTE58RgUJ+gczhuzNE2DRYH3Va4maJ7b93fAFaHW6"
    "zZvPO9fNT64Ek5mfddXrvgnKW6bNRtStSGl97rebSUHwiEDm0EK9Pwbavp5/cpSj458cZf"
    "Z7kZVgmXEqCjEcAJ5r2izVcImxe3CSg92Dk0x2RVacXUhHdprcv257XTm5QfkEtzrWGPiP"
    "2612yjRcl2mi/BEMWmDgYINhYu+J9/2plD+iCH5iI0pA8XxAibB/IRlORAWthBT306JihI"
    "hqyCFeuzVy8Ncz9MCK6BGB1IKsXRCeJdpfQI8Q8SQ5Kjbhls27hYjO26NakCLRhJQAmdED"
    "CXJ5KGFd38P+c83IXiihcXB0enR2eHI0jyDMUxYFDoIgQWScGUNCkFHEwolAygsNzH9uqB"
    "1pUWxSzGZF+m8EUnfcZMeliNEZZ8shkkE5k9MEqqY1Sav4DARJGBUZahOo8mg93BBaGZ4g"
    "05H01NeGCTNIjWAShA4FaKtMh8veh9ZVG7y/aV90bju+GRFERbxMkcQTMHMpuGk3rxIc65"
    "wIFRFvqSXN9CXPFpTKyU6Bkzabj94LfmyeM7+A/n7nun3bb16/j5lvl81+W+Q04mr4qTtJ"
    "R39eCfjY6b8F4hF86XXbSStvXq7/RRFtgg4zVWJOVahHiQySg6S01rY2RiJ2vprYMXQ5al"
    "fla9tQuRmkbFWxQ+wapN6ccXUzldZNIom55pA5ANYaV17jIcSrjtwhtNa58jprkGjIWFXq"
    "GLpWu/Jq28y0rJXn6Dm2VrrySiPO46pell6rXH2VOX+a4+6UCbTIHblIQ+sARo4AhmZATp"
    "euDiRR4gXh+Bhq+/Z0PMtuJvSgIWul/WNpZE15QconyLbhSMJ6Hz1kjigS8DYQv2jGaH/q"
    "xyaL1HJqbN9YUDy5xpqlAiZDczUJAmTNf3H+vcVotehOeB/G/LMGKy2wVIz58jbFi/MIw3"
    "vpnniPV4lxY1KER+Qd8jazdnjLhScq4T7rOMhmifEYdLggNWwihdP5UY549+Us6MhAnj3D"
    "WwC6H664TSPoHkBNbA/T1QzetTE2dF6V5Cvwka/f3SADZuwS3m7SExs0OFMq0keyBdmVyb"
    "pEYncMItpsc1c2FvPm99SauKLEGaZsG+jKhF2Zo21iSgxuZsOMDGqx4S6dNWlMkimQcANW"
    "998t3rSkoy07fRjvk3nPIXLSfJi/ayPHmUQCxPd0Du7u3BqwfncHplCcGRyalKfOp4e7uz"
    "3QIwhQcwosRIGXAXaGkLzE5IXkbOJaq5acUfyqzI0nb87/lji1+FMJZYrPc36DFAFADxbl"
    "HggnZK5nIE0Wt2ow2fE6Htz6/M9FcevjnLsPj/WxyUoem3yaxZ5Xiw0YE8uUIz7gFSY/Aq"
    "qpX5evFIyfJXtKVdMir6sU6YMxR+mieXvRvGwrEmu1ZncNjuic32w/tDQjThi/y6w330DO"
    "bbYF9nmeKyR4WWBgbixNKWYMETCYAejeAiG7HWJJ6eUXP8RMqGibPZm8FX2K3N5YwJgSf7"
    "FvVokaaiuqonPHIivKJTDFf/YyS1B+Cy+fWP8x2vpmj2e+2aP4gtVTl6mqxnLZ6yTy1ans"
    "w5YZa1L1UcsCRy1j83OK+zy79UJsvaG+0pt70sZZfsMoja197HX52BFua2cwtzOY7pGV9Q"
    "g/mvTe9Z0WO4V+sd0CfuHUheR2DalDCOce2Ij+QPQcmNzvs6ipcbtFXPbn17YL7pHFADTw"
    "DyTcwTGClA34KG/LHMi11FnfL1jhoWt3gYvnqV54Q10Cth5r+dfK8fweyZjbA0WJjmK2wi"
    "cpgWdLNqRkr/lsnzm01osFIlNUTkYTqJpZCbN8oucz6QrkpoH1fRhJcrFurEJtElYTmyLW"
    "Vn1zUWKzmaaBIMmgNgZMXh/Kkc/FbGBClHx9aK93FYsqtDrJ8NmH61b7ZufAndfCAyZpyg"
    "1oM3VubReN8KTRdYyn0jEe/84DtbjUcWQtc6Vl5s6TLb2MOdsTiEBKvMFNKcUNOGzk8AIO"
    "G5lOgMiShOh+WeioiSjWxoo8YORn7i4JE8Gw2LLIUDbra47L/C5BmScaTNnhlk357jc7AC"
    "C+qwIM+8W3kN2D/f082xb297P3LYg8yS3Hsn1vS245lt7eWMItxxu+2PtLZ7XH/wHyWLVB"
)
