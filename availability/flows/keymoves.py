"""Moving a flow's Redis keys to new names, one key at a time, so that a run cut anywhere
is simply run again: the Shopify push's keys to their partitioned names (`availability
shopify migrate-keys`, flows/inventory/migrate.py) and the ERP flows' queues to their
hash-tagged ones (`move_legacy_flow_keys`, at every start of the flows).

A key goes by DUMP / RESTORE with its TTL when the new name is free, else it is merged into
the new key (hash fields and zset members the new key lacks, list items it does not hold,
stream entries appended): the new key was written by a worker already on the new names, or
by a run cut between its copy and its delete, and what it holds is never overwritten. The
old key is deleted once its copy is written. On Redis Cluster the two names may be in
different slots: every command here names one key, so that is no CROSSSLOT.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from availability.flows.machinery import FlowKeys, _s


class KeyMover:
    """Moves keys and counts them: `moved` (copied to a free name), `merged` (into a key
    that was there)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.moved = 0
        self.merged = 0

    async def move(self, old: str, new: str) -> None:
        if old == new:
            return  # a merge into itself would end in deleting it
        kind = _s(await self.redis.type(old))
        if kind == "none":
            return
        if not await self.redis.exists(new):
            pipe = self.redis.pipeline(transaction=False)
            pipe.dump(old)
            pipe.pttl(old)
            payload, ttl = await pipe.execute()
            if payload is None:
                return  # expired meanwhile
            await self.redis.restore(new, ttl if ttl and ttl > 0 else 0, payload, replace=True)
            self.moved += 1
        else:
            await self._merge(kind, old, new)
            self.merged += 1
        await self.redis.delete(old)

    async def _merge(self, kind: str, old: str, new: str) -> None:
        if kind == "hash":
            # one pipeline, not a round trip per field (a SKU's sales hash can be large)
            pipe = self.redis.pipeline(transaction=False)
            for field, value in (await self.redis.hgetall(old)).items():
                pipe.hsetnx(new, field, value)
            await pipe.execute()
        elif kind == "zset":
            rows = await self.redis.zrange(old, 0, -1, withscores=True)
            if rows:
                await self.redis.zadd(new, dict(rows), nx=True)
        elif kind == "list":
            held = set(await self.redis.lrange(new, 0, -1))
            missing = [item for item in await self.redis.lrange(old, 0, -1) if item not in held]
            if missing:
                await self.redis.rpush(new, *missing)
        elif kind == "stream":
            pipe = self.redis.pipeline(transaction=False)
            for _id, fields in await self.redis.xrange(old):
                pipe.xadd(new, fields)
            await pipe.execute()
        # a string (the push's last drift pass): the new one is newer


async def move_legacy_flow_keys(redis: Redis, prefix: str, flows: Iterable[str]) -> dict[str, int]:
    """Move the ERP flows' queue keys from their names before the hash tag
    (`{prefix}:{flow}:marks`, ...: on Redis Cluster each in a slot of its own, which the
    claim and outbox scripts cannot name together) to `FlowKeys`' tagged names.

    Called whenever the flows are built (availability/bootstrap.py `open_erp_flows`), so a
    deployment needs no separate step: one TYPE a key when nothing is left, and a run killed
    half-way finishes at the next start. A mark, lease, retry or outbox message left under an
    old name by a process of the version before (still running during a rolling restart)
    moves at the next start after it stopped; until then the store (SQL) still holds the
    document, and an outbox message resent later keeps its idempotency key."""
    mover = KeyMover(redis)
    for flow in flows:
        keys = FlowKeys(prefix, flow)
        for old, new in keys.legacy_names().items():
            await mover.move(old, new)
    return {"moved": mover.moved, "merged": mover.merged}
