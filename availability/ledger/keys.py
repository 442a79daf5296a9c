"""Redis key layout: the one module that knows every ledger key name.

The ledger's keys are grouped into a fixed number of **partitions** (chosen at setup,
default 64, recorded in Redis under `{prefix}:layout` so every process agrees). A SKU's
partition is CRC-32 of its UTF-8 bytes modulo the partition count (`partition_of`: the
same hash the ingest streams use, so with a stream partition count that divides it, each
ledger partition is fed by exactly one stream). Every key of a partition carries its hash
tag `{pN}`, so on Redis Cluster a partition is one slot: no script ever names two slots,
and a consumer applying partition N's events writes only to slot(N).

Per SKU (partition of the SKU):

    {prefix}:{pN}:SKU:stock        hash   location -> "on_hand,reserved,allocated,unsellable,incoming,count_ms"
    {prefix}:{pN}:SKU:idb:BUCKET   string open-addressing table of 8-byte event-id digests applied in
                                          that time bucket; expires when the idempotency window has passed it
    {prefix}:{pN}:SKU:idm          hash   bucket -> "slots,records" of each idb table (sizes the probe)
    {prefix}:{pN}:SKU:dlog:LOC     string 11-byte records (occurred ms, on_hand delta, source code)
    {prefix}:{pN}:SKU:cuts         hash   location -> "floor_ms|code:ms,..." (rare: lagging counts, trims)
    {prefix}:{pN}:SKU:holds        hash   reference / reservation id -> "STATE|expires_ms|channel[#attempt]|loc=res/alc;..."
    {prefix}:{pN}:SKU:ended        zset   order reference -> ms after which its ended hold may be removed

Per partition (the SKUs' partition-level structures):

    {prefix}:{pN}:dirty            zset   "SKU|LOCATION" -> first-dirty ms (the publisher's work, gathered
                                          from every partition by availability/ledger/dirty.py)
    {prefix}:{pN}:dirty:taking     zset   marks being handed to the publisher (crash-safe hand-over)
    {prefix}:{pN}:journal          stream every bucket change of the partition's SKUs (capped per partition)
    {prefix}:{pN}:oversells        stream oversell exceptions of the partition's SKUs (capped per partition)
    {prefix}:{pN}:holds:ended      zset   SKU -> earliest removal ms in its :ended (retention sweep)

Per reservation (partition of the reservation id, its own hash, not a SKU's):

    {prefix}:{pN}:resv:ID          hash   reservation header / intent record (doc, st, own, dl)
    {prefix}:{pN}:resv:expiry      zset   id -> expires ms (TTL sweep)
    {prefix}:{pN}:resv:pending     zset   id -> lease deadline ms (recovery sweep)
    {prefix}:{pN}:resv:ended       zset   id -> ended ms (retention sweep)

Per stream partition (the ingest streams, availability/ingest/streams.py; S of them,
`AVAILABILITY_PARTITIONS`, a divisor of the ledger's count):

    {prefix}:events:{pN}           stream stream partition N's canonical events (consumer group `ledger`)

Its hash tag is ledger partition N's, so the stream lives in the slot of the ledger
partition of the same number. With S equal to the ledger's count that is the only ledger
partition the stream feeds: a consumer of partition N reads and writes slot(N) alone. With
S smaller, stream N feeds the ledger partitions N, N+S, N+2S, ... and shares a slot with the
first. Before this layout the streams were `{prefix}:events:N` (no tag);
`availability ledger migrate-layout` moves what is still on them (`legacy_event_stream`).

The flows' keys (named here, used by availability/flows/inventory/state.py): a flow's
queue that belongs to no SKU takes the partition of its name (`queue_head`: one shop's push
queue is one slot), a flow's per-SKU key the SKU's (`sku_key`), a per-partition index the
partition's (`partition_key`). docs/shopify-push.md lists the push's.

Global: `{prefix}:layout` (hash: partitions, version). The sweeps, the publisher's gather,
the oversell listing and the journal reader iterate `range(partitions)`.

Group commit (reserve_group.lua) decides one SKU's one-SKU reservations in one call, which
names each request's header (the id's partition) beside the SKU's keys. On a single Redis
that is allowed; with `cluster=True` only requests whose id falls in the SKU's partition
are grouped (the others take the intent protocol, whose every step is single-slot).

The layout before partitions (`{prefix}:{SKU}:stock`, global `{prefix}:dirty`, ...) is
`LegacyKeyLayout`; `availability ledger migrate-layout` moves a ledger from it.
"""

from __future__ import annotations

import zlib

#: layout version recorded in `{prefix}:layout` (1 = the per-SKU `{SKU}` layout, no record)
LAYOUT_VERSION = 2
DEFAULT_PARTITIONS = 64


def partition_of(name: str, partitions: int) -> int:
    """Stable across processes, machines and Python versions (unlike `hash()`)."""
    return zlib.crc32(name.encode()) % partitions


_PARTITION_KINDS = {"dirty": "dirty", "dirty:taking": "dirty_taking", "journal": "journal", "oversells": "oversells",
                    "holds:ended": "holds_ended", "resv:expiry": "resv_expiry", "resv:pending": "resv_pending",
                    "resv:ended": "resv_ended"}


def event_stream(prefix: str, partition: int) -> str:
    """Stream partition N's ingest stream, `{prefix}:events:{pN}` (ledger partition N's tag)."""
    return f"{prefix}:events:{{p{partition}}}"


def legacy_event_stream(prefix: str, partition: int) -> str:
    """The untagged name stream partition N had before (moved by `ledger migrate-layout`)."""
    return f"{prefix}:events:{partition}"


def stream_id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as what orders it (ids compare as numbers, not text)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def event_stream_partition(name: str) -> int | None:
    """The partition number of an ingest stream name, tagged or legacy (a dead letter keeps
    the name its entry came from); None for any other name."""
    _, found, tail = name.rpartition(":events:")
    if not found:
        return None
    if tail.startswith("{p") and tail.endswith("}"):
        tail = tail[2:-1]
    return int(tail) if tail.isdigit() else None


class LayoutMismatch(RuntimeError):
    """Redis records another partition count (or an older layout) than this process uses."""


class KeyLayout:
    __slots__ = ("prefix", "partitions", "cluster", "_tags")

    def __init__(self, prefix: str = "av", partitions: int = DEFAULT_PARTITIONS, *, cluster: bool = False) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.prefix = prefix
        self.partitions = partitions
        #: Redis Cluster: never name two partitions in one script (group commit narrows)
        self.cluster = cluster
        self._tags = [f"{prefix}:{{p{p}}}:" for p in range(partitions)]

    # --- partitions --------------------------------------------------------------------------

    def partition(self, sku: str) -> int:
        return zlib.crc32(sku.encode()) % self.partitions

    def reservation_partition(self, reservation_id: str) -> int:
        return zlib.crc32(reservation_id.encode()) % self.partitions

    def tag(self, partition: int) -> str:
        """`{prefix}:{pN}:`, the start of every key of partition N."""
        return self._tags[partition]

    def range(self) -> range:
        return range(self.partitions)

    @property
    def layout(self) -> str:
        return f"{self.prefix}:layout"

    # --- per SKU -----------------------------------------------------------------------------

    def _sku(self, sku: str) -> str:
        return self._tags[zlib.crc32(sku.encode()) % self.partitions] + sku

    def sku_head(self, sku: str) -> str:
        """`{prefix}:{pN}:SKU`, the start of every key of the SKU."""
        return self._sku(sku)

    #: the per-SKU keys apply_batch.lua takes, in its order, after the SKU's head
    BATCH_SKU_SUFFIXES = (":stock", ":idm", ":holds", ":cuts", ":ended")

    def stock(self, sku: str) -> str:
        return self._sku(sku) + ":stock"

    def idempotency_meta(self, sku: str) -> str:
        return self._sku(sku) + ":idm"

    def idempotency_bucket(self, sku: str, bucket: int) -> str:
        return f"{self._sku(sku)}:idb:{bucket}"

    def delta_log(self, sku: str, location: str) -> str:
        return f"{self._sku(sku)}:dlog:{location}"

    def count_cuts(self, sku: str) -> str:
        return self._sku(sku) + ":cuts"

    def holds(self, sku: str) -> str:
        return self._sku(sku) + ":holds"

    def ended_holds(self, sku: str) -> str:
        return self._sku(sku) + ":ended"

    def stock_pattern(self, partition: int | None = None) -> str:
        """SCAN pattern of stock hashes (of one partition, or all)."""
        head = self._tags[partition] if partition is not None else f"{self.prefix}:{{p*}}:"
        return head + "*:stock"

    def sku_of_stock_key(self, key: str) -> str:
        # "{prefix}:{pN}:SKU:stock" -> SKU
        start = key.index("}:", len(self.prefix) + 2) + 2
        return key[start : -len(":stock")]

    def kind(self, key: str) -> str:
        """What a key of this layout holds: stock, idb, idm, dlog, cuts, holds, ended, seen (per
        SKU), dirty, dirty_taking, journal, oversells, holds_ended, resv_expiry,
        resv_pending, resv_ended, resv_header, layout; '' for a key of no family of this
        layout (an old-layout key such as `{prefix}:{p5}:stock` of a SKU named p5 included)."""
        if key == self.layout:
            return "layout"
        head = f"{self.prefix}:{{p"
        if not key.startswith(head):
            return ""
        close = key.find("}:", len(head))
        if close < 0 or not key[len(head) : close].isdigit() or int(key[len(head) : close]) >= self.partitions:
            return ""
        rest = key[close + 2 :]
        if rest in _PARTITION_KINDS:
            return _PARTITION_KINDS[rest]
        if rest.startswith("resv:"):
            return "resv_header"
        for marker in (":idb:", ":dlog:"):
            if marker in rest:
                return marker.strip(":")
        for family in ("stock", "idm", "cuts", "holds", "ended", "seen"):
            if rest.endswith(":" + family):
                return family
        return ""

    # --- per partition -----------------------------------------------------------------------

    def dirty(self, partition: int) -> str:
        return self._tags[partition] + "dirty"

    def dirty_taking(self, partition: int) -> str:
        return self._tags[partition] + "dirty:taking"

    def journal(self, partition: int) -> str:
        return self._tags[partition] + "journal"

    def oversells(self, partition: int) -> str:
        return self._tags[partition] + "oversells"

    def ended_holds_index(self, partition: int) -> str:
        return self._tags[partition] + "holds:ended"

    def dirty_of(self, sku: str) -> str:
        return self.dirty(self.partition(sku))

    def journal_of(self, sku: str) -> str:
        return self.journal(self.partition(sku))

    def oversells_of(self, sku: str) -> str:
        return self.oversells(self.partition(sku))

    def ended_holds_index_of(self, sku: str) -> str:
        return self.ended_holds_index(self.partition(sku))

    def all_dirty(self) -> list[str]:
        return [self.dirty(p) for p in self.range()]

    def all_journals(self) -> list[str]:
        """Every partition's journal stream (the journal reader iterates these)."""
        return [self.journal(p) for p in self.range()]

    def all_oversells(self) -> list[str]:
        return [self.oversells(p) for p in self.range()]

    # --- per reservation ---------------------------------------------------------------------

    def reservation(self, reservation_id: str) -> str:
        return self._tags[self.reservation_partition(reservation_id)] + "resv:" + reservation_id

    def expiry(self, partition: int) -> str:
        return self._tags[partition] + "resv:expiry"

    def pending(self, partition: int) -> str:
        return self._tags[partition] + "resv:pending"

    def ended(self, partition: int) -> str:
        return self._tags[partition] + "resv:ended"

    def expiry_of(self, reservation_id: str) -> str:
        return self.expiry(self.reservation_partition(reservation_id))

    def pending_of(self, reservation_id: str) -> str:
        return self.pending(self.reservation_partition(reservation_id))

    def ended_of(self, reservation_id: str) -> str:
        return self.ended(self.reservation_partition(reservation_id))

    def may_group(self, reservation_id: str, sku: str) -> bool:
        """May group commit name this reservation's header beside the SKU's keys?"""
        return not self.cluster or self.reservation_partition(reservation_id) == self.partition(sku)

    # --- the flows' keys (the Shopify push: availability/flows/inventory/state.py) ------------

    def queue_partition(self, name: str) -> int:
        """The partition of a flow's work queue that belongs to no SKU (one shop's push: its
        dirty and urgent sets, SKU leases, outbox, dead letters, ...): CRC-32 of its name."""
        return zlib.crc32(name.encode()) % self.partitions

    def queue_head(self, name: str) -> str:
        """`{prefix}:{pQ}:NAME`, the start of every key of that queue: all in one slot, so
        a claim (marks, urgent set and leases in one script) or an outbox take-over never
        names two slots."""
        return self._tags[self.queue_partition(name)] + name

    def sku_key(self, sku: str, name: str) -> str:
        """`{prefix}:{pN}:SKU:NAME`: a flow's own key of one SKU, in the SKU's slot (the push's
        last known Shopify values and its sales in flight); NAME must not be a ledger family."""
        return self._sku(sku) + ":" + name

    def partition_key(self, partition: int, name: str) -> str:
        """`{prefix}:{pN}:NAME`: a flow's per-partition index, written in the same transaction
        as a SKU key of that partition (the push's index of SKUs with sales held)."""
        return self._tags[partition] + name


class LegacyKeyLayout:
    """The layout before partitions (layout version 1), read by the migration only."""

    def __init__(self, prefix: str = "av") -> None:
        self.prefix = prefix

    def sku_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:*"

    def split_sku_key(self, key: str) -> tuple[str, str] | None:
        """"{prefix}:{SKU}:rest" -> (SKU, rest), or None for a key of another family."""
        head = f"{self.prefix}:{{"
        if not key.startswith(head):
            return None
        end = key.find("}:", len(head))
        if end < len(head):
            return None
        return key[len(head) : end], key[end + 2 :]

    def reservation_pattern(self) -> str:
        return f"{self.prefix}:resv:{{*}}"

    def reservation_id(self, key: str) -> str:
        return key[len(self.prefix) + len(":resv:{") : -1]

    @property
    def global_zsets(self) -> dict[str, str]:
        """Old global zset -> what its members are ('pair' SKU|LOC, 'sku', 'reservation')."""
        p = self.prefix
        return {
            f"{p}:dirty": "pair",
            f"{p}:holds:ended": "sku",
            f"{p}:resv:expiry": "reservation",
            f"{p}:resv:pending": "reservation",
            f"{p}:resv:ended": "reservation",
        }

    @property
    def streams(self) -> dict[str, str]:
        return {f"{self.prefix}:journal": "journal", f"{self.prefix}:oversells": "oversells"}
