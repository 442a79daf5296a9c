"""Benchmark: a flash sale pushed to the Shopify simulator by our publisher, beside a naive
client that pushes every change as it comes (one call per event, no coalescing, no pacing,
no compare-and-set), same events, same plan, same run. Prints JSON.

    python -m loadtests.bench_shopify [--plan standard] [--seconds 30] [--rate 200]
                                      [--hot 5] [--tail 500] [--window 1.0] [--quick]

The sale: `rate` events per second for `seconds`, 80 % on a few hot SKUs (one of them sells
out and is restocked mid-sale: zero crossings), 20 % on a long tail; every event is applied
through the real ledger while the publisher runs. Both sides start from a synced shop
(Shopify levels and the publisher's known values equal to ATS) and each gets its own
simulator with the same plan, so neither spends the other's points.

Freshness is measured per event, from the moment it was applied to the ledger to the moment
Shopify confirmed a value computed after it (or the publisher found Shopify already held
it). `--quick` runs in under a minute; the naive side is cut off `--drain` seconds after the
sale and what it had not confirmed by then is reported as unconfirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from adapters.shopify.client import (
    SetQuantity,
    ShopifyAdminClient,
    ShopifyThrottled,
    ShopifyTransientError,
    ThrottleGovernor,
)
from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.embedded_redis import EmbeddedRedis
from availability.flows.machinery import now_ms
from availability.flows.mappings import LevelKey, ShopifyMappings, level_value
from availability.flows.publisher import Confirmation, Publisher, PushConfig
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore
from loadtests.ceilings import delete_prefix

LOCATIONS = ("DC1", "S1")
MASTER = {
    "locations": [{"code": "DC1", "priority": 1}, {"code": "S1", "priority": 2, "type": "store"}],
    "channels": [{"name": "online", "locations": list(LOCATIONS)}],
}


# --- the sale ---------------------------------------------------------------------------------------


def flash_sale(seed: int, seconds: float, rate: float, hot: int, tail: int):
    """(initial stock, scheduled events): events are (offset s, type, sku, location, quantity)."""
    rng = random.Random(seed)
    total = int(seconds * rate)
    hot_skus = [f"HOT-{i:02d}" for i in range(hot)]
    tail_skus = [f"TAIL-{i:05d}" for i in range(tail)]
    per_hot = total * 0.8 / max(1, hot)
    initial: dict[tuple[str, str], int] = {}
    for i, sku in enumerate(hot_skus):
        # HOT-00 sells out about a third of the way in (sales go on, on_hand goes below
        # zero), is restocked at two thirds and sells out again: zero crossings
        initial[(sku, "DC1")] = int(per_hot * (0.25 if i == 0 else 1.5))
        initial[(sku, "S1")] = int(per_hot * 0.3)
    for sku in tail_skus:
        initial[(sku, "DC1")] = 30
        initial[(sku, "S1")] = 10
    events = []
    for n in range(total):
        at = n / rate
        if hot_skus and rng.random() < 0.8:
            sku = rng.choice(hot_skus)
            loc = "DC1" if rng.random() < 0.75 else "S1"
            events.append((at, "pos_sale", sku, loc, 1))
        else:
            sku, loc = rng.choice(tail_skus), rng.choice(LOCATIONS)
            if rng.random() < 0.7:
                events.append((at, "pos_sale", sku, loc, rng.randint(1, 2)))
            else:
                events.append((at, "receipt", sku, loc, rng.randint(1, 5)))
    if hot_skus:
        events.append((seconds * 2 / 3, "receipt", hot_skus[0], "DC1", int(per_hot * 0.75)))
        events.sort(key=lambda e: e[0])
    return initial, events, hot_skus + tail_skus


def _event(kind: str, sku: str, loc: str, qty: int, n: int) -> StockEvent:
    return StockEvent(
        event_id=f"bench-{n}", type=kind, source="pos" if kind == "pos_sale" else "wms",
        occurred_at=datetime.now(UTC), sku=sku, location=loc, quantity=qty,
    )


class Shop:
    """One simulator plus one ledger prefix, seeded with the same initial stock."""

    def __init__(self, redis, plan: str, initial: dict[tuple[str, str], int], skus: list[str], seed: int) -> None:
        self.sim = SimulatorServer(SimulatorConfig(plan=plan, seed=seed))
        self.redis = redis
        self.prefix = f"bs{uuid.uuid4().hex[:8]}"
        self.ledger = Ledger(redis, keys=KeyLayout(self.prefix))
        self.initial = initial
        self.skus = skus
        self.items: dict[str, str] = {}
        self.locations: dict[str, str] = {}

    async def start(self) -> None:
        self.sim.start()
        await self.ledger.load_scripts()
        state = self.sim.state
        self.locations = {loc: state.add_location(loc) for loc in LOCATIONS}
        for sku in self.skus:
            self.items[sku] = state.add_item(sku)
        await self.ledger.apply_batch(
            [_event("receipt", sku, loc, qty, -i - 1) for i, ((sku, loc), qty) in enumerate(self.initial.items())]
        )
        await self.redis.delete(self.ledger.keys.dirty)  # the seed is history: start synced

    def mappings(self) -> ShopifyMappings:
        return ShopifyMappings(self.items, [("online", loc, gid) for loc, gid in self.locations.items()])

    async def seed_shopify(self, book) -> dict[LevelKey, int]:
        """Shopify holds ATS before the sale starts."""
        mappings = self.mappings()
        stock = await self.ledger.stock_many(self.skus)
        values = {}
        for sku in self.skus:
            for key in mappings.all_levels(sku):
                value, _ = level_value(book, sku, mappings.rows_of[key.location], stock[sku])
                self.sim.state.stock(key.item, key.location, value)
                values[key] = value
        return values

    async def differences(self, book) -> int:
        mappings = self.mappings()
        stock = await self.ledger.stock_many(self.skus)
        levels = self.sim.state.levels()
        wrong = 0
        for sku in self.skus:
            for key in mappings.all_levels(sku):
                value, _ = level_value(book, sku, mappings.rows_of[key.location], stock[sku])
                wrong += levels.get((key.item, key.location)) != value
        return wrong

    def level_of(self, sku: str, loc: str) -> tuple[str, str]:
        return (self.items[sku], self.locations[loc])

    def stop(self) -> None:
        self.sim.stop()


async def drive(shop: Shop, events, on_applied) -> float:
    """Apply the scheduled events at their times (small batches). Returns seconds taken."""
    started = time.monotonic()
    i = 0
    while i < len(events):
        now = time.monotonic() - started
        batch = []
        while i < len(events) and events[i][0] <= now:
            batch.append((i, events[i]))
            i += 1
        if batch:
            await shop.ledger.apply_batch([_event(k, s, loc, q, n) for n, (_at, k, s, loc, q) in batch])
            stamp = now_ms()
            for n, (_at, _k, sku, loc, _q) in batch:
                on_applied(n, sku, loc, stamp)
        else:
            await asyncio.sleep(min(0.005, max(0.0, events[i][0] - now)))
    return time.monotonic() - started


def freshness(applied: dict[int, tuple[tuple[str, str], int]], confirmations: dict[tuple[str, str], list[tuple[int, int]]]):
    """Per event: first confirmation of its level computed at or after it was applied."""
    index = {}
    for level, rows in confirmations.items():
        rows.sort()
        computed = [c for c, _ in rows]
        suffix_min = [0] * len(rows)
        best = None
        for j in range(len(rows) - 1, -1, -1):
            best = rows[j][1] if best is None else min(best, rows[j][1])
            suffix_min[j] = best
        index[level] = (computed, suffix_min)
    lags, unconfirmed = [], 0
    for level, at in applied.values():
        computed, suffix_min = index.get(level, ([], []))
        j = bisect.bisect_left(computed, at)
        if j == len(computed):
            unconfirmed += 1
        else:
            lags.append(suffix_min[j] - at)
    lags.sort()

    def pct(p: float) -> int | None:
        return lags[min(len(lags) - 1, int(len(lags) * p))] if lags else None

    return {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": lags[-1] if lags else None}, unconfirmed


def sim_report(shop: Shop) -> dict:
    s = shop.sim.state.stats
    return {
        "calls": s.calls,
        "set_calls": s.mutations,
        "read_calls": s.queries,
        "quantities_pushed": s.quantities_applied,
        "throttled": s.throttled,
        "points_used": s.points_spent,
        "bucket_low_water": round(s.min_available or 0.0, 1),
        "bucket_overdraw": s.max_overdraw,
        "applied_twice": sum(1 for n in shop.sim.state.applications_by_key().values() if n > 1),
    }


# --- our publisher ----------------------------------------------------------------------------------


async def run_publisher(redis, redis_url: str, tmp: str, plan: str, initial, events, skus, window: float, settle: float, seed: int) -> dict:
    shop = Shop(redis, plan, initial, skus, seed)
    await shop.start()
    store = RuleStore(f"sqlite+aiosqlite:///{tmp}/bench-{shop.prefix}.db")
    await store.start()
    client = None
    publisher = None
    try:
        await store.import_master_data(MASTER, actor="bench")
        await store.set_item_mappings(shop.items, actor="bench")
        await store.set_location_mappings([("online", loc, gid) for loc, gid in shop.locations.items()], actor="bench")
        rules = RuleCache(store)
        await rules.start()
        known = await shop.seed_shopify(rules.book)
        confirmations: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)

        def on_confirm(c: Confirmation) -> None:
            confirmations[(c.key.item, c.key.location)].append((c.computed_ms, c.confirmed_ms))

        client = ShopifyAdminClient(shop.sim.base_url, shop.sim.config.access_token, governor=ThrottleGovernor())
        publisher = Publisher(
            ledger=shop.ledger, rules=rules, mappings=store, client=client,
            config=PushConfig(window_s=window), on_confirm=on_confirm,
        )
        stamp = now_ms()
        await publisher.state.record_known((key, value, stamp, "push") for key, value in known.items())
        await publisher.start()
        applied: dict[int, tuple[tuple[str, str], int]] = {}
        took = await drive(shop, events, lambda n, sku, loc, at: applied.__setitem__(n, (shop.level_of(sku, loc), at)))
        ended = time.monotonic()
        deadline = ended + settle
        while time.monotonic() < deadline and await shop.differences(rules.book):
            await asyncio.sleep(0.05)
        converge_s = time.monotonic() - ended
        await publisher.stop()
        wrong = await shop.differences(rules.book)
        fresh, unconfirmed = freshness(applied, confirmations)
        report = {
            "events": len(events),
            "sale_seconds": round(took, 2),
            **sim_report(shop),
            "rounds": publisher.stats.rounds,
            "urgent_marks": publisher.stats.urgent_claimed,
            "marks_claimed": publisher.stats.marks_claimed,
            "stale": publisher.stats.stale,
            "freshness_ms": fresh,
            "unconfirmed_events": unconfirmed,
            "converged": wrong == 0,
            "levels_wrong_at_end": wrong,
            "converged_after_sale_s": round(converge_s, 2),
        }
        await rules.stop()
        return report
    finally:
        if client is not None:
            await client.aclose()
        await store.close()
        shop.stop()
        delete_prefix(redis_url, shop.prefix)


# --- the naive client -------------------------------------------------------------------------------


async def run_naive(redis, redis_url: str, plan: str, initial, events, skus, drain: float, concurrency: int, seed: int) -> dict:
    """One inventorySetQuantities per event, as soon as it is applied: no window, no batching,
    no pacing (it only honours THROTTLED's retry-after), no compare-and-set."""
    shop = Shop(redis, plan, initial, skus, seed)
    await shop.start()
    from availability.domain.rules import Channel, Location, RuleBook

    book = RuleBook(
        version=1,
        locations=[Location(code="DC1", priority=1), Location(code="S1", priority=2, type="store")],
        channels=[Channel(name="online", locations=LOCATIONS)],
        rules=[],
    )
    await shop.seed_shopify(book)
    client = ShopifyAdminClient(shop.sim.base_url, shop.sim.config.access_token)  # no governor
    slots = asyncio.Semaphore(concurrency)
    confirmations: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    applied: dict[int, tuple[tuple[str, str], int]] = {}
    tasks: set[asyncio.Task] = set()

    async def push(sku: str, loc: str) -> None:
        async with slots:
            computed = now_ms()
            stock = await shop.ledger.stock(sku)
            value, _ = level_value(book, sku, [("online", loc)], stock)
            item, location = shop.level_of(sku, loc)
            while True:
                try:
                    await client.set_available([SetQuantity(item, location, value, None)], str(uuid.uuid4()))
                    break
                except ShopifyThrottled as exc:
                    await asyncio.sleep(exc.retry_after or 1.0)
                except ShopifyTransientError:
                    await asyncio.sleep(0.5)
            confirmations[(item, location)].append((computed, now_ms()))

    def on_applied(n: int, sku: str, loc: str, at: int) -> None:
        applied[n] = (shop.level_of(sku, loc), at)
        task = asyncio.create_task(push(sku, loc))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        took = await drive(shop, events, on_applied)
        ended = time.monotonic()
        if tasks:
            await asyncio.wait(set(tasks), timeout=drain)
        backlog = len(tasks)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wrong = await shop.differences(book)
        fresh, unconfirmed = freshness(applied, confirmations)
        return {
            "events": len(events),
            "sale_seconds": round(took, 2),
            **sim_report(shop),
            "freshness_ms": fresh,
            "unconfirmed_events": unconfirmed,
            "calls_still_queued_at_cutoff": backlog,
            "drain_cutoff_s": drain,
            "converged": wrong == 0,
            "levels_wrong_at_end": wrong,
            "waited_after_sale_s": round(time.monotonic() - ended, 2),
        }
    finally:
        await client.aclose()
        shop.stop()
        delete_prefix(redis_url, shop.prefix)


# --- main -------------------------------------------------------------------------------------------


async def bench(args, redis_url: str, tmp: str) -> dict:
    initial, events, skus = flash_sale(args.seed, args.seconds, args.rate, args.hot, args.tail)
    redis = make_redis(redis_url)
    try:
        ours = await run_publisher(redis, redis_url, tmp, args.plan, initial, events, skus, args.window, args.settle, args.seed)
        naive = await run_naive(redis, redis_url, args.plan, initial, events, skus, args.drain, args.concurrency, args.seed)
    finally:
        await redis.aclose()
    plan = SimulatorConfig(plan=args.plan).limits()
    out = {
        "benchmark": "shopify_flash_sale",
        "plan": args.plan,
        "restore_rate": plan.restore_rate,
        "bucket_size": plan.bucket_size,
        "events": len(events),
        "sale_seconds": args.seconds,
        "event_rate": args.rate,
        "hot_skus": args.hot,
        "tail_skus": args.tail,
        "window_s": args.window,
        "publisher": ours,
        "naive": naive,
    }
    # coalescing: events per HTTP call made (throttled calls are calls too), per quantity pushed
    out["publisher"]["events_per_call"] = round(len(events) / max(1, ours["calls"]), 1)
    out["publisher"]["events_per_quantity"] = round(len(events) / max(1, ours["quantities_pushed"]), 1)
    out["naive"]["events_per_call"] = round(len(events) / max(1, naive["calls"]), 2)
    ratios = {"calls_naive_over_publisher": round(naive["calls"] / max(1, ours["calls"]), 1)}
    if ours["freshness_ms"]["p99"] and naive["freshness_ms"]["p99"]:
        ratios["freshness_p99_naive_over_publisher"] = round(naive["freshness_ms"]["p99"] / ours["freshness_ms"]["p99"], 1)
    out["ratios"] = ratios
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="standard", help="simulator plan (standard = 100 points/s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the sale")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--hot", type=int, default=5, help="hot SKUs (80 %% of the events)")
    parser.add_argument("--tail", type=int, default=500, help="long-tail SKUs (20 %% of the events)")
    parser.add_argument("--window", type=float, default=1.0, help="the publisher's coalescing window (s)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds the publisher gets to converge after the sale")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds the naive client gets after the sale")
    parser.add_argument("--concurrency", type=int, default=32, help="the naive client's calls in flight")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10 s sale, 150 events/s, 200 tail SKUs (under a minute)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rate, args.tail, args.settle, args.drain = 10.0, 150.0, 200, 15.0, 12.0
    redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="av-bench-shopify-")
    if not redis_url:
        server = EmbeddedRedis(tmp.name, appendonly=False).start()
        redis_url = server.url
    try:
        out = asyncio.run(bench(args, redis_url, tmp.name))
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
