"""Benchmark: a global rule change over 1,000,000 (SKU, location) pairs: how long the
what-if recompute-and-diff takes (every ATS value before and after, per channel) and how
long marking every pair dirty for the publisher takes, beside the bare cost of reading
the same keys (SCAN + pipelined HGETALL, no ATS work) in the same run. Prints JSON.

    python -m loadtests.bench_rule_change [--skus 50000] [--locations 20]

The pairs are written straight into the ledger's stored form (one pipelined HSET per SKU)
to keep the setup short; the measured parts run the production code paths
(`availability.api.preview.preview`, `availability.rules.dirtying.mark_all_dirty`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid

from availability.api.preview import preview
from availability.api.schemas import ProposedChange, RuleBody
from availability.bootstrap import make_redis
from availability.demo.catalogue import build_catalogue, master_data
from availability.domain.rules import Channel, Location, Rule, RuleBook
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from availability.rules.dirtying import mark_all_dirty


def demo_book(skus: int, stores: int) -> RuleBook:
    cat = build_catalogue(skus=skus, stores=stores)
    doc = master_data(cat)
    return RuleBook(
        version=1,
        locations=[Location(**{**loc, "groups": tuple(loc.get("groups", ()))}) for loc in doc["locations"]],
        channels=[Channel(**{**ch, "locations": tuple(ch["locations"]) if ch["locations"] else None,
                             "location_groups": tuple(ch.get("location_groups", ()))}) for ch in doc["channels"]],
        rules=[Rule(id=i + 1, **rule) for i, rule in enumerate(doc["rules"])],
        sku_categories=cat.categories,
    ), cat


async def seed(ledger: Ledger, cat, rnd: random.Random) -> int:
    pairs = 0
    for start in range(0, len(cat.skus), 1000):
        pipe = ledger.redis.pipeline(transaction=False)
        for sku in cat.skus[start : start + 1000]:
            fields = {}
            for loc in cat.locations:
                on_hand = rnd.randint(20, 400) if loc in cat.warehouses else rnd.randint(0, 12)
                fields[loc] = f"{on_hand},{rnd.randint(0, 3)},0,0,0,-1"
            pipe.hset(ledger.keys.stock(sku), mapping=fields)
            pairs += len(fields)
        await pipe.execute()
    return pairs


async def bare_read(ledger: Ledger) -> tuple[float, int]:
    """SCAN + pipelined HGETALL of every stock key: the floor under any full recompute."""
    started = time.perf_counter()
    cursor, fields = 0, 0
    while True:
        cursor, keys = await ledger.redis.scan(cursor, match=ledger.keys.stock_pattern(), count=500)
        if keys:
            pipe = ledger.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            fields += sum(len(h) for h in await pipe.execute())
        if int(cursor) == 0:
            return time.perf_counter() - started, fields


async def run(redis_url: str, skus: int, stores: int) -> dict:
    redis = make_redis(redis_url)
    ledger = Ledger(redis, keys=KeyLayout(f"rc{uuid.uuid4().hex[:6]}"))
    book, cat = demo_book(skus, stores)
    started = time.perf_counter()
    pairs = await seed(ledger, cat, random.Random(5))
    seed_seconds = time.perf_counter() - started

    floor_seconds, fields = await bare_read(ledger)
    change = [ProposedChange(op="create", rule=RuleBody(kind="buffer", channel="online", units=3,
                                                          note="bench: global online buffer"))]
    started = time.perf_counter()
    report = await preview(ledger, book, change, limit=10_000_000, sample=5)
    diff_seconds = time.perf_counter() - started

    started = time.perf_counter()
    marked = await mark_all_dirty(ledger, batch=5000)
    mark_seconds = time.perf_counter() - started
    dirty = await ledger.dirty_count()
    await redis.aclose()
    return {
        "pairs": pairs, "skus": skus, "locations": len(cat.locations), "seed_seconds": round(seed_seconds, 1),
        "bare_read_seconds": round(floor_seconds, 2), "bare_read_fields": fields,
        "recompute_diff_seconds": round(diff_seconds, 2), "values_compared": report.values_compared,
        "values_changed": report.values_changed, "complete": report.complete,
        "channels": [{"channel": c.channel, "units_before": c.units_before, "units_after": c.units_after}
                     for c in report.channels],
        "mark_dirty_seconds": round(mark_seconds, 2), "pairs_marked": marked, "dirty_set_size": dirty,
        "recompute_plus_mark_seconds": round(diff_seconds + mark_seconds, 2),
        "ratio_recompute_to_bare_read": round(diff_seconds / floor_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--stores", type=int, default=17, help="stores (3 warehouses are added)")
    parser.add_argument("--quick", action="store_true", help="5,000 SKUs (100,000 pairs)")
    args = parser.parse_args()
    if args.quick:
        args.skus = 5_000
    with tempfile.TemporaryDirectory(prefix="av-bench-") as tmp:
        server = EmbeddedRedis(tmp, appendonly=False).start()
        try:
            result = asyncio.run(run(server.url, args.skus, args.stores))
        finally:
            server.stop()
    print(json.dumps({"benchmark": "rule_change", "target_seconds": 60, **result}, indent=2))


if __name__ == "__main__":
    main()
