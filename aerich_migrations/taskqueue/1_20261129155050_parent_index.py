"""The index of ``parent_task`` holds non-null values only.

Most tasks have no parent, and every row version of a task (its creation, its claim, its
end) added a NULL entry to the full index: the partial index (``schema.PARENT_INDEX_SQL``)
leaves them out, while every lookup of a parent's children (``parent_task = x``) still uses it.
"""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE INDEX IF NOT EXISTS "queued_tasks_parent_idx" ON "queued_tasks" ("parent_task") WHERE "parent_task" IS NOT NULL;
DROP INDEX IF EXISTS "idx_queued_task_parent__75ab0b";"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE INDEX IF NOT EXISTS "idx_queued_task_parent__75ab0b" ON "queued_tasks" ("parent_task");
DROP INDEX IF EXISTS "queued_tasks_parent_idx";"""


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
    "3QIwhQcwosRIGXAXaGkLzE5IXkbOJaq5acUfyqzI0nb87/lji1+FMJZYrMc6IUerAodzs4"
    "C3MRAz2yCFXnNTy4AvhfiOLWxml2Hx7rk5KVPCn5NCM9rxYbMAyWKUd8jCtMfgRUU78u9y"
    "gYMkt2jqqmRV7vKNIHY77RRfP2onnZViQGas3uGnzPOb/Zrmdpdpuwd5cZbL5NnNtSC0zy"
    "PLdG8LLAwNw+mlLMGCJgMAPQvfhBdiHEktLL73qIWU3RNnsyeYv4FLm9sYApJf5i36gSNd"
    "RWVEXnjkVWlEtgiv/slZWg/BbeN7H+k7P1ZR7PfJlH8TWqp65MVY3lspdG5AtS2ecrM5ah"
    "6tOVBU5XxubnFPd5NuiF2HoPfaX386SNs/yGURpb+9jr8rEj3NbOYG5nMN0jK+sRfjTpve"
    "s7LXYK/WK7BfzCqQvJ7RpShxDOPbAR/YHoOTC532dRU+N2i7jfz69tF9wjiwFo4B9IuINj"
    "BCkb8FHeljmQa6mzvlKwwkPX7gIXz1O98B66BGw91vKvleP5PZIxtweKEh3FbIVPUgLPlm"
    "xIyV7z2T5zaK13CUSmqJyMJlA1sxJm+UTPZ9IVyE0D6yswkuRi3ViF2iSsJjZFrK365qLE"
    "ZjNNA0GSQW0MmLwxlCOfi9nAhCj5xtBe7yoWVWh1kuGzD9et9s3OgTuvhWdK0pQb0Gbq3N"
    "ouGuFJo+sYT6VjPP41B2pxqePIWuZKy8ydJ1t6/3K2JxCBlHhpm1KKG3DYyOEFHDYynQCR"
    "JQnR/bLQURNRrI0VecDIz9xdEiaCYbFlkaFs1tccl/ldgjJPNJiywy2b8t1vdgBAfFcFGP"
    "aLbyG7B/v7ebYt7O9n71sQeZKLjWX73pZcbCy9sLGEi403fLH3l85qj/8D+9axEw=="
)
