"""Redis key layout. Everything about one SKU shares the `{sku}` hash tag, so one SKU's
keys live in one Redis Cluster slot and every per-SKU script is single-slot.

    {prefix}:{SKU}:stock        hash   location -> "on_hand,reserved,allocated,unsellable,incoming,count_ms"
    {prefix}:{SKU}:seen         zset   event_id -> applied-at ms (idempotency window)
    {prefix}:{SKU}:dl:LOCATION  zset   "event_id|delta" -> occurred ms (on_hand deltas since the last count)
    {prefix}:{SKU}:holds        hash   reference / reservation id -> "STATE|expires_ms|channel|loc=res/alc;..."
    {prefix}:resv:{ID}          hash   reservation header (channel, lines, SKUs, created, expires)
    {prefix}:resv:expiry        zset   reservation id -> expires ms (TTL sweeper)
    {prefix}:dirty              zset   "SKU|LOCATION" -> first-dirty ms (the publisher's work list)
    {prefix}:journal            stream every applied change, capped (audit)

The last three are global. On a single Redis (the default, and what we test) scripts may
name them beside the SKU's keys; on Redis Cluster they would have to be split per slot,
which is not built yet (docs/architecture.md says so).
"""

from __future__ import annotations


class KeyLayout:
    __slots__ = ("prefix", "dirty", "journal", "expiry")

    def __init__(self, prefix: str = "av") -> None:
        self.prefix = prefix
        self.dirty = f"{prefix}:dirty"
        self.journal = f"{prefix}:journal"
        self.expiry = f"{prefix}:resv:expiry"

    def stock(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:stock"

    def seen(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:seen"

    def delta_log(self, sku: str, location: str) -> str:
        return f"{self.prefix}:{{{sku}}}:dl:{location}"

    def holds(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:holds"

    def reservation(self, reservation_id: str) -> str:
        return f"{self.prefix}:resv:{{{reservation_id}}}"

    def stock_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:stock"

    def sku_of_stock_key(self, key: str) -> str:
        # "{prefix}:{SKU}:stock" -> SKU
        return key[len(self.prefix) + 2 : -len("}:stock")]
