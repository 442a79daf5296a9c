"""Handing the ledger's dirty marks to the publisher, one partition at a time.

The ledger marks each changed (SKU, location) in its partition's dirty set
(`{prefix}:{pN}:dirty`, written by the same script as the change, so in the SKU's slot).
The publisher claims from its own set (one per shop), which is not in any partition. No
script may name both, so the hand-over is three single-slot steps per partition:

1. `dirty_take.lua` moves up to `batch` of the oldest marks into `{pN}:dirty:taking`
   (returning what a hand-over that died left there first);
2. ZADD NX into every target set (a mark already waiting keeps its earlier first-dirty time);
3. ZREM them from `taking`.

A crash between the steps hands a mark over again on the next run, never loses one; a
mark the ledger adds meanwhile lands in the dirty set again and goes on the next run.
"""

from __future__ import annotations

from importlib import resources
from typing import Sequence

from redis.asyncio import Redis
from availability.ledger.keys import KeyLayout
from availability.ledger.scriptcalls import run_script_calls


class DirtyHandover:
    def __init__(self, redis: Redis, keys: KeyLayout, targets: Sequence[str], *, batch: int = 1000) -> None:
        self.redis = redis
        self.keys = keys
        self.targets = list(targets)
        self.batch = batch
        self._script = redis.register_script(
            resources.files("availability.ledger").joinpath("scripts", "dirty_take.lua").read_text()
        )

    async def _take(self, partitions: Sequence[int]) -> list:
        """Step 1 for each partition, one pipeline (SCRIPT LOAD reaches every primary of a
        cluster; EVALSHA goes to the partition's slot)."""
        return await run_script_calls(
            self.redis, self._script, [([self.keys.dirty(p), self.keys.dirty_taking(p)], [self.batch]) for p in partitions]
        )

    async def run(self, max_rounds: int = 50) -> int:
        """Hand over what is waiting (up to `batch` a partition a round). Returns marks moved."""
        moved = 0
        busy = list(self.keys.range())
        for _ in range(max_rounds):
            if not busy:
                break
            taken = await self._take(busy)
            pipe = self.redis.pipeline(transaction=False)
            for rows in taken:
                if rows:
                    scored = {rows[i]: float(rows[i + 1]) for i in range(0, len(rows), 2)}
                    for target in self.targets:
                        pipe.zadd(target, scored, nx=True)
            for p, rows in zip(busy, taken):
                if rows:
                    pipe.zrem(self.keys.dirty_taking(p), *rows[0::2])
            if any(taken):
                await pipe.execute()
            moved += sum(len(rows) // 2 for rows in taken)
            busy = [p for p, rows in zip(busy, taken) if len(rows) // 2 >= self.batch]
        return moved
