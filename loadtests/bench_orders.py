"""Flash sale into the ERP: orders checked out on the Shopify simulator flow through the
order-to-ERP flow into a real Tryton; beside it, Tryton's own create-and-confirm rate
measured in the same run (the ceiling: what the ERP does with no flow in front of it).

    python -m loadtests.bench_orders                  # 5,000 orders offered over 120 s
    python -m loadtests.bench_orders --orders 300     # a smaller run (minutes under load)

1. **Ceiling**: `--ceiling-orders` sales created and confirmed straight through the ERP
   port (party, create, confirm), `--workers` at a time: sales/s.
2. **Flow**: `--orders` simulator checkouts, offered at orders/duration per second, each
   order's `orders/create` taken in by the flow's intake (as the webhook route does; a
   `--duplicate-rate` share delivered twice, as Shopify's retries do) while `--workers`
   order workers post them. Reported: posting throughput (confirmed sales/s from the first
   order in to the last sale confirmed), p50/p99 posting latency (webhook received to ERP
   sale confirmed, the flow's own stamps), duplicates (ERP sales beyond one per order: must
   be 0) and lost (orders with no confirmed sale: must be 0).

Redis: AVAILABILITY_REDIS_URL or an embedded server (loadtests/target.py). Tryton: a
database set up under the scratch folder (cached under AVAILABILITY_TEST_ERP_CACHE or the
temp dir, as the tests do: the first set-up takes minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from adapters.erp.port import ErpUnavailable
from adapters.erp.tryton.client import TrytonErp
from adapters.erp.tryton.server import ErpHome, TrytonServer
from adapters.shopify.simulator import SimulatorConfig
from adapters.shopify.simulator.state import SimulatorState
from availability.bootstrap import make_redis
from availability.flows.orders import mapping
from availability.flows.orders.flow import (
    OrderIntake,
    OrderQueue,
    OrderWorker,
    WorkerConfig,
)
from availability.flows.orders.store import OrderStore
from loadtests.target import bench_redis

#: the test suite's SKUs, so the cached ERP template of the tests serves here too
SKUS = ["TEE-BLK-M", "CAP-RED", "HOODIE-GRY-XL", "MUG-CLASSIC"] + [f"SKU-{i:04d}" for i in range(1, 21)]


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def ceiling(erp_url: str, password: str, shop: str, orders: int, workers: int) -> dict:
    """Tryton creating and confirming sales with nothing in front of it."""
    sim = SimulatorState(SimulatorConfig(seed=11))
    loc = sim.add_location("DC1")
    for sku in SKUS:
        sim.stock(sim.add_item(sku), loc, 1_000_000)
    drafts = []
    for i in range(orders):
        body, _ = sim.checkout([{"sku": SKUS[i % len(SKUS)], "quantity": 1 + i % 3}])
        drafts.append(mapping.to_sale(shop, body))
    clients = [TrytonErp(erp_url, "admin", password) for _ in range(workers)]
    queue: asyncio.Queue = asyncio.Queue()
    for d in drafts:
        queue.put_nowait(d)

    async def run(erp: TrytonErp) -> None:
        while not queue.empty():
            draft = queue.get_nowait()
            for attempt in range(20):  # the same retry the flow makes on a transient answer
                try:
                    party = await erp.find_or_create_party(draft.party)
                    sale = await erp.create_sale(draft, party)
                    await erp.confirm_sale(sale.id)
                    break
                except ErpUnavailable:
                    await asyncio.sleep(0.05 * (attempt + 1))

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    elapsed = time.perf_counter() - started
    for c in clients:
        await c.aclose()
    return {"orders": orders, "workers": workers, "seconds": round(elapsed, 2),
            "sales_per_sec": round(orders / elapsed, 2)}


async def flash_sale(args, redis_url: str, scratch: str, erp_url: str, password: str, shop: str) -> dict:
    redis = make_redis(redis_url)
    prefix = f"bench-orders-{uuid.uuid4().hex[:6]}"
    store = await OrderStore(f"sqlite+aiosqlite:///{scratch}/orders.db").open()
    queue = OrderQueue(redis, prefix)
    intake = OrderIntake(store, queue, shop=shop)
    sim = SimulatorState(SimulatorConfig(seed=args.seed))
    loc = sim.add_location("DC1")
    for sku in SKUS:
        sim.stock(sim.add_item(sku), loc, 1_000_000)
    clients = [TrytonErp(erp_url, "admin", password) for _ in range(args.workers)]
    workers = [OrderWorker(store, queue, c, config=WorkerConfig(batch=5, idle_sleep_s=0.05)) for c in clients]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    rng = sim._rng  # the simulator's seeded stream: the same run twice offers the same orders
    interval = args.duration / args.orders
    references: list[str] = []
    deliveries = duplicates_sent = 0
    started = time.perf_counter()
    for i in range(args.orders):
        target = started + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body, _ = sim.checkout([{"sku": SKUS[rng.randrange(len(SKUS))], "quantity": 1 + rng.randrange(3)}])
        headers = {"X-Shopify-Shop-Domain": shop, "X-Shopify-Webhook-Id": f"wh-{i}"}
        answer = await intake.enqueue_order_webhook("orders/create", body, headers)
        references.append(answer["reference"])
        deliveries += 1
        if rng.random() < args.duplicate_rate:  # Shopify's retry of the same delivery
            await intake.enqueue_order_webhook("orders/create", body, headers)
            deliveries += 1
            duplicates_sent += 1
    offered_s = time.perf_counter() - started
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        counts = await store.counts()
        if counts.get("confirmed", 0) + counts.get("exception", 0) >= len(references):
            break
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    docs = {d.reference: d for d in await store.documents(shop=shop)}
    confirmed = [d for d in docs.values() if d.state == "confirmed" and d.confirmed_ms]
    latencies = [(d.confirmed_ms - d.received_ms) / 1000 for d in confirmed]
    first_in = min(d.received_ms for d in docs.values())
    last_out = max((d.confirmed_ms for d in confirmed), default=first_in)
    sales = await clients[0].list_sales(f"{shop}#")
    per_ref: dict[str, int] = {}
    for s in sales:
        per_ref[s.reference] = per_ref.get(s.reference, 0) + (s.state != "cancelled")
    for c in clients:
        await c.aclose()
    await store.close()
    await redis.aclose()
    return {
        "orders": args.orders, "deliveries": deliveries, "duplicate_deliveries": duplicates_sent,
        "offered_seconds": round(offered_s, 1), "offered_per_sec": round(args.orders / max(offered_s, 1e-9), 2),
        "workers": args.workers,
        "posted_per_sec": round(len(confirmed) / max((last_out - first_in) / 1000, 1e-9), 2),
        "latency_seconds": {"p50": _quantile(latencies, 0.5), "p99": _quantile(latencies, 0.99),
                            "max": max(latencies, default=None)},
        "confirmed": len(confirmed), "exceptions": sum(d.state == "exception" for d in docs.values()),
        "duplicates": sum(n - 1 for n in per_ref.values() if n > 1),
        "lost": len(set(references) - {d.reference for d in confirmed}),
    }


async def bench(args, redis_url: str, scratch: str) -> dict:
    home = ErpHome(Path(scratch) / "erp")
    cache = Path(os.environ.get("AVAILABILITY_TEST_ERP_CACHE") or Path(tempfile.gettempdir()) / "availability-erp-cache")
    setup_started = time.perf_counter()
    home.init(SKUS, cache_dir=cache)
    server = TrytonServer(Path(scratch) / "erp").start()
    setup_s = time.perf_counter() - setup_started
    try:
        run = uuid.uuid4().hex[:6]
        ceil = await ceiling(server.url, server.password(), f"ceiling-{run}", args.ceiling_orders, args.workers)
        flow = await flash_sale(args, redis_url, scratch, server.url, server.password(), f"flash-{run}")
    finally:
        server.stop()
    return {
        "benchmark": "orders", "erp": "tryton (SQLite, one trytond process)",
        "erp_setup_seconds": round(setup_s, 1),
        "ceiling": ceil, "flow": flow,
        "ratio_flow_to_ceiling": round(flow["posted_per_sec"] / ceil["sales_per_sec"], 2) if ceil["sales_per_sec"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds over which the orders are offered")
    parser.add_argument("--workers", type=int, default=4, help="order workers (and ceiling clients)")
    parser.add_argument("--ceiling-orders", type=int, default=0, help="sales of the ceiling run (default: orders/10, "
                                                                       "at least 50)")
    parser.add_argument("--duplicate-rate", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the flow to drain")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 orders over 20 s")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.duration = 200, 20.0
    args.ceiling_orders = args.ceiling_orders or max(50, args.orders // 10)
    with bench_redis("av-bench-orders-") as (redis_url, scratch):
        out = asyncio.run(bench(args, redis_url, scratch))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
