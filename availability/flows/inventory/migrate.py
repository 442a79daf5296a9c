"""Moving the push's keys from their names before partitions to the partitioned ones.

Before, a shop's queue was `{prefix}:shopify[:SHOP]:...` (no hash tag: on Redis Cluster each
of its keys hashed to a slot of its own, and the claim, the outbox and the sales transaction
named several), a SKU's last known values and sales `{prefix}:{SKU}:shopify[:SHOP][:sales]`,
and the index of SKUs with sales held one global zset. Now every name comes from the
ledger's layout (state.py). `availability shopify migrate-keys` (publishers stopped, like
`ledger migrate-layout`, which copies these keys unchanged to another server or a cluster:
run this after it, against the target):

- a shop's queue keys (marks, urgent marks, leases, outbox and its leases, dead letters,
  parked levels, unmapped SKUs, the webhook stream and its dedupe hash, the last drift pass)
  and every SKU's known-values and sales hash go to their new names (flows/keymoves.py
  `KeyMover`: DUMP / RESTORE with their TTL when the new name is free, else merged into it:
  hash fields and zset members the new key lacks, list items it does not hold, stream
  entries appended);
- the held-sales index is split member by member into each SKU's partition (ZADD NX);
- the old key is deleted once its copy is written.

Each key is moved on its own and every step can run again: a run that was killed is run
again and finishes (a stream cut between its copy and its delete has its entries appended
twice: they are level observations, and the newest-wins record makes a repeat harmless).
The drift lock and the mapping-change markers are short-lived and left to expire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from availability.flows.inventory.state import PushKeys
from availability.flows.keymoves import KeyMover
from availability.flows.machinery import _s
from availability.ledger.keys import KeyLayout, LegacyKeyLayout

#: the shop's queue keys that move, by their name after `{prefix}:shopify[:SHOP]:`
QUEUE_KEYS = ("dirty", "urgent", "inflight", "outbox", "outbox:lease", "dlq", "parked", "unmapped", "levels",
              "levels:triggered", "drift:last")


class LegacyPushKeys:
    """The push's key names before partitions (read by the migration and the start check)."""

    def __init__(self, prefix: str, shop: str = "") -> None:
        self.prefix = prefix
        self.name = f"shopify:{shop}" if shop else "shopify"
        self.base = f"{prefix}:{self.name}"
        self.holds = f"{self.base}:holds"

    def queue(self) -> dict[str, str]:
        """Old queue key -> its suffix (the same under the new base)."""
        return {f"{self.base}:{suffix}": suffix for suffix in QUEUE_KEYS}

    def sku_key_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:{self.name}*"

    def split_sku_key(self, key: str) -> tuple[str, str] | None:
        """`{prefix}:{SKU}:shopify[:SHOP]` -> (SKU, ""), `...:sales` -> (SKU, "sales"); None for
        any other key (a partitioned key's tag is no SKU of this shop's old names)."""
        split = LegacyKeyLayout(self.prefix).split_sku_key(key)
        if split is None:
            return None
        sku, rest = split
        if rest == self.name:
            return sku, ""
        if rest == f"{self.name}:sales":
            return sku, "sales"
        return None


class LegacyPushKeysFound(RuntimeError):
    """The push's keys are still under their names before partitions."""


async def legacy_keys_left(redis: Redis, prefix: str, shop: str = "") -> list[str]:
    """The old queue keys of a shop that still exist (a cheap check: no SCAN)."""
    old = LegacyPushKeys(prefix, shop)
    names = [*old.queue(), old.holds]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.exists(name)
    return [name for name, n in zip(names, await pipe.execute()) if n]


@dataclass
class MigrationReport:
    moved: int = 0
    merged: int = 0
    index_members: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"moved": self.moved, "merged": self.merged, "index_members": self.index_members}


class PushKeyMigration:
    def __init__(self, redis: Redis, layout: KeyLayout, shops: Iterable[str], *,
                 on_progress: Callable[[str, int], None] | None = None) -> None:
        self.redis = redis
        self.layout = layout
        self.shops = list(shops)
        self.on_progress = on_progress or (lambda phase, n: None)
        self.report = MigrationReport()
        self.mover = KeyMover(redis)

    async def run(self) -> MigrationReport:
        for shop in self.shops:
            old, new = LegacyPushKeys(self.layout.prefix, shop), PushKeys(self.layout, shop)
            for key, suffix in old.queue().items():
                await self._move(key, f"{new.base}:{suffix}")
            self.on_progress("queue", self.report.moved + self.report.merged)
            await self._split_holds(old.holds, new)
            async for key in self.redis.scan_iter(match=old.sku_key_pattern(), count=1000):
                key = _s(key)
                split = old.split_sku_key(key)
                if split is None:
                    continue
                sku, kind = split
                await self._move(key, new.sales(sku) if kind else new.known(sku))
                self.on_progress("skus", self.report.moved + self.report.merged)
        return self.report

    async def _move(self, old: str, new: str) -> None:
        await self.mover.move(old, new)
        self.report.moved, self.report.merged = self.mover.moved, self.mover.merged

    async def _split_holds(self, old: str, new: PushKeys) -> None:
        rows = await self.redis.zrange(old, 0, -1, withscores=True)
        if not rows:
            return
        pipe = self.redis.pipeline(transaction=False)
        for sku, score in rows:
            pipe.zadd(new.held_index_of(_s(sku)), {_s(sku): score}, nx=True)
        await pipe.execute()
        self.report.index_members += len(rows)
        await self.redis.delete(old)
