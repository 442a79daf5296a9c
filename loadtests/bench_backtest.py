"""Benchmark: a backtest of 1,000,000 journal entries (issue 14's aim: under 60 s), beside
the same-work ceiling of just reading those entries (XRANGE pages, nothing decoded) and
the read-and-decode rate, all measured in the same run on the same journal. Prints JSON.

    python -m loadtests.bench_backtest [--entries 1000000] [--skus 5000] [--quick]

The journal is written by the real ledger (apply_event.lua, reserve.lua / group commit,
settle.lua): opening receipts (5 per SKU), then trading: receipts and POS sales, checkout
reservations on the demo catalogue's channels (some refused once stock runs short), their
commits and releases; `--base` entries of it (100,000) are written that way, and the rest
are copies of that history with SKUs and order ids renamed, written on a raw connection
(writing 1,000,000 through the ledger would take longer than everything measured here).
The measured part is the production path (`availability.planning.service.run_backtest`:
journal.py's raw pages, both replays), in one process and in the API's and CLI's two
worker processes, each reading its own half of the partitions (which must report the
same), with a draft of two rule changes built by `availability.api.preview.candidate_book`,
as the API and the CLI build it. The load average at the start and end is printed with
the figures: on a shared machine only the ratios to the same run's read ceiling compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from datetime import datetime, timezone

from availability.api.preview import candidate_book, copy_book
from availability.api.schemas import ProposedChange, RuleBody
from availability.bootstrap import make_redis
from availability.domain.errors import InsufficientStock, ReservationConflict
from availability.domain.events import StockEvent
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.ledger.journal import F_EVENT, F_ORDER, F_SKU, decode_page, raw_pages, xadd_command
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits
from availability.ledger.resp import Endpoint, make_reader
from availability.planning.service import WORKERS, run_backtest
from loadtests.bench_rule_change import demo_book
from loadtests.target import bench_redis

OPENED = datetime(2026, 11, 20, tzinfo=timezone.utc)
TRADING = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)

DRAFT = [
    ProposedChange(op="create", rule=RuleBody(kind="buffer", channel="online", units=3)),
    ProposedChange(op="create", rule=RuleBody(kind="protection", channel="pos", location_group="stores", percent=30.0)),
]


async def write_journal(ledger: Ledger, book, cat, entries: int, rnd: random.Random) -> dict:
    """Drive the ledger until its journal holds about `entries` entries (the base)."""
    skus, stores, warehouses = cat.skus, cat.stores, cat.warehouses
    online = book.channel_locations("online")
    counts = {"events": 0, "reservations": 0, "refused": 0, "settled": 0}
    live: list[str] = []
    seq = 0
    # opening stock everywhere the demo sells from, one receipt per (SKU, location)
    opening = [
        StockEvent(event_id=f"open-{sku}-{loc}", type="receipt", source="wms", occurred_at=OPENED,
                   sku=sku, location=loc, quantity=rnd.randint(5, 60) if loc in warehouses else rnd.randint(0, 8))
        for sku in skus for loc in (*warehouses, *rnd.sample(stores, 2))
    ]
    for start in range(0, len(opening), 2000):
        await ledger.apply_batch(opening[start : start + 2000])
    counts["events"] += len(opening)
    while await ledger.journal_length() < entries:
        batch = []
        for _ in range(1500):
            seq += 1
            sku = rnd.choice(skus)
            roll = rnd.random()
            if roll < 0.55:
                store = rnd.choice(stores)
                batch.append(StockEvent(event_id=f"pos-{seq}", type="pos_sale", source="pos", channel="pos",
                                        occurred_at=TRADING, sku=sku, location=store, quantity=1))
            else:
                loc = rnd.choice(online if roll < 0.85 else warehouses)
                batch.append(StockEvent(event_id=f"rcv-{seq}", type="receipt", source="wms",
                                        occurred_at=TRADING, sku=sku, location=loc,
                                        quantity=rnd.randint(1, 6)))
        await ledger.apply_batch(batch)
        counts["events"] += len(batch)

        async def one(rid: str) -> None:
            request = ReservationRequest(rid, "online", [ReservationLine(rnd.choice(skus), rnd.randint(1, 3))], ttl_seconds=0)
            try:
                await ledger.reserve(request, book)
                live.append(rid)
                counts["reservations"] += 1
            except InsufficientStock:
                counts["refused"] += 1

        await asyncio.gather(*(one(f"bt-{seq}-{k}") for k in range(600)))
        # settle about as many as were placed: commit-and-ship most, release some
        rnd.shuffle(live)
        settle, live[:] = live[:500], live[500:]

        async def end(rid: str) -> None:
            try:
                await (ledger.release(rid) if rnd.random() < 0.3 else ledger.commit(rid))
                counts["settled"] += 1
            except ReservationConflict:
                pass

        await asyncio.gather(*(end(rid) for rid in settle))
    return counts


async def grow_by_copies(ledger: Ledger, redis_url: str, entries: int, cap: int) -> int:
    """Append copies of the ledger-written journal until it holds `entries`: each copy
    renames SKUs and order ids (suffix "~N"), so it is the same history on other SKUs.

    Written on a raw connection (`journal.xadd_command`), a chunk of XADDs per write with
    one chunk in flight: no redis-py command object and no round trip per entry, so growing
    the journal to a million entries takes seconds, not the benchmark's whole budget."""
    keys, redis = ledger.keys, ledger.redis
    base = []
    async for page in raw_pages(redis, keys, since_ms=0, until_ms=int(time.time() * 1000) + 1000):
        base.extend(fields for _id, fields in page)
    endpoint = Endpoint.from_url(redis_url)
    reader, writer = await endpoint.open_stream()
    replies = make_reader()
    setup = endpoint.setup_commands()
    expected = len(setup)
    writer.write(b"".join(setup))
    streams: dict[bytes, bytes] = {}

    async def drain(count: int) -> None:
        got = 0
        while got < count:
            reply = replies.gets()
            if reply is False:
                data = await reader.read(1 << 20)
                if not data:
                    raise ConnectionError("Redis closed the connection while the journal was being copied")
                replies.feed(data)
                continue
            if isinstance(reply, Exception):
                raise RuntimeError(f"XADD failed: {reply}")
            got += 1

    total, copy = len(base), 0
    try:
        while total < entries:
            copy += 1
            tag = b"~%d" % copy
            chunk: list[bytes] = []
            for fields in base[: entries - total]:
                renamed = dict(fields)
                renamed[F_SKU] = fields[F_SKU] + tag
                event_id = fields.get(F_EVENT, b"")
                if b":" in event_id:  # reservation actions: action:ID
                    renamed[F_EVENT] = event_id + tag
                if F_ORDER in fields:
                    renamed[F_ORDER] = fields[F_ORDER] + tag
                chunk.append(xadd_command(keys, renamed, cap=cap, streams=streams))
                if len(chunk) == 20_000:
                    await drain(expected)  # the previous chunk's replies: one chunk in flight
                    writer.write(b"".join(chunk))
                    expected = len(chunk)
                    chunk = []
            if chunk:
                await drain(expected)
                writer.write(b"".join(chunk))
                expected = len(chunk)
            total += min(len(base), entries - total)
        await drain(expected)
    finally:
        writer.close()
    return copy


async def measure(redis_url: str, *, entries: int, skus: int, base: int, seed: int) -> dict:
    load_start = round(os.getloadavg()[0], 1)
    rnd = random.Random(seed)
    redis = make_redis(redis_url)
    keys = KeyLayout(f"bt{seed}")
    ledger = Ledger(redis, keys=keys, limits=LedgerLimits(journal_cap=entries * 2))
    await ledger.load_scripts()
    book, cat = demo_book(skus, 17)
    started = time.perf_counter()
    counts = await write_journal(ledger, book, cat, min(entries, base), rnd)
    written = time.perf_counter() - started
    if counts["reservations"] == 0:
        raise SystemExit(f"--base {base} holds no trading after the opening receipts of {skus} SKUs: "
                         "give fewer --skus or a larger --base")
    t0 = time.perf_counter()
    copies = await grow_by_copies(ledger, redis_url, entries, entries * 2)
    copied = time.perf_counter() - t0
    total = await ledger.journal_length()
    until = int(time.time() * 1000) + 1000

    # ceiling: the same entries read, page by page, nothing else done
    t0 = time.perf_counter()
    read = 0
    async for page in raw_pages(redis, keys, since_ms=0, until_ms=until):
        read += len(page)
    raw_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    decoded = 0
    async for page in raw_pages(redis, keys, since_ms=0, until_ms=until):
        decoded += len(decode_page(page))
    decode_s = time.perf_counter() - t0

    current = copy_book(book)
    draft, _proposed, _deleted = candidate_book(book, DRAFT)
    t0 = time.perf_counter()
    alone = await run_backtest(ledger, current, draft, days=31, until_ms=until)
    alone_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = await run_backtest(ledger, current, draft, days=31, until_ms=until, workers=WORKERS, redis_url=redis_url)
    backtest_s = time.perf_counter() - t0
    assert report == alone, "the worker processes' report differs from one process's"
    await redis.aclose()
    return {
        "benchmark": "backtest",
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 1)},
        "journal_entries": total,
        "written_by_the_ledger": counts,
        "ledger_write_seconds": round(written, 1),
        "copies_of_the_ledger_written_journal": copies,
        "copy_write_seconds": round(copied, 1),
        "ceiling_raw_xrange": {"entries": read, "seconds": round(raw_s, 2), "entries_per_s": round(read / raw_s)},
        "read_and_decode": {"entries": decoded, "seconds": round(decode_s, 2), "entries_per_s": round(decoded / decode_s)},
        "backtest_one_process": {
            "entries": alone.entries, "seconds": round(alone_s, 2), "entries_per_s": round(alone.entries / alone_s),
            "of_raw_read_ceiling": round((alone.entries / alone_s) / (read / raw_s), 3),
        },
        "backtest": {
            "worker_processes": WORKERS,
            "entries": report.entries,
            "seconds": round(backtest_s, 2),
            "entries_per_s": round(report.entries / backtest_s),
            "of_raw_read_ceiling": round((report.entries / backtest_s) / (read / raw_s), 3),
            "aim_seconds_per_1m": 60,
            "seconds_per_1m": round(backtest_s * 1_000_000 / max(1, report.entries), 1),
        },
        "draft": [c.rule.rule_fields() for c in DRAFT if c.rule is not None],
        "report": [
            {"channel": r.channel, "orders_refused": r.orders_refused, "units_refused": r.units_refused,
             "stockouts_avoided": r.stockouts_avoided, "oversells_avoided": r.oversells_avoided,
             "units_unexposed": r.units_unexposed}
            for r in report.channels
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--skus", type=int, default=5_000,
                        help="SKUs the ledger writes (5 opening receipts each, inside --base)")
    parser.add_argument("--base", type=int, default=100_000,
                        help="entries written through the ledger; the rest are renamed copies of them")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="100,000 entries (20,000 by the ledger), 1,000 SKUs")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.skus, args.base = 100_000, 1_000, 20_000
    with bench_redis("av-bench-backtest-") as (redis_url, _scratch):
        out = asyncio.run(measure(redis_url, entries=args.entries, skus=args.skus, base=args.base, seed=args.seed))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
