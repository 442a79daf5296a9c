"""Benchmark: Redis bytes per (SKU, location) held by the ledger, beside the least a raw
Redis layout could use for the same numbers (one hash per SKU, one integer per location),
measured on the same server in the same run. Prints JSON.

    python -m loadtests.bench_memory [--skus 10000] [--locations 20]

Stock is loaded the way production loads it: one ERP `snapshot` event per pair through
`Ledger.apply_batch`, so the figure includes each pair's packed buckets and each event's
idempotency record; the journal stream (an audit log, capped by count, not per pair) is
reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import uuid

from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from loadtests.bench_ledger import T0


async def used_memory(redis) -> int:
    return (await redis.info("memory"))["used_memory"]


async def measure(redis_url: str, skus: int, locations: int) -> dict:
    redis = make_redis(redis_url)
    pairs = skus * locations
    locs = [f"LOC-{i:03d}" for i in range(locations)]

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
    keys = KeyLayout(prefix)
    ledger = Ledger(redis, keys=keys)
    await ledger.load_scripts()
    before = await used_memory(redis)
    batch = []
    for s in range(skus):
        for i, loc in enumerate(locs):
            batch.append(StockEvent(event_id=f"snap-{s}-{i}", type="snapshot", source="erp", occurred_at=T0,
                                    sku=f"SKU-{s}", location=loc, quantity=(s * 7 + i) % 90))
            if len(batch) == 1000:
                await ledger.apply_batch(batch)
                batch = []
    await ledger.apply_batch(batch)
    total = await used_memory(redis) - before
    journal = await redis.memory_usage(keys.journal) or 0
    dirty = await redis.memory_usage(keys.dirty) or 0
    sample_stock = await redis.memory_usage(keys.stock("SKU-1")) or 0
    sample_seen = await redis.memory_usage(keys.seen("SKU-1")) or 0
    await redis.aclose()
    return {
        "skus": skus, "locations": locations, "pairs": pairs,
        "raw_hash_bytes_per_pair": round(raw_bytes / pairs, 1),
        "ledger_bytes_per_pair_total": round(total / pairs, 1),
        "ledger_bytes_per_pair_excluding_journal_and_dirty": round((total - journal - dirty) / pairs, 1),
        "stock_hash_bytes_per_pair": round(sample_stock / locations, 1),
        "idempotency_bytes_per_pair": round(sample_seen / locations, 1),
        "journal_bytes_per_pair": round(journal / pairs, 1),
        "dirty_set_bytes_per_pair": round(dirty / pairs, 1),
        "ratio_stock_hash_to_raw": round((sample_stock / locations) / (raw_bytes / pairs), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--locations", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2,000 SKUs")
    args = parser.parse_args()
    if args.quick:
        args.skus = 2_000
    # Always a private server: used_memory deltas are only meaningful with nothing else writing.
    with tempfile.TemporaryDirectory(prefix="av-bench-") as tmp:
        server = EmbeddedRedis(tmp, appendonly=False).start()
        try:
            result = asyncio.run(measure(server.url, args.skus, args.locations))
        finally:
            server.stop()
    print(json.dumps({"benchmark": "redis_memory_per_pair", **result}, indent=2))


if __name__ == "__main__":
    main()
