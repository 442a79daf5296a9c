"""Benchmark: Redis memory the ledger keeps under a realistic traffic profile, beside the
aims (product.md: at most 200 B per (SKU, location) at rest, at most 64 B per retained
idempotency record) and beside the least a raw layout could use for the same on_hand
numbers (one hash per SKU, one integer per location), on the same server in the same run.
Prints JSON.

    python -m loadtests.bench_memory [--skus 1000] [--locations 10] [--days 7]

The profile, per (SKU, location) and per day, for `--days` days (the idempotency window is
7 days, so after 7 days every record of the run is still retained): one ERP `snapshot`
at night, one WMS `receipt`, six POS sales, one `adjustment` (damaged or found) and one
`ship` of the day's order: 10 events a pair a day, the ingest workload's kinds, each
through `Ledger.apply_batch` stamped at its day. Plus one reservation per order through
`Ledger.reserve` and `Ledger.commit` (reserve.lua / settle.lua), shipped by that `ship`.

The run's days end yesterday; then the next night's snapshot of every pair (as of 00:01
today) is applied, and the figures are taken twice: at the end of the last business day
(the daily peak: the delta logs hold the day's deltas, which a late count may still need)
and after the night's counts (at rest: each count folds the deltas before it away).

Reported, from MEMORY USAGE of every key the run wrote, by kind:
- bytes per pair: stock values, delta logs, count cutoffs, holds, reservation headers and
  their indexes. Holds and headers stay after an order is settled until retention removes
  them a grace period (24 h) later; the run sweeps as `serve` does (at each day's end and
  after the night's counts), so at rest the last day's settled orders are still there. The
  figure is given with and without them. The dirty set
  (the Shopify publisher's pending work, empty when the publisher has caught up; none
  runs here) is reported beside it, not in it.
- bytes per retained idempotency record: the digest tables and their meta / records.
- the journal, separately: an audit stream capped by entry count (`journal_cap`, default
  1,000,000), so its footprint is bytes per entry times the cap whatever the pair count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.domain.rules import Location, RuleBook
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger

DAY_MS = 86_400_000
AIM_PAIR_BYTES = 200
AIM_RECORD_BYTES = 64
EVENTS_PER_PAIR_DAY = 10


async def used_memory(redis) -> int:
    return (await redis.info("memory"))["used_memory"]


def kind_of(key: str, prefix: str) -> str:
    # stock, idb, idm, dlog, cuts, holds, journal, dirty, oversells, resv_expiry, resv_header, ...
    return KeyLayout(prefix).kind(key) or key[len(prefix) + 1:].replace(":", "_")


async def memory_by_kind(redis, prefix: str) -> tuple[dict[str, int], dict[str, int]]:
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    batch: list[str] = []

    async def flush() -> None:
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, await pipe.execute()):
            kind = kind_of(key, prefix)
            sizes[kind] += size or 0
            counts[kind] += 1
        batch.clear()

    async for raw in redis.scan_iter(match=f"{prefix}:*", count=2000):
        batch.append(raw.decode() if isinstance(raw, bytes) else raw)
        if len(batch) >= 2000:
            await flush()
    if batch:
        await flush()
    return dict(sizes), dict(counts)


def day_events(rnd: random.Random, day: int, skus: int, locs: list[str], start: datetime) -> list[StockEvent]:
    """One day of the profile, in the order the streams would carry it (sorted by time)."""
    out = []
    base = start + timedelta(days=day)
    for s in range(skus):
        sku = f"SKU-{s}"
        for i, loc in enumerate(locs):
            pair = f"{s}-{i}"

            def ev(kind: str, n: int, second: int, quantity: int, **extra) -> StockEvent:
                return StockEvent(event_id=f"{kind}:{pair}:{day}:{n}", type=kind, source=extra.pop("source"),
                                  occurred_at=base + timedelta(seconds=second), sku=sku, location=loc,
                                  quantity=quantity, **extra)

            out.append(ev("snapshot", 0, 60, 40 + rnd.randrange(20), source="erp"))
            out.append(ev("receipt", 0, 8 * 3600, 6 + rnd.randrange(6), source="wms", reference=f"PO-{day}-{s}"))
            for n in range(6):
                out.append(ev("pos_sale", n, 9 * 3600 + n * 1800 + rnd.randrange(600), 1, source="pos",
                              reference=f"T{day}-{pair}-{n}"))
            reason = "damaged" if rnd.random() < 0.5 else "found"
            out.append(ev("adjustment", 0, 15 * 3600, 1, source="wms", reason=reason))
            out.append(ev("ship", 0, 17 * 3600, 1, source="wms", reference=f"ord-{day}-{pair}"))
    out.sort(key=lambda e: e.occurred_ms)
    return out


async def measure(redis_url: str, skus: int, locations: int, days: int, *, retention: bool = True) -> dict:
    redis = make_redis(redis_url)
    pairs = skus * locations
    locs = [f"LOC-{i:03d}" for i in range(locations)]
    rnd = random.Random(7)

    # Raw layout first: the ceiling of compactness for the same on_hand numbers.
    before = await used_memory(redis)
    raw_prefix = f"raw{uuid.uuid4().hex[:6]}"
    for start in range(0, skus, 500):
        pipe = redis.pipeline(transaction=False)
        for s in range(start, min(start + 500, skus)):
            pipe.hset(f"{raw_prefix}:{{SKU-{s}}}", mapping={loc: (s * 7 + i) % 90 for i, loc in enumerate(locs)})
        await pipe.execute()
    raw_bytes = await used_memory(redis) - before

    prefix = f"mem{uuid.uuid4().hex[:6]}"
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    book = RuleBook(version=1, locations=[Location(code=loc, priority=i + 1) for i, loc in enumerate(locs)],
                    channels=[], rules=[])
    # The run's last day is yesterday, so the closing night's counts are stamped today.
    first_day_ms = (int(time.time() * 1000) // DAY_MS - days) * DAY_MS
    start = datetime.fromtimestamp(first_day_ms / 1000, tz=UTC)
    events = reservations = 0
    started = time.perf_counter()
    for day in range(days):
        day_ms = first_day_ms + day * DAY_MS
        # the day's orders: one reservation per pair, committed (allocated) before it ships
        requests = [ReservationRequest(f"ord-{day}-{s}-{i}", "online", [ReservationLine(f"SKU-{s}", 1, loc)])
                    for s in range(skus) for i, loc in enumerate(locs)]
        for chunk in range(0, len(requests), 256):
            part = requests[chunk:chunk + 256]
            stamp = day_ms + 12 * 3600_000
            held = await asyncio.gather(*(ledger.reserve(r, book, at_ms=stamp) for r in part), return_exceptions=True)
            ok = [r for r, h in zip(part, held) if not isinstance(h, Exception)]
            await asyncio.gather(*(ledger.commit(r.reservation_id, at_ms=stamp + 1) for r in ok))
            reservations += len(ok)
        todays = day_events(rnd, day, skus, locs, start)
        for chunk in range(0, len(todays), 2000):
            part = todays[chunk:chunk + 2000]
            await ledger.apply_batch(part, at_ms=part[-1].occurred_ms)
        events += len(todays)
        # serve's retention sweep (the `expiry` service) runs all day; at the day's end it has
        # removed what ended more than the grace (24 h) ago: the day before's orders
        if retention:
            await retention_sweep(ledger, day_ms + DAY_MS - 1)
    load_seconds = time.perf_counter() - started
    peak = await figures(redis, ledger, prefix, skus, pairs)

    # The night's counts: each pair's snapshot as of 00:01 today.
    tonight = [e for e in day_events(rnd, days, skus, locs, start) if e.type == "snapshot"]
    for chunk in range(0, len(tonight), 2000):
        part = tonight[chunk:chunk + 2000]
        await ledger.apply_batch(part, at_ms=part[-1].occurred_ms + 3600_000)
    if retention:
        await retention_sweep(ledger, tonight[-1].occurred_ms + 3600_000)
    rest = await figures(redis, ledger, prefix, skus, pairs)
    await redis.aclose()

    return {
        "skus": skus, "locations": locations, "pairs": pairs, "days": days, "retention_sweep": retention,
        "profile": f"{EVENTS_PER_PAIR_DAY} events per pair per day (snapshot, receipt, 6 pos_sale, adjustment, ship)"
                   " + 1 reservation per order (reserve + commit), then the next night's snapshots",
        "events": events + len(tonight), "reservations": reservations, "load_seconds": round(load_seconds, 1),
        "bytes_per_pair_at_rest": rest["pair"],
        "bytes_per_pair_at_rest_without_settled_holds_and_headers": rest["pair_without_holds"],
        "aim_bytes_per_pair_at_rest": AIM_PAIR_BYTES,
        "pair_within_aim": rest["pair"] <= AIM_PAIR_BYTES,
        "bytes_per_pair_end_of_day": peak["pair"],
        "bytes_per_pair_end_of_day_without_settled_holds_and_headers": peak["pair_without_holds"],
        "at_rest_bytes_per_pair_by_kind": rest["by_kind"],
        "end_of_day_bytes_per_pair_by_kind": peak["by_kind"],
        "delta_log_records_end_of_day": peak["dlog_records"],
        "idempotency_records_retained": rest["records"],
        "bytes_per_retained_idempotency_record": rest["record"],
        "aim_bytes_per_retained_idempotency_record": AIM_RECORD_BYTES,
        "record_within_aim": rest["record"] <= AIM_RECORD_BYTES,
        "dirty_set_bytes_per_pair_publisher_pending": rest["dirty"],
        "journal_entries": rest["journal_entries"],
        "journal_bytes_per_entry": rest["journal_per_entry"],
        "journal_bytes_at_default_cap_1m_entries": round(rest["journal_per_entry"] * 1_000_000),
        "keys_by_kind": rest["keys"],
        "raw_hash_bytes_per_pair": round(raw_bytes / pairs, 1),
        "ratio_stock_to_raw": round(rest["by_kind"]["stock"] / (raw_bytes / pairs), 2),
    }


#: what retention keeps for settled orders: holds, headers and the indexes that list them
SETTLED_KINDS = ("holds", "ended", "holds_ended", "resv_header", "resv_expiry", "resv_ended")
AT_REST_KINDS = ("stock", "dlog", "cuts", *SETTLED_KINDS)


async def retention_sweep(ledger: Ledger, stamp: int) -> None:
    """One retention pass as `serve` runs it: reservations' holds and headers, and the holds
    order events ended, that ended more than the grace period before `stamp`."""
    while await ledger.forget_settled(at_ms=stamp) + await ledger.forget_ended_holds(at_ms=stamp):
        pass


async def figures(redis, ledger: Ledger, prefix: str, skus: int, pairs: int) -> dict:
    sizes, counts = await memory_by_kind(redis, prefix)
    records = 0
    for s in range(skus):
        records += await ledger.idempotency_records(f"SKU-{s}")
    dlog_records = 0
    async for key in redis.scan_iter(match=f"{prefix}:*:dlog:*", count=2000):
        dlog_records += (await redis.strlen(key)) // 11
    journal_entries = await ledger.journal_length()
    at_rest = sum(sizes.get(k, 0) for k in AT_REST_KINDS)
    settled = sum(sizes.get(k, 0) for k in SETTLED_KINDS)
    return {
        "pair": round(at_rest / pairs, 1),
        "pair_without_holds": round((at_rest - settled) / pairs, 1),
        "by_kind": {k: round(sizes.get(k, 0) / pairs, 1) for k in AT_REST_KINDS},
        "records": records,
        "record": round((sizes.get("idb", 0) + sizes.get("idm", 0)) / max(1, records), 1),
        "dlog_records": dlog_records,
        "dirty": round(sizes.get("dirty", 0) / pairs, 1),
        "journal_entries": journal_entries,
        "journal_per_entry": round(sizes.get("journal", 0) / max(1, journal_entries), 1),
        "keys": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=300)
    parser.add_argument("--locations", type=int, default=10)
    parser.add_argument("--days", type=int, default=7, help="days of traffic (the idempotency window is 7)")
    parser.add_argument("--quick", action="store_true", help="100 SKUs x 10 locations")
    parser.add_argument("--no-retention", action="store_true",
                        help="never run the retention sweep (what settled orders cost without it)")
    args = parser.parse_args()
    if args.quick:
        args.skus = 100
    # Always a private server: used_memory deltas are only meaningful with nothing else writing.
    with tempfile.TemporaryDirectory(prefix="av-bench-") as tmp:
        server = EmbeddedRedis(tmp, appendonly=False).start()
        try:
            result = asyncio.run(measure(server.url, args.skus, args.locations, args.days,
                                         retention=not args.no_retention))
        finally:
            server.stop()
    print(json.dumps({"benchmark": "redis_memory_realistic_profile", **result}, indent=2))


if __name__ == "__main__":
    main()
