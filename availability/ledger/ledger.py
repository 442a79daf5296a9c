"""The stock ledger on Redis: applies events, holds reservations, answers stock reads.

Every write is one Lua script (scripts/*.lua) that changes the buckets together with the
idempotency record, the journal entry and the publisher's dirty mark, so a crash can
never leave half an event applied. Batches go out as one pipeline of EVALSHA calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from availability.domain.ats import Buckets, basis_points
from availability.domain.errors import (
    InsufficientStock,
    InvalidReservation,
    ReservationConflict,
    ReservationInProgress,
    ReservationTimeout,
    UnknownChannel,
    UnknownReservation,
)
from availability.domain.events import ABSOLUTE_TYPES, StockEvent, event_digest, source_code, to_epoch_ms
from availability.domain.reservations import (
    HOLD_STATES,
    Allocation,
    Reservation,
    ReservationRequest,
    ReservedLine,
    ShortLine,
    check_request,
)
from availability.domain.rules import RuleBook
from availability.ledger.groupcommit import GroupCommitter
from availability.ledger.keys import (
    LAYOUT_VERSION,
    KeyLayout,
    LayoutMismatch,
    LegacyKeyLayout,
    legacy_event_stream,
    stream_id_order,
)
from availability.ledger.metrics import count_oversells

SCRIPT_NAMES = ("apply_event", "apply_batch", "reserve", "settle", "intent", "reserve_group", "forget_holds")

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_buckets(raw: bytes | str) -> Buckets:
    if isinstance(raw, bytes):
        raw = raw.decode()
    oh, rs, al, un, inc, _count = raw.split(",")
    return Buckets(int(oh), int(rs), int(al), int(un), int(inc))


@dataclass(frozen=True, slots=True)
class ApplyResult:
    event_id: str
    #: applied | duplicate | stale_count | count_too_old | inside_count | released_before |
    #: recorded, or "error" when the script refused the event (nothing was written)
    status: str
    buckets: Buckets | None
    #: units the event sold beyond what the location had (an oversell exception), else 0
    units_short: int = 0
    #: the script's reason when status is "error" (e.g. "corrupt_stock: SKU|DC1 = ...")
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Oversell:
    """A channel sold more than the ledger had at a location: someone has to act."""

    event_id: str
    order: str
    sku: str
    location: str
    units_short: int
    type: str
    source: str
    channel: str
    at_ms: int
    buckets_after: Buckets


class ReservationHeader(msgspec.Struct, array_like=True):
    """What a reservation asked for; where it is held lives in the per-SKU holds."""

    channel: str
    lines: list[dict]
    created_at_ms: int
    expires_at_ms: int
    skus: list[str]


@dataclass(frozen=True, slots=True)
class LedgerLimits:
    #: how long an event_id is remembered (a duplicate after this is applied again)
    idempotency_window_ms: int = 7 * 24 * 3600 * 1000
    #: journal stream cap (approximate, MAXLEN ~)
    journal_cap: int = 1_000_000
    #: on_hand deltas kept per (SKU, location) between counts, for late counts
    delta_log_cap: int = 10_000
    #: idempotency records are kept in this many time buckets per window (half a window
    #: each): a record lives at least the window and at most one bucket longer. Each event
    #: probes buckets + 1 tables, so more, narrower buckets cost lookups (7, a day each,
    #: made the script about 1.6x the cost of 2 in a side-by-side run)
    idempotency_buckets: int = 2
    #: oversell exceptions stream cap (approximate, MAXLEN ~)
    oversell_cap: int = 100_000
    #: per source, how far a count (snapshot, cycle count) may lag that source's postings
    #: when the count does not say (`seen_through`): its deltas that happened less than this
    #: before the count's time are taken as not inside it. Empty: counts saw everything.
    count_lag_ms: dict[str, int] | None = None
    #: a hold that order events ended (released, or nothing left after fulfil/ship) is
    #: removed this long after it ended; None: the reservations' retention grace
    #: (`Ledger` fills it in). A release that came before its reserve is kept at least the
    #: idempotency window (`tombstone_keep_ms`), so the late reserve still stays released.
    hold_retention_ms: int | None = None

    def hold_grace_ms(self) -> int:
        return self.hold_retention_ms if self.hold_retention_ms is not None else 24 * 3600 * 1000

    def tombstone_keep_ms(self) -> int:
        return max(self.hold_grace_ms(), self.idempotency_window_ms)

    def bucket_width_ms(self) -> int:
        return max(1, self.idempotency_window_ms // max(1, self.idempotency_buckets))

    def idempotency_buckets_at(self, at_ms: int) -> tuple[list[int], int]:
        """Bucket ids to look in, newest first, and when the newest one expires."""
        width = self.bucket_width_ms()
        newest = at_ms // width
        ids = list(range(newest, newest - self.idempotency_buckets - 1, -1))
        return ids, (newest + 1) * width + self.idempotency_window_ms


def count_cutoffs(event: StockEvent, lag_ms: dict[str, int] | None) -> str:
    """A count's per-source cutoffs as the script takes them ("code:ms,..."), '' if none.

    A source's deltas at or before its cutoff are inside the count; later ones (up to the
    count's own time) were missed by it and stay on top of it.
    """
    if event.type not in ABSOLUTE_TYPES or not (lag_ms or event.seen_through):
        return ""
    at = event.occurred_ms
    cuts: dict[int, int] = {}
    for source, lag in (lag_ms or {}).items():
        cuts[source_code(source)] = max(0, at - lag)
    for source, moment in (event.seen_through or {}).items():
        cuts[source_code(source)] = max(0, min(at, to_epoch_ms(moment)))
    return ",".join(f"{code}:{ms}" for code, ms in sorted(cuts.items()) if ms < at)


def apply_call(keys: KeyLayout, limits: LedgerLimits, event: StockEvent, at_ms: int,
               buckets: tuple[list[int], int] | None = None) -> tuple[list, list]:
    """KEYS and ARGV of apply_event.lua for one event (fastapply.py encodes the same)."""
    sku = event.sku
    ids, expires = buckets or limits.idempotency_buckets_at(at_ms)
    script_keys = [
        keys.stock(sku), keys.idempotency_meta(sku), keys.delta_log(sku, event.location), keys.holds(sku),
        keys.dirty_of(sku), keys.journal_of(sku), keys.oversells_of(sku), keys.count_cuts(sku),
        keys.ended_holds(sku), keys.ended_holds_index_of(sku),
        *(keys.idempotency_bucket(sku, b) for b in ids),
    ]
    argv = [
        event.event_id, event_digest(event.event_id), event.type, event.reason or "", sku, event.location,
        event.quantity, event.occurred_ms, event.reference or "", event.channel or "", event.source,
        source_code(event.source), count_cutoffs(event, limits.count_lag_ms), at_ms, expires,
        limits.journal_cap, limits.delta_log_cap, limits.oversell_cap,
        limits.hold_grace_ms(), limits.tombstone_keep_ms(), *ids,
    ]
    return script_keys, argv


#: events of one partition per apply_batch.lua call: bounds how long one call holds Redis
#: (about 15 us an event) while amortising the per-call cost
BATCH_PER_CALL = 256


def partition_batches(keys: KeyLayout, events: Sequence[StockEvent], per_call: int = BATCH_PER_CALL) -> list[list[int]]:
    """Indexes of `events` grouped by partition, in order within each, at most `per_call` a
    group. One SKU is in one partition, so each SKU's events keep their order."""
    groups: dict[int, list[int]] = {}
    out: list[list[int]] = []
    for i, event in enumerate(events):
        p = keys.partition(event.sku)
        group = groups.get(p)
        if group is None or len(group) >= per_call:
            group = groups[p] = []
            out.append(group)
        group.append(i)
    return out


def batch_call(keys: KeyLayout, limits: LedgerLimits, events: Sequence[StockEvent], at_ms: int,
               buckets: tuple[list[int], int] | None = None) -> tuple[list[str], list]:
    """KEYS and ARGV of apply_batch.lua for events of one partition (in order)."""
    ids, expires = buckets or limits.idempotency_buckets_at(at_ms)
    partition = keys.partition(events[0].sku)
    script_keys: list[str] = [
        keys.dirty(partition), keys.journal(partition), keys.oversells(partition), keys.ended_holds_index(partition),
    ]
    base_of: dict[str, int] = {}
    dlog_of: dict[tuple[str, str], int] = {}
    for event in events:
        sku = event.sku
        if sku not in base_of:
            base_of[sku] = len(script_keys) + 1
            script_keys += (keys.stock(sku), keys.idempotency_meta(sku), keys.holds(sku), keys.count_cuts(sku),
                            keys.ended_holds(sku), *(keys.idempotency_bucket(sku, b) for b in ids))
    for event in events:
        pair = (event.sku, event.location)
        if pair not in dlog_of:
            dlog_of[pair] = len(script_keys) + 1
            script_keys.append(keys.delta_log(*pair))
    argv: list = [at_ms, expires, limits.journal_cap, limits.delta_log_cap, limits.oversell_cap,
                  limits.hold_grace_ms(), limits.tombstone_keep_ms(), len(ids), *ids]
    for event in events:
        argv += (
            base_of[event.sku], dlog_of[(event.sku, event.location)],
            event.event_id, event_digest(event.event_id), event.type, event.reason or "", event.sku, event.location,
            event.quantity, event.occurred_ms, event.reference or "", event.channel or "", event.source,
            source_code(event.source), count_cutoffs(event, limits.count_lag_ms),
        )
    return script_keys, argv


def keys_of_intent(keys: KeyLayout, reservation_id: str) -> tuple[str, str, str, str]:
    """intent.lua's KEYS: the header and its partition's pending, expiry and ended indexes."""
    p = keys.reservation_partition(reservation_id)
    return keys.reservation(reservation_id), keys.pending(p), keys.expiry(p), keys.ended(p)


#: Redis errors that say "not now" (full, read-only replica, failing over), not "bad event"
TRANSIENT_REPLY_PREFIXES = ("OOM", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "BUSY")


def script_error(reply: Exception) -> str:
    """The reason an apply_event.lua error reply gives, without Redis's wrapping."""
    text = str(reply)
    for prefix in ("ERR ", "Error running script"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.strip()


def parse_apply_reply(event: StockEvent, reply) -> ApplyResult:
    """One apply_event.lua reply (or its error) as an ApplyResult; transient errors raise.
    apply_batch.lua's per-event {'error', reason} is read as that error reply."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] in (b"error", "error"):
        reply = ResponseError(_s(reply[1]))
    if isinstance(reply, Exception):
        if isinstance(reply, ResponseError) and not str(reply).startswith(TRANSIENT_REPLY_PREFIXES):
            return ApplyResult(event.event_id, "error", None, error=script_error(reply))
        raise reply
    status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if len(reply) == 1:
        return ApplyResult(event.event_id, status, None)
    return ApplyResult(event.event_id, status, Buckets(*(int(x) for x in reply[1:6])), int(reply[6]))


def scatter_batch_replies(events: Sequence[StockEvent], groups: Sequence[Sequence[int]], replies: Sequence) -> list[ApplyResult]:
    """apply_batch.lua replies (one list per group, or one error for a whole call) back in
    the events' order. A whole call's error is each of its events' error (transient: raises)."""
    results: list[ApplyResult | None] = [None] * len(events)
    for group, reply in zip(groups, replies):
        if isinstance(reply, Exception) or len(reply) != len(group):
            problem = reply if isinstance(reply, Exception) else ResponseError(f"apply_batch answered {len(reply)} of {len(group)}")
            for i in group:
                results[i] = parse_apply_reply(events[i], problem)
            continue
        for i, one in zip(group, reply):
            results[i] = parse_apply_reply(events[i], one)
    return results  # type: ignore[return-value]


class PartitionedApply:
    """`apply_batch` by `Ledger.apply_partitioned` (one apply_batch.lua call per partition
    group), for a caller that takes an applier: the consumer on Redis Cluster, where the
    client routes each call by its first key to the partition's slot."""

    def __init__(self, ledger: Ledger, per_call: int = BATCH_PER_CALL) -> None:
        self.ledger = ledger
        self.per_call = per_call

    async def apply_batch(self, events: Sequence[StockEvent], *, at_ms: int | None = None) -> list[ApplyResult]:
        return await self.ledger.apply_partitioned(events, at_ms=at_ms, per_call=self.per_call)

    async def close(self) -> None:
        """Nothing of its own to close (the ledger's client is the runtime's)."""


@dataclass(frozen=True, slots=True)
class ReservationPolicy:
    #: TTL of a reservation that names none (ttl_seconds absent or null); 0 = never
    default_ttl_ms: int = 900 * 1000
    #: an attempt must go from intent to finish within this; past it, its holds are refused
    #: and recovery rolls back what it held (the bound on a crashed attempt's holds)
    lease_ms: int = 5000
    #: ended reservations (committed, released, expired) keep their holds and header this
    #: long (replays and late cancels still find them), then retention removes them
    retention_ms: int = 24 * 3600 * 1000
    #: group commit: one-SKU reservations of a SKU arriving while a call for it is in flight
    #: are settled together in one script call (reserve_group.lua), up to this many a call;
    #: 0 = off (every reservation takes the per-SKU intent protocol)
    group_max: int = 256
    #: test-only crash window: pause "after-intent", "after-holds", "before-group" or
    #: "after-group" for this long
    debug_pause_at: str | None = None
    debug_pause_seconds: float = 0.0


class Ledger:
    def __init__(
        self,
        redis: Redis,
        *,
        keys: KeyLayout | None = None,
        limits: LedgerLimits | None = None,
        reservations: ReservationPolicy | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys or KeyLayout()
        if isinstance(redis, RedisCluster):
            # the keys live on a cluster whatever the caller said: group commit may then only
            # name headers in the SKU's own slot (KeyLayout.may_group)
            self.keys.cluster = True
        self.reservations = reservations or ReservationPolicy()
        self.limits = limits or LedgerLimits()
        if self.limits.hold_retention_ms is None:  # order-event holds: the same grace as reservations
            self.limits = dataclasses.replace(self.limits, hold_retention_ms=self.reservations.retention_ms)
        self._sources = {name: script_source(name) for name in SCRIPT_NAMES}
        self._sha: dict[str, str] = {}
        self.group = GroupCommitter(self._run_group, max_batch=max(1, self.reservations.group_max))
        #: candidate-location arguments per (SKU, channel, location), for the book they came from
        self._candidates_book: RuleBook | None = None
        self._candidates_memo: dict[tuple, tuple] = {}

    async def load_scripts(self) -> None:
        for name, source in self._sources.items():
            self._sha[name] = await self.redis.script_load(source)

    async def check_layout(self, stream_partitions: int = 0) -> None:
        """Record this ledger's partition count in Redis on first use; refuse to run on a
        ledger recorded with another count, or still in the old per-SKU layout (its data
        would look absent), or with ingest streams still under their untagged names (of the
        `stream_partitions` Redis stream partitions: their entries would never be read):
        `availability ledger migrate-layout` moves them."""
        keys = self.keys
        if stream_partitions:
            legacy_streams = [legacy_event_stream(keys.prefix, p) for p in range(stream_partitions)]
            if await self.redis.exists(*legacy_streams):
                raise LayoutMismatch(
                    f"ingest streams under {keys.prefix!r} still have their untagged names ({keys.prefix}:events:N): "
                    f"run `availability ledger migrate-layout` (writers stopped) to move their entries to "
                    f"{keys.prefix}:events:{{pN}}"
                )
        recorded = {_s(k): _s(v) for k, v in (await self.redis.hgetall(keys.layout)).items()}
        if not recorded:
            legacy = LegacyKeyLayout(keys.prefix)
            if await self.redis.exists(*legacy.streams, *legacy.global_zsets):
                raise LayoutMismatch(
                    f"the ledger under {keys.prefix!r} is in the old per-SKU key layout: run "
                    f"`availability ledger migrate-layout` (it moves it to {keys.partitions} partitions)"
                )
            await self.redis.hsetnx(keys.layout, "partitions", keys.partitions)
            await self.redis.hsetnx(keys.layout, "version", LAYOUT_VERSION)
            recorded = {_s(k): _s(v) for k, v in (await self.redis.hgetall(keys.layout)).items()}
        if int(recorded.get("partitions", 0)) != keys.partitions:
            raise LayoutMismatch(
                f"the ledger under {keys.prefix!r} has {recorded.get('partitions')} partitions and this process "
                f"uses {keys.partitions} (AVAILABILITY_LEDGER_PARTITIONS): set it to the recorded count"
            )

    async def stock_skus(self, batch: int = 2000):
        """Every SKU that has a stock hash, in lists of up to `batch` (SCAN may repeat one;
        on a cluster, every primary's)."""
        keys = self.keys
        async for names in scan_batches(self.redis, keys.stock_pattern(), batch):
            yield [keys.sku_of_stock_key(name) for name in names]

    async def scripts_loaded(self) -> bool:
        if not self._sha:
            return False
        return all(await self.redis.script_exists(*self._sha.values()))

    async def _run_pipeline(self, build) -> list:
        """Run a pipeline of EVALSHA calls, reloading scripts once if Redis lost them (restart)."""
        if not self._sha:
            await self.load_scripts()
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            try:
                return await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.load_scripts()
        raise AssertionError("unreachable")

    # --- events ----------------------------------------------------------------------------

    async def apply(self, event: StockEvent) -> ApplyResult:
        return (await self.apply_batch([event]))[0]

    async def apply_batch(self, events: Sequence[StockEvent], *, at_ms: int | None = None) -> list[ApplyResult]:
        """Apply events in order, in one pipeline (one round trip). Each is atomic by itself.

        An event the script refuses (a corrupt stored value) comes back with status "error"
        and its reason, having written nothing; the others still apply. Transient Redis
        errors (unreachable, OOM, read-only) raise: the caller retries the batch.
        """
        if not events:
            return []
        stamp = at_ms if at_ms is not None else now_ms()
        buckets = self.limits.idempotency_buckets_at(stamp)
        calls = [apply_call(self.keys, self.limits, e, stamp, buckets) for e in events]
        if not self._sha:
            await self.load_scripts()
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for script_keys, argv in calls:
                pipe.evalsha(self._sha["apply_event"], len(script_keys), *script_keys, *argv)
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                # Redis lost its script cache (restart): load and send again; the events
                # that did go in answer `duplicate`.
                await self.load_scripts()
                continue
            break
        results = [parse_apply_reply(event, reply) for event, reply in zip(events, replies)]
        count_oversells(events, results)
        return results

    async def apply_partitioned(self, events: Sequence[StockEvent], *, at_ms: int | None = None,
                                per_call: int = BATCH_PER_CALL) -> list[ApplyResult]:
        """`apply_batch`'s results for the same events, with one apply_batch.lua call per
        partition group instead of one apply_event.lua call per event (one pipeline)."""
        if not events:
            return []
        stamp = at_ms if at_ms is not None else now_ms()
        buckets = self.limits.idempotency_buckets_at(stamp)
        groups = partition_batches(self.keys, events, per_call)
        calls = [batch_call(self.keys, self.limits, [events[i] for i in group], stamp, buckets) for group in groups]
        if not self._sha:
            await self.load_scripts()
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for script_keys, argv in calls:
                pipe.evalsha(self._sha["apply_batch"], len(script_keys), *script_keys, *argv)
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                await self.load_scripts()
                continue
            break
        results = scatter_batch_replies(events, groups, replies)
        count_oversells(events, results)
        return results

    async def applied(self, sku: str, event_ids: Sequence[str], *, at_ms: int | None = None) -> set[str]:
        """Which of these events of one SKU the ledger has applied inside the idempotency
        window: the same digest lookup apply_event.lua makes, read-only (the Shopify push
        asks it whether an order it noted has reached the ledger yet)."""
        if not event_ids:
            return set()
        ids, _ = self.limits.idempotency_buckets_at(now_ms() if at_ms is None else at_ms)
        metas = await self.redis.hmget(self.keys.idempotency_meta(sku), ids)
        present = [(b, int(_s(m).split(",", 1)[0])) for b, m in zip(ids, metas) if m]
        if not present:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for bucket, _slots in present:
            pipe.get(self.keys.idempotency_bucket(sku, bucket))
        tables = [(raw or b"", slots) for raw, (_b, slots) in zip(await pipe.execute(), present)]
        return {e for e in event_ids if any(_in_table(event_digest(e), t, n) for t, n in tables)}

    async def idempotency_records(self, sku: str) -> int:
        """How many idempotency records the SKU holds now (all live buckets)."""
        raw = await self.redis.hgetall(self.keys.idempotency_meta(sku))
        meta = {_s(k): _s(v) for k, v in raw.items()}
        ids, _ = self.limits.idempotency_buckets_at(now_ms())
        live = [b for b in ids if str(b) in meta]
        if not live:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for b in live:
            pipe.exists(self.keys.idempotency_bucket(sku, b))
        alive = await pipe.execute()
        # an expired table's meta field stays until the SKU's next new bucket
        return sum(int(meta[str(b)].split(",")[1]) for b, ok in zip(live, alive) if ok)

    async def oversells(self, *, limit: int = 100, before: str | None = None) -> list[tuple[str, Oversell]]:
        """Oversell exceptions, newest first: (stream id, oversell). `before` pages on."""
        top = "+"
        if before:
            # exclusive upper bound: the id just below `before` (stream ids are two u64)
            ms, _, seq = before.partition("-")
            ms_n, seq_n = min(int(ms or 0), _U64), min(int(seq or 0), _U64)
            if ms_n == 0 and seq_n == 0:
                return []
            top = f"{ms_n}-{seq_n - 1}" if seq_n else f"{ms_n - 1}-{_U64}"
        # Every partition's newest `limit` below `top`, merged newest first (stream ids are
        # Redis's ms clock, so the order across partitions is the order they were recorded).
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.all_oversells():
            pipe.xrevrange(key, max=top, min="-", count=limit)
        merged = [entry for entries in await pipe.execute() for entry in entries]
        merged.sort(key=lambda entry: _stream_id(entry[0]), reverse=True)
        out = []
        for entry_id, fields in merged[:limit]:
            f = {_s(k): _s(v) for k, v in fields.items()}
            out.append((_s(entry_id), Oversell(
                event_id=f["e"], order=f.get("o", ""), sku=f["s"], location=f["l"], units_short=int(f["u"]),
                type=f.get("t", ""), source=f.get("src", ""), channel=f.get("c", ""), at_ms=int(f["at"]),
                buckets_after=parse_buckets(f["a"] + ",-1"),
            )))
        return out

    # --- reads -----------------------------------------------------------------------------

    async def stock(self, sku: str) -> dict[str, Buckets]:
        return (await self.stock_many([sku]))[sku]

    async def stock_many(self, skus: Iterable[str]) -> dict[str, dict[str, Buckets]]:
        """Buckets of many SKUs at every location, in one round trip."""
        skus = list(dict.fromkeys(skus))
        pipe = self.redis.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(self.keys.stock(sku))
        replies = await pipe.execute()
        out: dict[str, dict[str, Buckets]] = {}
        for sku, fields in zip(skus, replies):
            out[sku] = {
                (loc.decode() if isinstance(loc, bytes) else loc): parse_buckets(raw) for loc, raw in fields.items()
            }
        return out

    async def mark_dirty(self, pairs: Iterable[tuple[str, str]], *, at_ms: int | None = None) -> int:
        """Mark (SKU, location) pairs for the publisher, keeping earlier first-dirty times."""
        stamp = at_ms if at_ms is not None else now_ms()
        by_partition: dict[int, dict[str, int]] = defaultdict(dict)
        for sku, loc in pairs:
            by_partition[self.keys.partition(sku)][f"{sku}|{loc}"] = stamp
        if not by_partition:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for partition, members in by_partition.items():
            pipe.zadd(self.keys.dirty(partition), members, nx=True)
        return sum(await pipe.execute())

    async def dirty_count(self) -> int:
        """(SKU, location) marks waiting in every partition's dirty set."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.all_dirty():
            pipe.zcard(key)
        return sum(await pipe.execute())

    async def index_count(self, index) -> int:
        """Members of a per-partition index (`keys.pending`, `keys.expiry`, ...) in all partitions."""
        pipe = self.redis.pipeline(transaction=False)
        for p in self.keys.range():
            pipe.zcard(index(p))
        return sum(await pipe.execute())

    async def forget_dirty(self) -> None:
        """Drop every dirty mark (seeding tools: what they loaded is history, not news)."""
        await self.redis.delete(*self.keys.all_dirty(), *(self.keys.dirty_taking(p) for p in self.keys.range()))

    async def journal_length(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.all_journals():
            pipe.xlen(key)
        return sum(await pipe.execute())

    async def journal_entries(self) -> list[tuple[str, dict[str, str]]]:
        """The whole journal (every partition's stream), in recorded order: (id, fields).
        Entries of one SKU keep their order (one SKU is in one partition's stream)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.all_journals():
            pipe.xrange(key)
        merged = [
            (_s(entry_id), {_s(k): _s(v) for k, v in fields.items()})
            for entries in await pipe.execute() for entry_id, fields in entries
        ]
        merged.sort(key=lambda entry: _stream_id(entry[0]))
        return merged

    async def _due(self, index, low, high, limit: int) -> list[str]:
        """Members scored low..high of one per-partition index, across partitions (one
        pipeline; at most `limit` in all, taken from each partition in turn)."""
        pipe = self.redis.pipeline(transaction=False)
        for p in self.keys.range():
            pipe.zrangebyscore(index(p), low, high, start=0, num=limit)
        found = [[_s(r) for r in rows] for rows in await pipe.execute()]
        out: list[str] = []
        for rows in found:
            out += rows[: limit - len(out)]
            if len(out) >= limit:
                break
        return out

    # --- reservations ----------------------------------------------------------------------
    #
    # Intent first (docs/architecture.md, "Reservation protocol"): an attempt writes its
    # intent record (intent.lua begin: header, pending with a lease, TTL index), then holds
    # each SKU (reserve.lua, one script per SKU, each hold tagged with the attempt token and
    # refused once the lease has passed), then finishes (intent.lua finish) or, when a line
    # is short, rolls back its own holds and drops the intent. An attempt that dies in
    # between leaves a pending intent that `recover_abandoned` rolls back after the lease.

    async def reserve(self, request: ReservationRequest, book: RuleBook, *, at_ms: int | None = None) -> Reservation:
        """Hold every line or none. Raises InsufficientStock naming the short lines."""
        reservation, _created = await self.reserve_or_replay(request, book, at_ms=at_ms)
        return reservation

    async def reserve_or_replay(
        self, request: ReservationRequest, book: RuleBook, *, at_ms: int | None = None
    ) -> tuple[Reservation, bool]:
        """`reserve`, also saying whether this call made the hold (True) or replayed an
        earlier identical request (False)."""
        check_request(request)
        channel = request.channel
        if channel not in book.channels:
            raise UnknownChannel(f"unknown channel {channel!r}", channel=channel)
        sellable = book.channel_locations(channel)
        everywhere = book.sells_everywhere(channel)
        stamp = at_ms if at_ms is not None else now_ms()
        policy = self.reservations
        ttl_ms = policy.default_ttl_ms if request.ttl_seconds is None else request.ttl_seconds * 1000
        expires = stamp + ttl_ms if ttl_ms else 0

        by_sku: dict[str, list[int]] = defaultdict(list)
        for index, line in enumerate(request.lines):
            if line.location is not None and line.location not in sellable and not (
                everywhere and line.location not in book.locations
            ):
                raise InvalidReservation(
                    f"line {index}: channel {channel!r} does not sell from location {line.location!r}",
                    location=line.location,
                )
            by_sku[line.sku].append(index)
        skus = list(by_sku)
        rid = request.reservation_id
        # The lines go in as structs: msgspec writes a ReservationLine as the same JSON object
        # its to_builtins dict would make (read back as dicts), without building the dicts
        # (about 1.4 us a reservation on group commit's hot path)
        doc = msgspec.json.encode(ReservationHeader(channel, request.lines, stamp, expires, skus))

        # 0. one SKU: group commit (header, hold and finish in one atomic call, batched with
        # the SKU's other reservations); what it cannot decide alone comes back "again"
        if len(skus) == 1 and policy.group_max and self.keys.may_group(rid, skus[0]):
            sku = skus[0]
            lines = [
                (line.quantity, self._candidates(book, sku, line.location, channel, sellable, everywhere))
                for line in request.lines
            ]
            reply = await self.group.submit(sku, (rid, channel, expires, doc, stamp, lines))
            kind = _s(reply[0])
            if kind == "held":
                return Reservation(
                    reservation_id=rid,
                    channel=channel,
                    status="held",
                    lines=[
                        ReservedLine(line.sku, line.quantity, allocs)
                        for line, allocs in zip(request.lines, _held_allocations(reply, len(request.lines)))
                    ],
                    expires_at_ms=expires or None,
                    created_at_ms=stamp,
                ), True
            if kind == "short":
                shorts = [
                    ShortLine(sku, int(reply[k + 1]), int(reply[k + 2]), request.lines[int(reply[k]) - 1].location)
                    for k in range(1, len(reply), 3)
                ]
                raise _insufficient(shorts)
        token = secrets.token_hex(4)

        # 1. the intent, before anything is held
        deadline = 0
        for _attempt in (1, 2):
            verdict = await self._intent("begin", rid, token, policy.lease_ms, doc, expires)
            kind = _s(verdict[0])
            if kind == "new":
                deadline = int(verdict[1])
                break
            if kind == "exists":
                header = msgspec.json.decode(verdict[1], type=ReservationHeader)
                replayed = await self._replay(request, header)
                if replayed is not None:
                    return replayed, False
                # a finished header with no hold at all: a one-SKU attempt that was short
                # and died before dropping its header; drop it and begin afresh
                await self._intent("drop", rid, _s(verdict[2]))
                continue
            if kind == "busy":
                raise _in_progress(rid, int(verdict[1]))
            # stale: an earlier attempt under this id died (or ran out of time) before it
            # finished; roll it back here rather than wait for the sweep, then begin again
            await self._recover([rid])
        else:
            raise _in_progress(rid, policy.lease_ms)
        await self._debug_pause("after-intent")

        # 2. the holds, one single-SKU script each
        def build(pipe):
            for sku in skus:
                args: list = [rid, stamp, expires, channel, sku, self.limits.journal_cap, len(by_sku[sku]), token, deadline]
                for index in by_sku[sku]:
                    line = request.lines[index]
                    args.append(line.quantity)
                    args += self._candidates(book, sku, line.location, channel, sellable, everywhere)
                pipe.evalsha(
                    self._sha["reserve"], 4, self.keys.stock(sku), self.keys.holds(sku), self.keys.dirty_of(sku),
                    self.keys.journal_of(sku), *args,
                )

        # (A one-SKU reservation that group commit hands back, a replay or a retry, finishes
        # in its own round trip after the hold: a refused hold leaves a pending intent, never
        # a finished header with nothing under it, so a crash there is the recovery sweep's.)
        try:
            replies = await self._run_pipeline(build)
        except BaseException:
            # Which holds landed is unknown: roll back whatever this attempt holds. If that
            # fails too, the pending intent is rolled back by the sweep after the lease.
            await self._abandon_quietly(rid, token, skus, stamp)
            raise
        await self._debug_pause("after-holds")

        held_now: list[str] = []
        shorts: list[ShortLine] = []
        taken: dict[str, str] = {}
        late = False
        placed: dict[int, list[Allocation]] = {}
        for sku, reply in zip(skus, replies):
            kind = _s(reply[0])
            if kind == "held":
                held_now.append(sku)
                for index, allocs in zip(by_sku[sku], _held_allocations(reply, len(by_sku[sku]))):
                    placed[index] = allocs
            elif kind == "exists":
                taken[sku] = _s(reply[1])
            elif kind == "late":
                late = True
            else:  # short
                for k in range(1, len(reply), 3):
                    index = by_sku[sku][int(reply[k]) - 1]
                    line = request.lines[index]
                    shorts.append(ShortLine(sku, int(reply[k + 1]), int(reply[k + 2]), line.location))

        # 3. finish, or undo: the answer and the ledger agree either way
        if not (shorts or taken or late):
            finished = await self._intent("finish", rid, token)
            if _s(finished[0]) == "ok":
                return Reservation(
                    reservation_id=rid,
                    channel=channel,
                    status="held",
                    lines=[ReservedLine(line.sku, line.quantity, placed[index]) for index, line in enumerate(request.lines)],
                    expires_at_ms=expires or None,
                    created_at_ms=stamp,
                ), True
            late = True  # the lease ran out and recovery took the intent over
        await self._abandon(rid, token, held_now, stamp)
        if shorts:
            raise _insufficient(shorts)
        if taken:
            # The id has a hold that no header explains: released before it arrived (an
            # order event), or left from a reservation whose header retention removed.
            state = HOLD_STATES.get(next(iter(taken.values())), "in use")
            raise ReservationConflict(f"reservation {rid!r} is {state}", reservation_id=rid)
        raise ReservationTimeout(
            f"reservation {rid!r} took longer than its {policy.lease_ms} ms lease; nothing is held, retry",
            reservation_id=rid,
        )

    def _candidates(
        self, book: RuleBook, sku: str, location: str | None, channel: str, sellable, everywhere: bool
    ) -> tuple:
        """A line's candidate locations with their terms, as reserve.lua and
        reserve_group.lua read them: (count, per candidate: location, terms...). Memoised
        per book: the same tuple object for the same (SKU, channel, location), which lets a
        batch send each distinct set once."""
        if book is not self._candidates_book or len(self._candidates_memo) > 8192:
            self._candidates_book = book
            self._candidates_memo = {}
        memo_key = (sku, channel, location)
        found = self._candidates_memo.get(memo_key)
        if found is not None:
            return found
        candidates = (location,) if location else sellable
        # "*" stands for the ledger's locations that master data does not list yet; rules
        # can only reach them through non-location selectors, so one set of terms serves them all.
        wildcard = everywhere and not location
        args: list = [len(candidates) + wildcard]
        for loc in candidates:
            args += _candidate_args(book, sku, loc, channel)
        if wildcard:
            args += _candidate_args(book, sku, UNLISTED_LOCATION, channel, label="*")
        found = self._candidates_memo[memo_key] = tuple(args)
        return found

    async def _run_group(self, sku: str, entries: Sequence[tuple]) -> list:
        """One reserve_group.lua call for a batch of one-SKU reservations of `sku`."""
        keys = self.keys
        token = secrets.token_hex(4)
        set_index: dict[int, int] = {}
        set_args: list = []
        requests: list = []
        header_keys: list[str] = []
        # each distinct expiry zset once (64 partitions: a batch of 64 ids names about 40),
        # each request saying which is its own
        expiry_index: dict[str, int] = {}
        for rid, channel, expires, doc, _stamp, lines in entries:
            header_keys.append(keys.reservation(rid))
            expiry_key = keys.expiry_of(rid)
            expiry = expiry_index.get(expiry_key)
            if expiry is None:
                expiry = expiry_index[expiry_key] = len(expiry_index) + 1
            placed = []
            for quantity, candidates in lines:
                index = set_index.get(id(candidates))
                if index is None:
                    index = set_index[id(candidates)] = len(set_index) + 1
                    set_args += candidates
                placed.append((quantity, index))
            requests.append((rid, channel, str(expires), doc.decode(), placed, expiry))
        call = (
            self._sha.get("reserve_group", ""), 4 + len(expiry_index) + len(entries),
            keys.stock(sku), keys.holds(sku), keys.dirty_of(sku), keys.journal_of(sku), *expiry_index, *header_keys,
            entries[0][4], sku, self.limits.journal_cap, token, len(expiry_index), len(set_index), *set_args,
            msgspec.msgpack.encode(requests),
        )
        await self._debug_pause("before-group")
        try:
            try:  # one command, no pipeline: the batch is the amortisation
                replies = await self.redis.evalsha(*call)
            except NoScriptError:
                await self.load_scripts()
                replies = await self.redis.evalsha(self._sha["reserve_group"], *call[1:])
        except BaseException:
            # Whether the call ran is unknown: take back whatever this batch placed (its
            # token fences the rollback), so an error answer means nothing is held.
            await self._abandon_group_quietly(sku, [entry[0] for entry in entries], token, entries[0][4])
            raise
        await self._debug_pause("after-group")
        return replies

    async def _abandon_group_quietly(self, sku: str, reservation_ids: Sequence[str], token: str, stamp: int) -> None:
        try:
            await self._settle_many([(r, sku) for r in reservation_ids], "rollback", stamp, tokens=[token] * len(reservation_ids))
            await self._intents("drop", reservation_ids, token)
        except Exception:  # noqa: BLE001 - the headers then say finished: the holds stand, retries replay them
            log.warning("could not take back a failed group of %d reservations of %r", len(reservation_ids), sku)

    async def _debug_pause(self, point: str) -> None:
        # Test-only crash window (AVAILABILITY_DEBUG_RESERVE_PAUSE_AT): the crash tests
        # SIGKILL a process parked here. Off (None) in every real configuration.
        if self.reservations.debug_pause_at == point:
            print(f"debug: reservation paused {point}", file=sys.stderr, flush=True)
            await asyncio.sleep(self.reservations.debug_pause_seconds)

    async def _intent(self, action: str, reservation_id: str, *args) -> list:
        keys = self.keys
        call = (4, *keys_of_intent(keys, reservation_id), action, reservation_id, *args)
        if not self._sha:
            await self.load_scripts()
        try:  # one command, no pipeline: this is on every reservation's path
            return await self.redis.evalsha(self._sha["intent"], *call)
        except NoScriptError:
            await self.load_scripts()
            return await self.redis.evalsha(self._sha["intent"], *call)

    async def _intents(self, action: str, reservation_ids: Sequence[str], *args) -> list[list]:
        keys = self.keys

        def build(pipe):
            for reservation_id in reservation_ids:
                pipe.evalsha(
                    self._sha["intent"], 4, *keys_of_intent(keys, reservation_id), action, reservation_id, *args,
                )

        return await self._run_pipeline(build) if reservation_ids else []

    async def _abandon(self, reservation_id: str, token: str, skus: Sequence[str], stamp: int) -> None:
        """Roll back this attempt's holds, then drop its intent (only once they are back)."""
        await self._settle(reservation_id, skus, "rollback", stamp, token=token)
        await self._intent("drop", reservation_id, token)

    async def _abandon_quietly(self, reservation_id: str, token: str, skus: Sequence[str], stamp: int) -> None:
        try:
            await self._abandon(reservation_id, token, skus, stamp)
        except Exception:  # noqa: BLE001 - the sweep finishes the job after the lease
            log.warning("could not roll back reservation %r now; the recovery sweep will", reservation_id)

    async def recover_abandoned(self, *, limit: int = 500, at_ms: int | None = None) -> int:
        """Roll back attempts whose owner died (or stalled) between intent and finish, once
        their lease has passed. Returns how many were rolled back."""
        seconds, micros = await self.redis.time()
        redis_now = seconds * 1000 + micros // 1000
        due = await self._due(self.keys.pending, "-inf", redis_now, limit)
        return await self._recover(due, at_ms=at_ms) if due else 0

    async def _recover(self, reservation_ids: Sequence[str], *, at_ms: int | None = None) -> int:
        stamp = at_ms if at_ms is not None else now_ms()
        claims = await self._intents("claim", reservation_ids)
        claimed = [
            (reservation_id, msgspec.json.decode(reply[1], type=ReservationHeader), _s(reply[2]))
            for reservation_id, reply in zip(reservation_ids, claims)
            if _s(reply[0]) == "claimed"
        ]
        if not claimed:
            return 0
        work = [(reservation_id, sku, token) for reservation_id, header, token in claimed for sku in header.skus]
        await self._settle_many([(r, s) for r, s, _ in work], "rollback", stamp, tokens=[t for _, _, t in work])
        # only after every hold is back: the intent is what finds them
        drops = await self._run_pipeline(
            lambda pipe: [
                pipe.evalsha(
                    self._sha["intent"], 4, *keys_of_intent(self.keys, r), "drop", r, token,
                )
                for r, _, token in claimed
            ]
        )
        recovered = sum(1 for reply in drops if _s(reply[0]) == "dropped")
        if recovered:
            log.warning("rolled back %d reservation attempts whose owner did not finish", recovered)
        return recovered

    async def _replay(self, request: ReservationRequest, header: ReservationHeader) -> Reservation | None:
        """Same reservation id again: answer as the first time if the lines are the same.
        None when the header is a leftover with nothing held under it."""
        rid = request.reservation_id
        if header.channel != request.channel:
            raise ReservationConflict(
                f"reservation {rid!r} exists for channel {header.channel!r}", reservation_id=rid
            )
        if _units_by_sku(request.lines) != _units_by_sku(header.lines):
            raise ReservationConflict(f"reservation {rid!r} exists with other lines", reservation_id=rid)
        existing = await self.get_reservation(rid)
        if existing.status == "unknown" and not any(line.allocations for line in existing.lines):
            return None
        if existing.status in ("released", "expired"):
            raise ReservationConflict(f"reservation {rid!r} is {existing.status}", reservation_id=rid)
        return existing

    async def _settle(
        self, reservation_id: str, skus: Sequence[str], action: str, stamp: int, *, token: str = ""
    ) -> list[tuple[str, str, str]]:
        return await self._settle_many([(reservation_id, sku) for sku in skus], action, stamp, tokens=[token] * len(skus))

    async def _settle_many(
        self, holds: Sequence[tuple[str, str]], action: str, stamp: int, *, tokens: Sequence[str] | None = None
    ) -> list[tuple[str, str, str]]:
        """Run settle.lua for each (reservation id, SKU) in one pipeline; (outcome, state, body) each."""
        if not holds:
            return []
        fences = tokens if tokens is not None else [""] * len(holds)

        def build(pipe):
            for (reservation_id, sku), token in zip(holds, fences):
                pipe.evalsha(
                    self._sha["settle"], 4, self.keys.stock(sku), self.keys.holds(sku), self.keys.dirty_of(sku),
                    self.keys.journal_of(sku), reservation_id, stamp, action, sku, self.limits.journal_cap, token,
                )

        replies = await self._run_pipeline(build)
        return [(_s(r[0]), _s(r[1]), _s(r[2])) for r in replies]

    async def _header(self, reservation_id: str) -> tuple[ReservationHeader, str]:
        """The header and its intent state (P pending, H finished, K being rolled back)."""
        raw, state = await self.redis.hmget(self.keys.reservation(reservation_id), "doc", "st")
        if raw is None:
            raise UnknownReservation(f"no reservation {reservation_id!r}", reservation_id=reservation_id)
        return msgspec.json.decode(raw, type=ReservationHeader), _s(state) if state else "H"

    async def get_reservation(self, reservation_id: str) -> Reservation:
        """The reservation as the holds say now: status and where each line is held."""
        header, intent = await self._header(reservation_id)
        return await self._as_held(reservation_id, header, intent)

    async def _as_held(self, reservation_id: str, header: ReservationHeader, intent: str) -> Reservation:
        pipe = self.redis.pipeline(transaction=False)
        for sku in header.skus:
            pipe.hget(self.keys.holds(sku), reservation_id)
        holds = {sku: _s(raw) for sku, raw in zip(header.skus, await pipe.execute()) if raw}
        states = {HOLD_STATES.get(raw[0], "unknown") for raw in holds.values()}
        status = states.pop() if len(states) == 1 else ("mixed" if states else "unknown")
        if intent != "H":
            status = "pending"  # an attempt is still placing its holds (or being rolled back)
        # Hand each SKU's held units back to its lines in order (a SKU rarely has two lines).
        left = {sku: [[loc, r + a] for loc, r, a in _hold_lines(raw.split("|", 3)[3])] for sku, raw in holds.items()}
        lines = []
        for line in header.lines:
            wanted, allocations = line["quantity"], []
            for entry in left.get(line["sku"], []):
                take = min(wanted, entry[1])
                if take:
                    allocations.append(Allocation(entry[0], take))
                    entry[1] -= take
                    wanted -= take
            lines.append(ReservedLine(line["sku"], line["quantity"], allocations))
        return Reservation(
            reservation_id=reservation_id,
            channel=header.channel,
            status=status,
            lines=lines,
            expires_at_ms=header.expires_at_ms or None,
            created_at_ms=header.created_at_ms,
        )

    async def release(self, reservation_id: str, *, at_ms: int | None = None) -> Reservation:
        return await self._transition(reservation_id, "release", at_ms)

    async def commit(self, reservation_id: str, *, at_ms: int | None = None) -> Reservation:
        return await self._transition(reservation_id, "commit", at_ms)

    async def _transition(self, reservation_id: str, action: str, at_ms: int | None) -> Reservation:
        header, intent = await self._header(reservation_id)
        if intent != "H":
            # Not finished: its answer has not gone out yet, or it is being rolled back.
            raise _in_progress(reservation_id, self.reservations.lease_ms)
        stamp = at_ms if at_ms is not None else now_ms()

        # A release after a commit is a cancellation before shipment: settle.lua gives the
        # allocated units back, so there is no conflict to report for it. Either way the
        # reservation has ended (a refused commit means it was released or expired): it
        # leaves the TTL index and joins the retention list, in the same round trip.
        def build(pipe):
            for sku in header.skus:
                pipe.evalsha(
                    self._sha["settle"], 4, self.keys.stock(sku), self.keys.holds(sku), self.keys.dirty_of(sku),
                    self.keys.journal_of(sku), reservation_id, stamp, action, sku, self.limits.journal_cap, "",
                )
            pipe.zrem(self.keys.expiry_of(reservation_id), reservation_id)
            pipe.zadd(self.keys.ended_of(reservation_id), {reservation_id: stamp})

        outcomes = [_s(reply[0]) for reply in (await self._run_pipeline(build))[: len(header.skus)]]
        if action == "commit" and "already_released" in outcomes:
            raise ReservationConflict(
                f"reservation {reservation_id!r} was released or expired and cannot be committed",
                reservation_id=reservation_id,
            )
        return await self._as_held(reservation_id, header, intent)

    async def expire_due(self, *, at_ms: int | None = None, limit: int = 500) -> int:
        """Release held reservations whose TTL has passed. Returns how many expired.

        Three round trips for the whole batch (headers, settle scripts, index cleanup), so
        a flash sale's abandoned carts do not cost three round trips each.
        """
        stamp = at_ms if at_ms is not None else now_ms()
        due = await self._due(self.keys.expiry, "-inf", stamp, limit)
        if not due:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for reservation_id in due:
            pipe.hmget(self.keys.reservation(reservation_id), "doc", "st")
        headers = await pipe.execute()
        # An unfinished attempt stays listed: it finishes (and expires on a later sweep) or
        # recovery rolls it back and unlists it. A reservation without a header has nothing held.
        pending = {r for r, (raw, st) in zip(due, headers) if raw is not None and st is not None and _s(st) != "H"}
        work = [
            (reservation_id, sku)
            for reservation_id, (raw, _st) in zip(due, headers)
            if raw is not None and reservation_id not in pending
            for sku in msgspec.json.decode(raw, type=ReservationHeader).skus
        ]
        outcomes = await self._settle_many(work, "expire", stamp)
        expired_ids = {reservation_id for (reservation_id, _), outcome in zip(work, outcomes) if outcome[0] == "expired"}
        settled = [r for r in due if r not in pending]
        pipe = self.redis.pipeline(transaction=False)
        for r in settled:
            # expired, or nothing left to expire (a header with nothing held): retention's either way
            pipe.zrem(self.keys.expiry_of(r), r)
            pipe.zadd(self.keys.ended_of(r), {r: stamp})
        await pipe.execute()
        return len(expired_ids)

    async def forget_ended_holds(self, *, at_ms: int | None = None, limit: int = 200) -> int:
        """Retention of holds that order events ended (released, or all fulfilled/shipped):
        for each SKU with one due (the `holds:ended` index), remove its ended holds whose
        grace has passed. A hold that holds units again is kept. Returns how many went."""
        stamp = at_ms if at_ms is not None else now_ms()
        skus = await self._due(self.keys.ended_holds_index, "-inf", stamp, limit)
        if not skus:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for sku in skus:
            pipe.evalsha(
                self._sha["forget_holds"], 3, self.keys.holds(sku), self.keys.ended_holds(sku),
                self.keys.ended_holds_index_of(sku), sku, stamp, 1000,
            )
        return sum(int(reply[0]) for reply in await pipe.execute())

    async def forget_settled(self, *, at_ms: int | None = None, limit: int = 1000) -> int:
        """Retention: remove the holds and headers of reservations that ended more than the
        grace period ago and have nothing left on them (released, expired, fully shipped).
        A committed reservation whose allocation is not yet shipped or cancelled is kept
        and looked at again a grace period later. Returns how many were removed."""
        stamp = at_ms if at_ms is not None else now_ms()
        cutoff = stamp - self.reservations.retention_ms
        due = await self._due(self.keys.ended, "-inf", cutoff, limit)
        if not due:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for reservation_id in due:
            pipe.hget(self.keys.reservation(reservation_id), "doc")
        headers = await pipe.execute()
        work = [
            (reservation_id, sku)
            for reservation_id, raw in zip(due, headers)
            if raw is not None
            for sku in msgspec.json.decode(raw, type=ReservationHeader).skus
        ]
        # holds first: while the header is there, a crash here is retried on the next sweep
        outcomes = await self._settle_many(work, "forget", stamp)
        live = {reservation_id for (reservation_id, _), outcome in zip(work, outcomes) if outcome[0] == "kept"}
        done = [r for r in due if r not in live]
        replies = await self._intents("forget", done)
        if live:  # committed and not yet shipped, or held again: look again after another grace period
            pipe = self.redis.pipeline(transaction=False)
            for r in live:
                pipe.zadd(self.keys.ended_of(r), {r: stamp})
            await pipe.execute()
        return sum(1 for reply in replies if _s(reply[0]) == "forgotten")


def _in_table(digest: bytes, table: bytes, slots: int) -> bool:
    """Linear probe of one idempotency table, as apply_event.lua's `probe` walks it."""
    if slots < 1 or len(table) < slots * 8:
        return False  # expired (or not what its meta says: the script reports that one)
    s = int.from_bytes(digest[:4], "big") % slots
    for _ in range(slots):
        slot = table[s * 8 : s * 8 + 8]
        if slot == digest:
            return True
        if slot == b"\0" * 8:
            return False
        s = (s + 1) % slots
    return False


def _in_progress(reservation_id: str, wait_ms: int) -> ReservationInProgress:
    seconds = max(1, -(-wait_ms // 1000))
    return ReservationInProgress(
        f"reservation {reservation_id!r} is being placed or rolled back by another attempt; retry in {seconds} s",
        retry_after=seconds,
        reservation_id=reservation_id,
    )


def _held_allocations(reply, n_lines: int) -> list[list[Allocation]]:
    """reserve.lua's / reserve_group.lua's {'held', n, [n_allocs, loc, qty, ...] per line}."""
    out, pos = [], 2
    for _ in range(n_lines):
        count = int(reply[pos])
        out.append([Allocation(_s(reply[pos + 1 + 2 * k]), int(reply[pos + 2 + 2 * k])) for k in range(count)])
        pos += 1 + 2 * count
    return out


def _insufficient(shorts: Sequence[ShortLine]) -> InsufficientStock:
    detail = "not enough stock for " + ", ".join(
        f"{s.sku} (wanted {s.requested}, {s.available} available)" for s in shorts
    )
    return InsufficientStock(detail, [msgspec.to_builtins(s) for s in shorts])


def _units_by_sku(lines) -> dict[str, int]:
    units: dict[str, int] = defaultdict(int)
    for line in lines:
        sku, quantity = (line["sku"], line["quantity"]) if isinstance(line, dict) else (line.sku, line.quantity)
        units[sku] += quantity
    return dict(units)


_U64 = 2**64 - 1

#: stands in for any location the ledger has but master data does not list
UNLISTED_LOCATION = "\x00unlisted"


def _candidate_args(book: RuleBook, sku: str, location: str, channel: str, *, label: str | None = None) -> list:
    terms = book.terms(sku, location, channel)
    protections = book.protections(sku, location)
    own = next((i + 1 for i, p in enumerate(protections) if p.channel == channel), 0)
    args: list = [
        label or location,
        terms.safety_units,
        terms.buffer_units,
        basis_points(terms.buffer_percent),
        terms.threshold_units,
        own,
        len(protections),
    ]
    for p in protections:
        args += [p.units, basis_points(p.percent)]
    return args


def _hold_lines(body: str) -> list[tuple[str, int, int]]:
    """"DC1=2/0;S1=1/3" -> [("DC1", 2, 0), ("S1", 1, 3)] (location, reserved, allocated)."""
    out = []
    for part in body.split(";"):
        if part:
            loc, _, amounts = part.partition("=")
            reserved, _, allocated = amounts.partition("/")
            out.append((loc, int(reserved), int(allocated)))
    return out


def _stream_id(raw) -> tuple[int, int]:
    return stream_id_order(_s(raw))


async def scan_batches(redis: Redis, pattern: str, size: int = 2000):
    """Keys matching `pattern`, in lists of up to `size`. Through scan_iter, never a bare
    SCAN cursor: on Redis Cluster SCAN answers for one node only (a third of the keys of a
    3-primary cluster), scan_iter walks every primary."""
    batch: list[str] = []
    async for raw in redis.scan_iter(match=pattern, count=size):
        batch.append(_s(raw))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: scripts that share a library, prepended when loaded: the channel ATS arithmetic and
#: candidate parsing (ats_lib.lua), and the one-event apply (apply_lib.lua)
_LIBRARY = {"reserve": "ats_lib", "reserve_group": "ats_lib", "apply_event": "apply_lib", "apply_batch": "apply_lib"}


def script_source(name: str) -> str:
    """The Lua source Redis is given for script `name` (its library prepended)."""
    scripts = resources.files("availability.ledger").joinpath("scripts")
    source = scripts.joinpath(f"{name}.lua").read_text()
    if name in _LIBRARY:
        source = scripts.joinpath(f"{_LIBRARY[name]}.lua").read_text() + source
    return source
