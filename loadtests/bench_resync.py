"""Benchmark: a full Shopify resync of a large catalogue on the simulator, bulk against per
level, same catalogue, same plan, same run. Prints JSON.

    python -m loadtests.bench_resync [--levels 100000] [--sample 10000] [--plan plus] [--drift 0.1]

The catalogue is `levels / 2` SKUs stocked at two locations, every level mapped; Shopify
starts at ATS, then a share (`--drift`) of the levels is changed behind our back (no
webhook). Measured:

- **bulk**: `DriftRepairer.bulk_resync` over every level: one bulk query (staged JSONL
  export), the comparison, one bulk mutation from a staged upload (compare-and-set).
- **per level**: `DriftRepairer.resync` (paged `nodes` reads at the plan's points budget,
  repairs pushed by the publisher) over a **sample** of `--sample` levels (their SKUs),
  reported as a rate and extrapolated to the whole catalogue. The sample is a sample: the
  extrapolation assumes the rate stays the same, which the points budget makes nearly so.

Both repair the same drift share; the simulator paces both with the plan's leaky bucket
(the bulk run's work is not charged, as on Shopify). Setup (seeding the simulator, the
ledger and 50,000 item mappings) is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime

from adapters.shopify.client import ShopifyAdminClient, ThrottleGovernor
from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.flows.inventory.drift import DriftRepairer
from availability.flows.inventory.publisher import Publisher, PushConfig
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore
from loadtests.target import bench_redis

LOCATIONS = ("DC1", "S1")
MASTER = {
    "locations": [{"code": "DC1", "priority": 1}, {"code": "S1", "priority": 2, "type": "store"}],
    "channels": [{"name": "online", "locations": list(LOCATIONS)}],
}


async def bench(args, redis_url: str, tmp: str) -> dict:
    rnd = random.Random(args.seed)
    skus = [f"RS-{i:06d}" for i in range(args.levels // len(LOCATIONS))]
    sim = SimulatorServer(SimulatorConfig(plan=args.plan, seed=args.seed, bulk_start_delay_s=0.0))
    sim.start()
    redis = make_redis(redis_url)
    ledger = Ledger(redis, keys=KeyLayout(f"br{uuid.uuid4().hex[:8]}"))
    await ledger.load_scripts()
    store = RuleStore(f"sqlite+aiosqlite:///{tmp}/bench-resync.db")
    await store.start()
    client = None
    publisher = None
    try:
        setup_started = time.perf_counter()
        state = sim.state
        gids = {loc: state.add_location(loc) for loc in LOCATIONS}
        stock = {(sku, loc): rnd.randint(0, 40) for sku in skus for loc in LOCATIONS}
        items = {}
        for sku in skus:
            items[sku] = state.add_item(sku)
            for loc in LOCATIONS:
                state.stock(items[sku], gids[loc], stock[(sku, loc)])  # Shopify starts at ATS
        now = datetime.now(UTC)
        events = [
            StockEvent(event_id=f"seed-{i}", type="receipt", source="wms", occurred_at=now, sku=sku, location=loc, quantity=q)
            for i, ((sku, loc), q) in enumerate(stock.items()) if q
        ]
        for i in range(0, len(events), 5000):
            await ledger.apply_batch(events[i : i + 5000])
        await ledger.forget_dirty()  # the seed is history: start synced
        await store.import_master_data(MASTER, actor="bench")
        await store.mappings.set_item_mappings(items, actor="bench")
        await store.mappings.set_location_mappings([("online", loc, gid) for loc, gid in gids.items()], actor="bench")
        rules = RuleCache(store)
        await rules.start()
        client = ShopifyAdminClient(sim.base_url, sim.config.access_token, governor=ThrottleGovernor(), timeout=120)
        publisher = Publisher(ledger=ledger, rules=rules, mappings=store.mappings, client=client, config=PushConfig(window_s=0.05))
        await publisher.refresh_mappings(force=True)
        repairer = DriftRepairer(publisher, interval_s=0)

        def drift(share: float, among: list[str]) -> int:
            n = 0
            for sku in among:
                for loc in LOCATIONS:
                    if rnd.random() < share:
                        state.external_change(items[sku], gids[loc], available=stock[(sku, loc)] + rnd.randint(1, 5))
                        n += 1
            return n

        setup_s = time.perf_counter() - setup_started

        # bulk, the whole catalogue (no level known yet: the bulk read is the baseline)
        drifted = drift(args.drift, skus)
        t0 = time.perf_counter()
        bulk = await repairer.bulk_resync(poll_s=args.poll)
        bulk_s = time.perf_counter() - t0
        # every drifted level repaired (a raise is never a sale: pushed back to ATS)
        wrong = sum(
            1 for sku in skus for loc in LOCATIONS if state.available(items[sku], gids[loc]) != stock[(sku, loc)]
        )

        # per level, a sample of SKUs, same drift share
        sample = skus[: max(1, args.sample // len(LOCATIONS))]
        sample_drifted = drift(args.drift, sample)
        points_before = state.stats.points_spent
        t0 = time.perf_counter()
        per_level = await repairer.resync(skus=sample, timeout=args.timeout)
        per_level_s = time.perf_counter() - t0
        sample_wrong = sum(
            1 for sku in sample for loc in LOCATIONS if state.available(items[sku], gids[loc]) != stock[(sku, loc)]
        )
        sample_levels = len(sample) * len(LOCATIONS)
        rate = sample_levels / per_level_s if per_level_s else None
        # The sample starts with a full bucket, so its wall-clock rate flatters a long run;
        # the steady state is the points it spent per level at the plan's restore rate.
        points_per_level = (state.stats.points_spent - points_before) / sample_levels
        restore = sim.config.limits().restore_rate
        all_levels = len(skus) * len(LOCATIONS)
        steady_s = all_levels * points_per_level / restore
        return {
            "plan": args.plan,
            "levels": len(skus) * len(LOCATIONS),
            "skus": len(skus),
            "drift_share": args.drift,
            "setup_seconds_untimed": round(setup_s, 1),
            "bulk": {
                "seconds": round(bulk_s, 2),
                "levels_per_sec": round(len(skus) * len(LOCATIONS) / bulk_s, 1),
                "drifted": drifted,
                "pushed": bulk.get("pushed", 0),
                "left_to_the_publisher": bulk.get("left_to_the_publisher", 0),
                "refused": bulk.get("refused", {}),
                "still_wrong_after": wrong,
            },
            "per_level_sample": {
                "levels": sample_levels,
                "seconds": round(per_level_s, 2),
                "levels_per_sec": round(rate, 1) if rate else None,
                "drifted": sample_drifted,
                "different": per_level.get("different"),
                "pushed": per_level.get("pushed", 0),
                "still_wrong_after": sample_wrong,
            },
            "per_level_points_per_level": round(points_per_level, 2),
            "per_level_extrapolated_seconds_for_all_levels": round(steady_s, 1),
            "per_level_extrapolation": "all levels x points per level of the sample / the plan's restore rate",
            "per_level_extrapolated_seconds_standard_plan": round(all_levels * points_per_level / 100.0, 1),
            "bulk_speedup_vs_per_level": round(steady_s / bulk_s, 1),
        }
    finally:
        if publisher is not None:
            await publisher.stop(timeout=5)
        if client is not None:
            await client.aclose()
        await store.close()
        await redis.aclose()
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=10_000, help="levels resynced per level (a sample, extrapolated)")
    parser.add_argument("--plan", default="plus", help="the simulator's rate-limit plan (both runs)")
    parser.add_argument("--drift", type=float, default=0.1, help="share of levels changed behind our back")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between bulk operation polls")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10,000 levels, a 1,000-level sample")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.sample = 10_000, 1_000
    with bench_redis("av-bench-resync-") as (redis_url, scratch):
        out = asyncio.run(bench(args, redis_url, scratch))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
