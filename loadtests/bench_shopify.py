"""Benchmark: a flash sale pushed to the Shopify simulator by our publisher, beside a
batched, paced client with no coalescing window, same events, same plan, same run, at
each simulator cost model. Prints JSON.

    python -m loadtests.bench_shopify [--plan standard] [--seconds 30] [--rate 200]
                                      [--hot 5] [--tail 500] [--window 1.0] [--quick]
                                      [--cost-models documented,pessimistic] [--safety 300]

The sale: `rate` events per second for `seconds`, 80 % on a few hot SKUs (one of them sells
out and is restocked mid-sale: zero crossings), 20 % on a long tail; every event is applied
through the real ledger while the pushers run. Both sides start from a synced shop
(Shopify levels and the publisher's known values equal to ATS) and each gets its own
simulator with the same plan and cost model, so neither spends the other's points.

The baseline (`run_baseline`) is what a careful integration without our publisher would
do: push every change in the next call the bucket allows, up to 250 entries per call,
paced from `throttleStatus` with the same governor and learnt cost estimate as ours, but
no coalescing window, no compare-and-set and no urgency order. Both sides run to
convergence (every Shopify level equal to ATS) after the sale, bounded by a safety timeout
(`--safety`) that is reported (`safety_timeout_hit`) if reached.

Cost models (adapters/shopify/simulator/config.py): `documented` charges the flat 10
points per mutation shopify.dev documents, on the plan's bucket and restore rate; the flat
10 for a 250-entry inventorySetQuantities is *unverified* (shared/design/shopify.md).
`pessimistic` charges 10 + 1 per entry on half the bucket and half the restore rate.

Freshness is measured per event, from the moment it was applied to the ledger to the moment
Shopify confirmed a value computed after it (or the publisher found Shopify already held
it). `--quick` (10 s sale, 150 events/s, 200 tail SKUs) runs in a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from adapters.shopify.client import (
    MAX_ENTRIES_PER_CALL,
    SetQuantity,
    ShopifyAdminClient,
    ShopifyThrottled,
    ShopifyTransientError,
    ThrottleGovernor,
)
from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.domain.rules import Channel, Location, RuleBook
from availability.flows.machinery import now_ms
from availability.flows.inventory.mappings import LevelKey, ShopifyMappings, level_value
from availability.flows.inventory.publisher import Confirmation, Publisher, PushConfig
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore
from loadtests.ceilings import delete_prefix
from loadtests.target import bench_redis

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


def plain_book() -> RuleBook:
    """MASTER as a rule book without the rule store (the baseline has no rules service)."""
    return RuleBook(
        version=1,
        locations=[Location(code="DC1", priority=1), Location(code="S1", priority=2, type="store")],
        channels=[Channel(name="online", locations=LOCATIONS)],
        rules=[],
    )


def _event(kind: str, sku: str, loc: str, qty: int, n: int) -> StockEvent:
    return StockEvent(
        event_id=f"bench-{n}", type=kind, source="pos" if kind == "pos_sale" else "wms",
        occurred_at=datetime.now(UTC), sku=sku, location=loc, quantity=qty,
    )


class Shop:
    """One simulator plus one ledger prefix, seeded with the same initial stock."""

    def __init__(
        self, redis, plan: str, initial: dict[tuple[str, str], int], skus: list[str], seed: int, cost_model: str
    ) -> None:
        self.sim = SimulatorServer(SimulatorConfig(plan=plan, seed=seed, cost_model=cost_model))
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
        await self.ledger.forget_dirty()  # the seed is history: start synced

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


async def run_publisher(
    redis, redis_url: str, tmp: str, plan: str, cost_model: str, initial, events, skus, window: float, safety: float, seed: int
) -> dict:
    shop = Shop(redis, plan, initial, skus, seed, cost_model)
    await shop.start()
    store = RuleStore(f"sqlite+aiosqlite:///{tmp}/bench-{shop.prefix}.db")
    await store.start()
    client = None
    publisher = None
    try:
        await store.import_master_data(MASTER, actor="bench")
        await store.mappings.set_item_mappings(shop.items, actor="bench")
        await store.mappings.set_location_mappings([("online", loc, gid) for loc, gid in shop.locations.items()], actor="bench")
        rules = RuleCache(store)
        await rules.start()
        known = await shop.seed_shopify(rules.book)
        confirmations: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)

        def on_confirm(c: Confirmation) -> None:
            confirmations[(c.key.item, c.key.location)].append((c.computed_ms, c.confirmed_ms))

        client = ShopifyAdminClient(shop.sim.base_url, shop.sim.config.access_token, governor=ThrottleGovernor())
        publisher = Publisher(
            ledger=shop.ledger, rules=rules, mappings=store.mappings, client=client,
            config=PushConfig(window_s=window), on_confirm=on_confirm,
        )
        stamp = now_ms()
        await publisher.state.record_known((key, value, stamp, "push") for key, value in known.items())
        await publisher.start()
        applied: dict[int, tuple[tuple[str, str], int]] = {}
        took = await drive(shop, events, lambda n, sku, loc, at: applied.__setitem__(n, (shop.level_of(sku, loc), at)))
        ended = time.monotonic()
        deadline = ended + safety
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
            "safety_timeout_s": safety,
            "safety_timeout_hit": wrong > 0,
            "learnt_cost_250_entries": client.mutation_cost(MAX_ENTRIES_PER_CALL),
        }
        await rules.stop()
        return report
    finally:
        if client is not None:
            await client.aclose()
        await store.close()
        shop.stop()
        delete_prefix(redis_url, shop.prefix)


# --- the baseline: batched, paced, no window -----------------------------------------------------


async def run_baseline(redis, redis_url: str, plan: str, cost_model: str, initial, events, skus, safety: float, seed: int) -> dict:
    """The strongest simple client: every change is pushed in the next call the bucket
    allows, up to 250 entries per call, paced from ``throttleStatus`` (the same governor and
    learnt cost estimate as ours), no coalescing window, no compare-and-set. A level
    changed again before its call leaves has one entry with the value read when the call
    is built (Shopify refuses the same level twice in one call). One call at a time, so
    an older value can never land after a newer one."""
    shop = Shop(redis, plan, initial, skus, seed, cost_model)
    await shop.start()
    book = plain_book()
    await shop.seed_shopify(book)
    gov = ThrottleGovernor()
    client = ShopifyAdminClient(shop.sim.base_url, shop.sim.config.access_token, governor=gov)
    confirmations: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    applied: dict[int, tuple[tuple[str, str], int]] = {}
    pending: dict[tuple[str, str], tuple[str, str]] = {}  # level -> (sku, location), oldest first
    wake = asyncio.Event()
    done = False
    counters = {"entries_pushed": 0, "throttled_retries": 0, "transient_retries": 0}

    async def sender() -> None:
        while pending or not done:
            if not pending:
                wake.clear()
                await wake.wait()
                continue
            # pace before building the call, so the values read are fresh when it leaves
            while (delay := gov.delay_for(client.mutation_cost(min(MAX_ENTRIES_PER_CALL, len(pending))))) > 0:
                await asyncio.sleep(min(delay, 0.05))
            levels = list(pending)[:MAX_ENTRIES_PER_CALL]
            batch = [pending.pop(level) for level in levels]
            computed = now_ms()
            stock = await shop.ledger.stock_many(sorted({sku for sku, _ in batch}))
            entries = [
                SetQuantity(*level, level_value(book, sku, [("online", loc)], stock[sku])[0], None)
                for level, (sku, loc) in zip(levels, batch, strict=True)
            ]
            key = str(uuid.uuid4())
            while True:
                try:
                    await client.set_available(entries, key)
                    break
                except ShopifyThrottled as exc:
                    counters["throttled_retries"] += 1
                    await asyncio.sleep(exc.retry_after or 1.0)
                except ShopifyTransientError:
                    counters["transient_retries"] += 1
                    await asyncio.sleep(0.5)
            confirmed = now_ms()
            counters["entries_pushed"] += len(entries)
            for level in levels:
                confirmations[level].append((computed, confirmed))

    def on_applied(n: int, sku: str, loc: str, at: int) -> None:
        level = shop.level_of(sku, loc)
        applied[n] = (level, at)
        pending.setdefault(level, (sku, loc))
        wake.set()

    task = asyncio.create_task(sender())
    try:
        took = await drive(shop, events, on_applied)
        ended = time.monotonic()
        done = True
        wake.set()
        deadline = ended + safety
        # the sender ends once its queue is empty (its last call answered), not before:
        # cutting that call off would leave its events unconfirmed
        await asyncio.wait({task}, timeout=safety)
        while time.monotonic() < deadline and await shop.differences(book):
            await asyncio.sleep(0.05)
        converge_s = time.monotonic() - ended
        cut_off = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        wrong = await shop.differences(book)
        fresh, unconfirmed = freshness(applied, confirmations)
        return {
            "events": len(events),
            "sale_seconds": round(took, 2),
            **sim_report(shop),
            **counters,
            "freshness_ms": fresh,
            "unconfirmed_events": unconfirmed,
            "converged": wrong == 0,
            "levels_wrong_at_end": wrong,
            "converged_after_sale_s": round(converge_s, 2),
            "safety_timeout_s": safety,
            "safety_timeout_hit": wrong > 0 or cut_off,
            "learnt_cost_250_entries": client.mutation_cost(MAX_ENTRIES_PER_CALL),
        }
    finally:
        await client.aclose()
        shop.stop()
        delete_prefix(redis_url, shop.prefix)


# --- main -------------------------------------------------------------------------------------------


async def compare(args, redis, redis_url: str, tmp: str, cost_model: str, initial, events, skus) -> dict:
    ours = await run_publisher(
        redis, redis_url, tmp, args.plan, cost_model, initial, events, skus, args.window, args.safety, args.seed
    )
    base = await run_baseline(redis, redis_url, args.plan, cost_model, initial, events, skus, args.safety, args.seed)
    limits = SimulatorConfig(plan=args.plan, cost_model=cost_model).limits()
    costs = SimulatorConfig(cost_model=cost_model).costs()
    for part in (ours, base):
        # events per HTTP call made (throttled calls are calls too), per quantity pushed
        part["events_per_call"] = round(len(events) / max(1, part["calls"]), 1)
        part["events_per_quantity"] = round(len(events) / max(1, part["quantities_pushed"]), 1)
    ratios = {"calls_baseline_over_publisher": round(base["calls"] / max(1, ours["calls"]), 2)}
    for q in ("p50", "p99"):
        if ours["freshness_ms"][q] and base["freshness_ms"][q]:
            ratios[f"freshness_{q}_baseline_over_publisher"] = round(base["freshness_ms"][q] / ours["freshness_ms"][q], 2)
    return {
        "cost_model": cost_model,
        "restore_rate": limits.restore_rate,
        "bucket_size": limits.bucket_size,
        "mutation_cost": costs.mutation_cost,
        "mutation_entry_cost": costs.mutation_entry_cost,
        "publisher": ours,
        "baseline": base,
        "ratios": ratios,
    }


async def bench(args, redis_url: str, tmp: str) -> dict:
    initial, events, skus = flash_sale(args.seed, args.seconds, args.rate, args.hot, args.tail)
    redis = make_redis(redis_url)
    try:
        runs = {m: await compare(args, redis, redis_url, tmp, m, initial, events, skus) for m in args.cost_models}
    finally:
        await redis.aclose()
    first = runs[args.cost_models[0]]
    return {
        "benchmark": "shopify_flash_sale",
        "plan": args.plan,
        "events": len(events),
        "sale_seconds": args.seconds,
        "event_rate": args.rate,
        "hot_skus": args.hot,
        "tail_skus": args.tail,
        "window_s": args.window,
        "quick": args.quick,
        # the first cost model's figures at the top level (the suite's table reads these)
        "cost_model": first["cost_model"],
        "publisher": first["publisher"],
        "baseline": first["baseline"],
        "ratios": first["ratios"],
        "cost_models": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="standard", help="simulator plan (standard = 100 points/s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the sale")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--hot", type=int, default=5, help="hot SKUs (80 %% of the events)")
    parser.add_argument("--tail", type=int, default=500, help="long-tail SKUs (20 %% of the events)")
    parser.add_argument("--window", type=float, default=1.0, help="the publisher's coalescing window (s)")
    parser.add_argument(
        "--safety", type=float, default=300.0,
        help="safety timeout (s) for converging after the sale; reported as safety_timeout_hit if reached",
    )
    parser.add_argument(
        "--cost-models", default="documented,pessimistic",
        help="simulator cost presets to compare at, comma-separated (adapters/shopify/simulator/config.py)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10 s sale, 150 events/s, 200 tail SKUs (under a minute)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rate, args.tail = 10.0, 150.0, 200
    args.cost_models = [m.strip() for m in args.cost_models.split(",") if m.strip()]
    with bench_redis("av-bench-shopify-") as (redis_url, scratch):
        out = asyncio.run(bench(args, redis_url, scratch))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
