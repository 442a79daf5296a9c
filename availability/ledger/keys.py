"""Redis key layout. Everything about one SKU shares the `{sku}` hash tag, so one SKU's
keys live in one Redis Cluster slot and every per-SKU script is single-slot.

    {prefix}:{SKU}:stock        hash   location -> "on_hand,reserved,allocated,unsellable,incoming,count_ms"
    {prefix}:{SKU}:idb:BUCKET   string open-addressing table of 8-byte event-id digests applied in
                                       that time bucket (window / buckets wide); expires when the
                                       idempotency window has passed the bucket's end
    {prefix}:{SKU}:idm          hash   bucket -> "slots,records" of each idb table (sizes the probe)
    {prefix}:{SKU}:dlog:LOCATION string 11-byte records (occurred ms, on_hand delta, source code):
                                       the on_hand deltas since the last count, for late counts
    {prefix}:{SKU}:cuts         hash   location -> "floor_ms|code:ms,..." (only when the last count
                                       saw a source only up to an earlier time, or the log was trimmed)
    {prefix}:{SKU}:seen         (legacy zset of full event ids; no longer written)
    {prefix}:{SKU}:holds        hash   reference / reservation id -> "STATE|expires_ms|channel[#attempt]|loc=res/alc;..."
    {prefix}:{SKU}:ended        zset   order reference -> ms after which its ended hold may be removed
                                       (holds ended by order events; retention trims them)
    {prefix}:resv:{ID}          hash   reservation header / intent record: doc (channel, lines, SKUs,
                                       created, expires), st (P pending, H finished, K rolling back),
                                       own (attempt token), dl (lease deadline, Redis ms)
    {prefix}:resv:expiry        zset   reservation id -> expires ms (TTL sweeper)
    {prefix}:resv:pending       zset   reservation id -> lease deadline ms (recovery sweep)
    {prefix}:resv:ended         zset   reservation id -> ended ms (retention sweep)
    {prefix}:holds:ended        zset   SKU -> earliest removal ms in its {SKU}:ended (retention sweep)
    {prefix}:dirty              zset   "SKU|LOCATION" -> first-dirty ms (the publisher's work list)
    {prefix}:journal            stream every bucket change, one entry per location, capped (audit)
    {prefix}:oversells          stream oversell exceptions: order, SKU, location, units short (capped)

The reservation indexes and the last four are global. On a single Redis (the default, and
what we test) scripts may name them beside the SKU's or the reservation's key; on Redis Cluster they would have to be split per slot,
which is not built yet (docs/architecture.md says so). Group commit (reserve_group.lua)
likewise names its requests' `resv:{ID}` headers beside one SKU's keys.
"""

from __future__ import annotations


class KeyLayout:
    __slots__ = ("prefix", "dirty", "journal", "expiry", "oversells")

    def __init__(self, prefix: str = "av") -> None:
        self.prefix = prefix
        self.dirty = f"{prefix}:dirty"
        self.journal = f"{prefix}:journal"
        self.expiry = f"{prefix}:resv:expiry"
        self.oversells = f"{prefix}:oversells"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:resv:pending"

    @property
    def ended(self) -> str:
        return f"{self.prefix}:resv:ended"

    @property
    def ended_holds_index(self) -> str:
        return f"{self.prefix}:holds:ended"

    def ended_holds(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:ended"

    def stock(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:stock"

    def seen(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:seen"

    def idempotency_meta(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:idm"

    def idempotency_bucket(self, sku: str, bucket: int) -> str:
        return f"{self.prefix}:{{{sku}}}:idb:{bucket}"

    def delta_log(self, sku: str, location: str) -> str:
        return f"{self.prefix}:{{{sku}}}:dlog:{location}"

    def count_cuts(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:cuts"

    def holds(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}:holds"

    def reservation(self, reservation_id: str) -> str:
        return f"{self.prefix}:resv:{{{reservation_id}}}"

    def stock_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:stock"

    def sku_of_stock_key(self, key: str) -> str:
        # "{prefix}:{SKU}:stock" -> SKU
        return key[len(self.prefix) + 2 : -len("}:stock")]
