"""What the Shopify push keeps in Redis, beside the ledger.

Every name comes from the ledger's layout (`availability/ledger/keys.py`), so each carries
a partition's hash tag and no script or transaction of the push names two slots (Redis
Cluster refuses that). A shop's queue sits in the partition of its name (`queue_head`,
`{pQ}` below: pQ = crc32("shopify[:SHOP]") % partitions): the claim takes marks, urgent
marks and SKU leases in one script, the outbox and its leases change together. A SKU's
own push keys sit in the SKU's partition (`{pN}`), beside its ledger keys; the index of SKUs
with sales held is one zset per partition, written in the SKU's transaction.

    {prefix}:{pN}:SKU:shopify        hash  "ITEM_GID|LOCATION_GID" -> "quantity|as_of_ms|source":
                                           the last value Shopify is known to hold (confirmed by a
                                           push, read back, or reported by a webhook), newest wins
    {prefix}:{pN}:SKU:shopify:sales  hash  Shopify's own sales in flight (flows/inventory/sales.py)
    {prefix}:{pN}:shopify:held       zset  SKU -> oldest held sale, the SKUs of partition N (the sales sweep's index)
    {prefix}:{pQ}:shopify:dirty      zset  the shop's dirty marks ("SKU|LOCATION" -> first-dirty ms), handed
                                           over from the ledger's per-partition sets by `DirtyFanout`
    {prefix}:{pQ}:shopify:urgent     zset  marks to push without waiting for the window
    {prefix}:{pQ}:shopify:inflight   hash  SKU -> "owner|lease_until_ms" (one push of a SKU at a time)
    {prefix}:{pQ}:shopify:outbox     hash  message id -> outbox message (key + exact variables)
    {prefix}:{pQ}:shopify:outbox:lease zset message id -> lease_until ms
    {prefix}:{pQ}:shopify:dlq        list  dead letters (JSON, oldest first)
    {prefix}:{pQ}:shopify:parked     hash  "SKU|ITEM_GID|LOCATION_GID" -> dead letter id (not pushed until replayed)
    {prefix}:{pQ}:shopify:unmapped   zset  SKU -> last seen ms (changes with no InventoryItem mapping)
    {prefix}:{pQ}:shopify:levels     stream inventory_levels/update webhooks (written by ingest)
    {prefix}:{pQ}:shopify:levels:triggered hash the newest webhook time per level (written by ingest)
    {prefix}:{pQ}:shopify:drift:lock string one periodic drift pass at a time
    {prefix}:{pQ}:shopify:drift:last string when the last periodic pass finished (ms)
    {prefix}:{pQ}:shopify:mappings-seen:V string one process walks the ledger per mapping change

With several shops (`AVAILABILITY_SHOPIFY_SHOPS`) every name has `shopify:{shop}` for
`shopify` (and each shop's queue its own partition); the shop of the single-shop settings
keeps the names above. The names before partitions (`{prefix}:shopify:...`,
`{prefix}:{SKU}:shopify`) are `LegacyPushKeys`; `availability shopify migrate-keys` moves them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from availability.flows.machinery import Scripts, _s, now_ms, run_script_calls
from availability.flows.inventory.mappings import LevelKey
from availability.ledger.dirty import DirtyHandover
from availability.ledger.keys import KeyLayout


class PushScripts(Scripts):
    """The machinery's scripts and the push's own (`scripts/record_known.lua`: newest wins)."""

    OWN = ("availability.flows.inventory", ("record_known",))


async def record_known(
    redis: Redis, script: Any, known_key: Callable[[str], str], entries: Iterable[tuple[LevelKey, int, int, str]],
    *, chunk: int = 1000,
) -> int:
    """(level, value, as_of_ms, source) observations into each SKU's known-values hash
    through `record_known.lua` (newest wins), one call per SKU, pipelined by `chunk` SKUs.
    Returns how many fields were written."""
    by_sku: dict[str, list] = {}
    for key, value, as_of, source in entries:
        by_sku.setdefault(key.sku, []).extend([key.field, int(value), int(as_of), source])
    skus = list(by_sku)
    written = 0
    for i in range(0, len(skus), chunk):
        calls = [([known_key(sku)], by_sku[sku]) for sku in skus[i : i + chunk]]
        written += sum(int(n) for n in await run_script_calls(redis, script, calls))
    return written


class PushKeys:
    """The push's key names of one shop, from the ledger's layout (module docstring)."""

    def __init__(self, layout: KeyLayout, shop: str = "") -> None:
        self.layout = layout
        self.prefix = layout.prefix
        self.shop = shop
        self._suffix = f":{shop}" if shop else ""
        #: the shop's name in its keys: "shopify" or "shopify:SHOP"
        self.name = f"shopify{self._suffix}"
        base = layout.queue_head(self.name)
        self.base = base
        self.urgent = f"{base}:urgent"
        self.leases = f"{base}:inflight"
        self.dlq = f"{base}:dlq"
        self.parked = f"{base}:parked"
        self.unmapped = f"{base}:unmapped"
        self.levels_stream = f"{base}:levels"
        self.drift_lock = f"{base}:drift:lock"
        self.drift_last = f"{base}:drift:last"
        #: this shop's own dirty set, fed from the ledger's by the fan-out
        self.dirty = f"{base}:dirty"

    def known(self, sku: str) -> str:
        return self.layout.sku_key(sku, self.name)

    def sales(self, sku: str) -> str:
        return self.layout.sku_key(sku, f"{self.name}:sales")

    def held_index(self, partition: int) -> str:
        return self.layout.partition_key(partition, f"{self.name}:held")

    def held_index_of(self, sku: str) -> str:
        return self.held_index(self.layout.partition(sku))

    def all_held_indexes(self) -> list[str]:
        return [self.held_index(p) for p in self.layout.range()]

    def mappings_seen(self, version: int) -> str:
        return f"{self.base}:mappings-seen:{version}"


class Known(msgspec.Struct, frozen=True):
    """What Shopify holds for a level, as of when, and how we learnt it."""

    value: int
    as_of_ms: int
    #: push (confirmed by our set), read (read back), stale (read back after a stale CAS),
    #: webhook (inventory_levels/update), drift (periodic or resync read)
    source: str


def parse_known(raw: bytes | str | None) -> Known | None:
    if raw is None:
        return None
    value, as_of, source = _s(raw).split("|", 2)
    return Known(int(value), int(as_of), source)


class PushState:
    def __init__(self, redis: Redis, keys: PushKeys, scripts: PushScripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    # --- last known Shopify values -------------------------------------------------------------

    async def known_many(self, levels: Sequence[LevelKey]) -> dict[LevelKey, Known | None]:
        if not levels:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for key in levels:
            pipe.hget(self.keys.known(key.sku), key.field)
        return {key: parse_known(raw) for key, raw in zip(levels, await pipe.execute())}

    async def record_known(self, entries: Iterable[tuple[LevelKey, int, int, str]]) -> int:
        """Record (level, value, as_of_ms, source) observations; older ones than stored are ignored."""
        return await record_known(self.redis, self.scripts.record_known, self.keys.known, entries)

    async def forget_known(self, levels: Iterable[LevelKey]) -> None:
        """Drop what we believe Shopify holds (the next push reads it back first)."""
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        for key in levels:
            pipe.hdel(self.keys.known(key.sku), key.field)
            n += 1
        if n:
            await pipe.execute()

    # --- parked levels (dead-lettered until replayed) ----------------------------------------------

    @staticmethod
    def parked_field(key: LevelKey) -> str:
        return f"{key.sku}|{key.field}"

    async def parked(self, levels: Sequence[LevelKey]) -> set[LevelKey]:
        if not levels:
            return set()
        values = await self.redis.hmget(self.keys.parked, [self.parked_field(k) for k in levels])
        return {k for k, v in zip(levels, values) if v is not None}

    async def park(self, levels: Iterable[LevelKey], letter_id: str) -> None:
        mapping = {self.parked_field(k): letter_id for k in levels}
        if mapping:
            await self.redis.hset(self.keys.parked, mapping=mapping)

    async def unpark(self, levels: Iterable[LevelKey]) -> int:
        fields = [self.parked_field(k) for k in levels]
        return int(await self.redis.hdel(self.keys.parked, *fields)) if fields else 0

    async def parked_all(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.parked)
        return {_s(k): _s(v) for k, v in raw.items()}

    # --- unmapped SKUs -----------------------------------------------------------------------------

    async def note_unmapped(self, skus: Iterable[str]) -> int:
        mapping = {sku: now_ms() for sku in skus}
        if not mapping:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.unmapped, mapping)
        pipe.zcard(self.keys.unmapped)
        _added, total = await pipe.execute()
        return int(total)

    async def unmapped(self, limit: int = 1000) -> list[tuple[str, int]]:
        rows = await self.redis.zrevrange(self.keys.unmapped, 0, limit - 1 if limit > 0 else -1, withscores=True)
        return [(_s(sku), int(score)) for sku, score in rows]

    async def unmapped_count(self) -> int:
        return int(await self.redis.zcard(self.keys.unmapped))

    async def clear_unmapped(self, skus: Iterable[str]) -> int:
        skus = list(skus)
        return int(await self.redis.zrem(self.keys.unmapped, *skus)) if skus else 0


class DirtyFanout:
    """Moves the ledger's dirty marks (one set per ledger partition) into every shop's own
    dirty set, so each shop's publisher claims its own copy of a mark (one shop included:
    a mark lives in its SKU's partition, the shop's queue in the partition of the shop).
    The hand-over is the ledger's (`availability/ledger/dirty.py`): crash-safe, single-slot."""

    def __init__(self, redis: Redis, source: KeyLayout, targets: Sequence[str], *, batch: int = 1000) -> None:
        self.redis = redis
        self.source = source
        self.targets = list(targets)
        self.handover = DirtyHandover(redis, source, self.targets, batch=batch)

    async def run(self, max_batches: int = 50) -> int:
        return await self.handover.run(max_batches)

