"""Redis key layout. Everything about one SKU shares the `{sku}` hash tag, so one SKU's
keys live in one Redis Cluster slot and every per-SKU script is single-slot.

    {prefix}:{SKU}:stock        hash   location -> "on_hand,reserved,allocated,unsellable,incoming,count_ms"
    {prefix}:{SKU}:seen         zset   event_id -> applied-at ms (idempotency window)
    {prefix}:{SKU}:dl:LOCATION  zset   "event_id|delta" -> occurred ms (on_hand deltas since the last count)
    {prefix}:{SKU}:holds        hash   reference / reservation id -> "STATE|expires_ms|channel[#attempt]|loc=res/alc;..."
    {prefix}:resv:{ID}          hash   reservation header / intent record: doc (channel, lines, SKUs,
                                       created, expires), st (P pending, H finished, K rolling back),
                                       own (attempt token), dl (lease deadline, Redis ms)
    {prefix}:resv:expiry        zset   reservation id -> expires ms (TTL sweeper)
    {prefix}:resv:pending       zset   reservation id -> lease deadline ms (recovery sweep)
    {prefix}:resv:ended         zset   reservation id -> ended ms (retention sweep)
    {prefix}:dirty              zset   "SKU|LOCATION" -> first-dirty ms (the publisher's work list)
    {prefix}:journal            stream every applied change, capped (audit)

The reservation indexes and the last two are global. On a single Redis (the default, and
what we test) scripts may name them beside the SKU's or the reservation's key; on Redis Cluster they would have to be split per slot,
which is not built yet (docs/architecture.md says so). Group commit (reserve_group.lua)
likewise names its requests' `resv:{ID}` headers beside one SKU's keys.
"""

from __future__ import annotations


class KeyLayout:
    __slots__ = ("prefix", "dirty", "journal", "expiry")

    def __init__(self, prefix: str = "av") -> None:
        self.prefix = prefix
        self.dirty = f"{prefix}:dirty"
        self.journal = f"{prefix}:journal"
        self.expiry = f"{prefix}:resv:expiry"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:resv:pending"

    @property
    def ended(self) -> str:
        return f"{self.prefix}:resv:ended"

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
