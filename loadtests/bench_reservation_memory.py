"""Benchmark: Redis memory across a million settled reservations (aim: flat). Prints JSON.

    python -m loadtests.bench_reservation_memory [--reservations 1000000] [--skus 1000]

Reservations of one or two lines go through `Ledger.reserve` (intent, holds, finish); a
third are committed, a third released and a third left to expire, exactly as checkout,
cancellations and abandoned carts settle them. The service's sweeps (expiry, recovery,
retention) run between batches on a logical clock that advances past the retention grace
period, so everything that ended more than the grace ago is due.

Memory is read at the start (stock loaded, no reservation), and at checkpoints: Redis
`used_memory`, the bytes of every key under the ledger's prefix but the journal (MEMORY
USAGE), hold fields and reservation headers left. The journal (an audit stream capped by
count, not per reservation) is reported on its own with its cap. Beside it, as the
no-retention peer, the bytes the first batch's settled reservations occupy before the
retention sweep runs (measured), and what a million of them would take at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid

from availability.bootstrap import make_redis
from availability.domain.errors import InsufficientStock
from availability.domain.events import StockEvent
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.domain.rules import Location, RuleBook
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits, ReservationPolicy
from loadtests.bench_ledger import T0
from loadtests.ceilings import delete_prefix

GRACE_MS = 60_000


async def footprint(ledger: Ledger, skus: list[str]) -> dict:
    """Bytes and counts under the ledger's prefix (journal apart), and Redis's own figure."""
    r = ledger.redis
    keys = [k async for k in r.scan_iter(match=f"{ledger.keys.prefix}:*", count=5000)]
    journals = {key.encode() for key in ledger.keys.all_journals()}
    state = [k for k in keys if k not in journals]
    sizes = []
    for start in range(0, len(state), 1000):
        pipe = r.pipeline(transaction=False)
        for key in state[start : start + 1000]:
            pipe.memory_usage(key, samples=0)
        sizes += await pipe.execute()
    pipe = r.pipeline(transaction=False)
    for sku in skus:
        pipe.hlen(ledger.keys.holds(sku))
    hold_fields = sum(await pipe.execute())
    info = await r.info("memory")
    return {
        "used_memory": info["used_memory"],
        "state_bytes": sum(s or 0 for s in sizes),
        "keys": len(state),
        "hold_fields": hold_fields,
        "reservation_headers": sum(1 for k in state if b":resv:" in k and not k.endswith((b":expiry", b":pending", b":ended"))),
        "journal_entries": await ledger.journal_length(),
        "journal_bytes": sum([await r.memory_usage(key, samples=5) or 0 for key in ledger.keys.all_journals()]),
    }


async def run(redis_url: str, *, reservations: int, skus: int, batch: int, checkpoints: int, journal_cap: int) -> dict:
    redis = make_redis(redis_url, max_connections=64)
    prefix = f"brm{uuid.uuid4().hex[:6]}"
    ledger = Ledger(
        redis,
        keys=KeyLayout(prefix),
        limits=LedgerLimits(journal_cap=journal_cap),
        reservations=ReservationPolicy(retention_ms=GRACE_MS),
    )
    await ledger.load_scripts()
    names = [f"SKU-{i:05d}" for i in range(skus)]
    book = RuleBook(version=1, locations=[Location(code="DC1", priority=1)], channels=[], rules=[])
    for start in range(0, skus, 1000):
        await ledger.apply_batch([
            StockEvent(event_id=f"seed-{s}", type="receipt", source="bench", occurred_at=T0, sku=names[s],
                       location="DC1", quantity=10**8)
            for s in range(start, min(start + 1000, skus))
        ])
    start_fp = await footprint(ledger, names)
    points = []
    clock = 1_000_000_000
    done = short = 0
    every = max(1, reservations // checkpoints)
    next_point = every
    started = time.perf_counter()
    sem = asyncio.Semaphore(64)
    retained_fp: dict | None = None

    async def one(i: int) -> None:
        nonlocal short
        lines = [ReservationLine(names[i % skus], 1)]
        if i % 2:
            lines.append(ReservationLine(names[(i * 7 + 1) % skus], 2))
        rid = f"r{i}"
        async with sem:
            try:
                await ledger.reserve(ReservationRequest(rid, "online", lines, 10), book, at_ms=clock)
            except InsufficientStock:
                short += 1
                return
            if i % 3 == 0:
                await ledger.commit(rid, at_ms=clock + 1)
                # the order is then cancelled: retention keeps a committed hold until its
                # allocation is settled (shipped or cancelled), so without this it stays
                await ledger.release(rid, at_ms=clock + 2)
            elif i % 3 == 1:
                await ledger.release(rid, at_ms=clock + 1)

    while done < reservations:
        n = min(batch, reservations - done)
        await asyncio.gather(*(one(i) for i in range(done, done + n)))
        done += n
        clock += 11_000  # the third left alone is now past its 10 s TTL
        while await ledger.expire_due(at_ms=clock, limit=2000):
            pass
        await ledger.recover_abandoned()
        if retained_fp is None:
            retained_fp = await footprint(ledger, names)
            retained_fp["settled"] = done
        # retention: what ended more than the grace period ago goes
        while await ledger.forget_settled(at_ms=clock, limit=2000):
            pass
        if done >= next_point or done == reservations:
            next_point += every
            # the checkpoint is taken once the grace period has passed for everything so far
            clock += GRACE_MS
            while await ledger.forget_settled(at_ms=clock, limit=2000):
                pass
            fp = await footprint(ledger, names)
            fp["settled"] = done
            fp["seconds"] = round(time.perf_counter() - started, 1)
            points.append(fp)
    elapsed = time.perf_counter() - started
    end = points[-1]
    await redis.aclose()
    delete_prefix(redis_url, prefix)
    return {
        "benchmark": "reservation_memory",
        "reservations_settled": done,
        "refused_short": short,
        "skus": skus,
        "retention_grace_ms": GRACE_MS,
        "settle_mix": "1/3 committed then cancelled, 1/3 released, 1/3 expired; half of them two lines",
        "reservations_per_sec": round(done / elapsed, 1),
        "start": start_fp,
        "checkpoints": points,
        "state_bytes_delta_vs_start": end["state_bytes"] - start_fp["state_bytes"],
        "state_bytes_delta_vs_first_checkpoint": end["state_bytes"] - points[0]["state_bytes"],
        "used_memory_delta_vs_start": end["used_memory"] - start_fp["used_memory"],
        "journal_cap": journal_cap,
        "without_retention": {
            "after_first_batch": retained_fp,
            "bytes_per_settled_reservation": round(
                (retained_fp["state_bytes"] - start_fp["state_bytes"]) / retained_fp["settled"], 1),
            "projected_bytes_for_all": round(
                (retained_fp["state_bytes"] - start_fp["state_bytes"]) / retained_fp["settled"] * done),
        },
        "aim": "flat: per-reservation state (headers, holds, index entries) 0 after the grace period; "
               "state bytes at the end equal to the first checkpoint's",
        "flat": end["reservation_headers"] == 0 and end["hold_fields"] == 0
        and end["state_bytes"] <= points[0]["state_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reservations", type=int, default=1_000_000)
    parser.add_argument("--skus", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--journal-cap", type=int, default=1_000_000, help="the service's default cap")
    parser.add_argument("--quick", action="store_true", help="50,000 reservations")
    parser.add_argument("--redis-url", default=None, help="default: an embedded redis-server of its own")
    args = parser.parse_args()
    if args.quick:
        args.reservations = 50_000
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="av-bench-")
    redis_url = args.redis_url
    if not redis_url:
        server = EmbeddedRedis(tmp.name, appendonly=False).start()
        redis_url = server.url
    try:
        out = asyncio.run(run(redis_url, reservations=args.reservations, skus=args.skus, batch=args.batch,
                              checkpoints=args.checkpoints, journal_cap=args.journal_cap))
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
