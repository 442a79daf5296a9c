"""Flash sale into the ERP: orders checked out on the Shopify simulator flow through the
order-to-ERP flow into a real Tryton; beside it, Tryton's own rate for the same batched
work measured in the same run (the ceiling: what the ERP does with no flow in front of it).

    python -m loadtests.bench_orders                  # 5,000 orders offered over 120 s
    python -m loadtests.bench_orders --orders 300     # a smaller run
    python -m loadtests.bench_orders --erp-db sqlite --erp-processes 1 --batch 1   # as before batching

1. **Ceiling**: `--ceiling-orders` sales posted straight through the ERP port by
   `--workers` clients, each taking `--batch` orders at a time and doing what the flow does
   for them: a party per order (the checkouts are guests, whom customer identity makes a
   party each, in one `create_parties` for a batch), then one `create_sales` and one
   `confirm_sales` for the batch: sales/s, and the seconds spent waiting for each Tryton
   method (where the ERP's time goes).
2. **Flow**: `--orders` simulator checkouts, offered at orders/duration per second, each
   order's `orders/create` taken in by the flow's intake (as the webhook route does; a
   `--duplicate-rate` share delivered twice, as Shopify's retries do) while `--workers`
   order workers post them, `--batch` per claim. Reported: posting throughput (confirmed
   sales/s from the first order in to the last sale confirmed), p50/p99 posting latency
   (webhook received to ERP sale confirmed, the flow's own stamps), duplicates (ERP sales
   beyond one per order: must be 0), lost (orders with no confirmed sale: must be 0),
   wrong (a sale whose reference is no order of the run, or whose total is not the
   order's: must be 0), and ERP sales not in Tryton's `processing` state (must be 0).

Tryton: on PostgreSQL (`--erp-db`, default the local server at 127.0.0.1:5432 when it
answers, else SQLite) with `--erp-processes` trytond processes over the one database
(SQLite serialises every write on its file lock, so it gets one); each worker talks to one
of them. The database is made from a template (PostgreSQL) or the cached SQLite file (the
first set-up takes minutes) and dropped at the end. Redis: AVAILABILITY_REDIS_URL or an
embedded server (loadtests/target.py). Peak memory: the bench process (intake, workers) and
each trytond process (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from adapters.erp.port import ErpError, ErpUnavailable
from adapters.erp.tryton.client import TrytonErp
from adapters.erp.tryton.server import ErpHome, TrytonServer
from adapters.erp.tryton.setup import drop_pg_database
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
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/"


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _by_call(clients: list[TrytonErp]) -> dict:
    """Tryton method -> calls and seconds, summed over the clients (where the ERP's time goes)."""
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for c in clients:
        for k, v in c.call_seconds.items():
            seconds[k] += v
            calls[k] += c.calls[k]
    return {k.removeprefix("model."): {"calls": calls[k], "seconds": round(seconds[k], 1)}
            for k in sorted(seconds, key=seconds.get, reverse=True)}


def _simulator(seed: int) -> SimulatorState:
    sim = SimulatorState(SimulatorConfig(seed=seed))
    loc = sim.add_location("DC1")
    for sku in SKUS:
        sim.stock(sim.add_item(sku), loc, 1_000_000)
    return sim


async def ceiling(urls: list[str], password: str, shop: str, orders: int, workers: int, batch: int) -> dict:
    """Tryton posting the flow's work with nothing in front of it: a party per order, one
    create and one confirm per batch, `workers` clients at a time."""
    sim = _simulator(11)
    drafts = []
    for i in range(orders):
        body, _ = sim.checkout([{"sku": SKUS[i % len(SKUS)], "quantity": 1 + i % 3}])
        drafts.append(mapping.to_sale(shop, body))
    clients = [TrytonErp(urls[i % len(urls)], "admin", password) for i in range(workers)]
    batches = [drafts[i:i + batch] for i in range(0, len(drafts), batch)]
    failed = 0

    async def transient(step):
        for attempt in range(50):  # the retry the flow makes on a transient answer
            try:
                return await step()
            except ErpUnavailable:
                await asyncio.sleep(min(2.0, 0.05 * (attempt + 1)))
        raise RuntimeError("Tryton stayed unavailable")

    async def run(erp: TrytonErp) -> None:
        nonlocal failed
        while batches:
            group = batches.pop()
            parties = await transient(lambda g=group: erp.create_parties([d.party for d in g]))
            sales = await transient(lambda g=group, p=parties: erp.create_sales(list(zip(g, p))))
            ids = [s.id for s in sales if not isinstance(s, ErpError)]
            done = await transient(lambda i=ids: erp.confirm_sales(i))
            failed += sum(isinstance(s, ErpError) for s in [*sales, *done])

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    elapsed = time.perf_counter() - started
    by_call = _by_call(clients)
    for c in clients:
        await c.aclose()
    return {"orders": orders, "workers": workers, "batch": batch, "seconds": round(elapsed, 2),
            "sales_per_sec": round(orders / elapsed, 2), "failed": failed, "tryton_seconds_by_call": by_call}


async def flash_sale(args, redis_url: str, scratch: str, urls: list[str], password: str, shop: str) -> dict:
    redis = make_redis(redis_url)
    prefix = f"bench-orders-{uuid.uuid4().hex[:6]}"
    store = await OrderStore(f"sqlite+aiosqlite:///{scratch}/orders.db").open()
    queue = OrderQueue(redis, prefix)
    intake = OrderIntake(store, queue, shop=shop)
    sim = _simulator(args.seed)
    clients = [TrytonErp(urls[i % len(urls)], "admin", password) for i in range(args.workers)]
    workers = [OrderWorker(store, queue, c, config=WorkerConfig(batch=args.batch, idle_sleep_s=0.05)) for c in clients]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    rng = sim._rng  # the simulator's seeded stream: the same run twice offers the same orders
    interval = args.duration / args.orders
    totals: dict[str, Decimal] = {}
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
        totals[answer["reference"]] = Decimal(body["total_price"])
        deliveries += 1
        if rng.random() < args.duplicate_rate:  # Shopify's retry of the same delivery
            await intake.enqueue_order_webhook("orders/create", body, headers)
            deliveries += 1
            duplicates_sent += 1
    offered_s = time.perf_counter() - started
    deadline = time.monotonic() + args.timeout
    progress = time.monotonic()
    while time.monotonic() < deadline:
        counts = await store.counts()
        if counts.get("confirmed", 0) + counts.get("exception", 0) >= len(totals):
            break
        if time.monotonic() - progress > 60:
            progress = time.monotonic()
            print(json.dumps({"at_s": round(time.perf_counter() - started), "states": counts}), flush=True)
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    docs = {d.reference: d for d in await store.documents(shop=shop)}
    confirmed = [d for d in docs.values() if d.state == "confirmed" and d.confirmed_ms]
    latencies = [(d.confirmed_ms - d.received_ms) / 1000 for d in confirmed]
    first_in = min(d.received_ms for d in docs.values())
    last_out = max((d.confirmed_ms for d in confirmed), default=first_in)
    sales = await clients[0].list_sales(f"{shop}#")
    per_ref: dict[str, int] = defaultdict(int)
    wrong = not_processing = 0
    for s in sales:
        per_ref[s.reference] += 1
        wrong += s.reference not in totals or s.total != totals[s.reference]
        not_processing += s.state != "processing"
    by_call = _by_call(clients)
    for c in clients:
        await c.aclose()
    await store.close()
    await redis.aclose()
    return {
        "orders": args.orders, "deliveries": deliveries, "duplicate_deliveries": duplicates_sent,
        "offered_seconds": round(offered_s, 1), "offered_per_sec": round(args.orders / max(offered_s, 1e-9), 2),
        "workers": args.workers, "batch": args.batch,
        "seconds_to_last_confirmed": round((last_out - first_in) / 1000, 1),
        "posted_per_sec": round(len(confirmed) / max((last_out - first_in) / 1000, 1e-9), 2),
        "latency_seconds": {"p50": _quantile(latencies, 0.5), "p99": _quantile(latencies, 0.99),
                            "max": max(latencies, default=None)},
        "confirmed": len(confirmed), "exceptions": sum(d.state == "exception" for d in docs.values()),
        "erp_sales": len(sales), "erp_references": len(per_ref),
        "duplicates": sum(n - 1 for n in per_ref.values() if n > 1),
        "lost": len(set(totals) - {d.reference for d in confirmed} | set(totals) - set(per_ref)),
        "wrong": wrong, "erp_sales_not_processing": not_processing,
        "tryton_seconds_by_call": by_call,
    }


def _erp_db(choice: str) -> str | None:
    """The PostgreSQL URI to run Tryton on, or None for SQLite."""
    if choice == "sqlite":
        return None
    uri = LOCAL_PG if choice == "auto" else choice
    try:
        import psycopg  # noqa: PLC0415 - the erp-postgresql extra

        psycopg.connect(uri.rstrip("/") + "/postgres", connect_timeout=3).close()
    except Exception as exc:  # auto falls back, an explicit URI does not
        if choice != "auto":
            raise SystemExit(f"PostgreSQL at {uri} is not usable: {exc}") from exc
        return None
    return uri


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def bench(args, redis_url: str, scratch: str) -> dict:
    uri = _erp_db(args.erp_db)
    processes = args.erp_processes or (4 if uri else 1)
    run = uuid.uuid4().hex[:6]
    home = ErpHome(Path(scratch) / "erp", uri=uri, name=f"av_bench_orders_{run}")
    cache = Path(os.environ.get("AVAILABILITY_TEST_ERP_CACHE") or Path(tempfile.gettempdir()) / "availability-erp-cache")
    setup_started = time.perf_counter()
    home.init(SKUS, cache_dir=cache)
    servers: list[TrytonServer] = []
    try:
        for _ in range(processes):
            servers.append(TrytonServer(home.dir.parent, home=home).start())
        setup_s = time.perf_counter() - setup_started
        urls = [s.url for s in servers]
        ceil = await ceiling(urls, servers[0].password(), f"ceiling-{run}", args.ceiling_orders, args.workers,
                             args.batch)
        flow = None if args.ceiling_only else await flash_sale(args, redis_url, scratch, urls,
                                                               servers[0].password(), f"flash-{run}")
        erp_peak = [_peak_rss_mb(s.process.pid) for s in servers if s.process]
    finally:
        for s in servers:
            s.stop()
        if uri and home.initialised():
            drop_pg_database(uri, home.name)
    return {
        "benchmark": "orders",
        "erp": f"tryton ({'PostgreSQL' if uri else 'SQLite'}, {processes} trytond process(es))",
        "erp_setup_seconds": round(setup_s, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": {"bench_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                        "trytond_each": erp_peak},
        "ceiling": ceil, "flow": flow,
        "ratio_flow_to_ceiling": round(flow["posted_per_sec"] / ceil["sales_per_sec"], 2)
        if flow and ceil["sales_per_sec"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds over which the orders are offered")
    parser.add_argument("--workers", type=int, default=4, help="order workers (and ceiling clients)")
    parser.add_argument("--batch", type=int, default=25, help="orders a worker claims and posts per ERP batch")
    parser.add_argument("--erp-db", default="auto", help="auto (local PostgreSQL if it answers, else sqlite), "
                                                          "sqlite, or a postgresql://user@host:port/ URI")
    parser.add_argument("--erp-processes", type=int, default=0, help="trytond processes (default 4 on "
                                                                      "PostgreSQL, 1 on SQLite)")
    parser.add_argument("--ceiling-orders", type=int, default=0, help="sales of the ceiling run (default: orders/10, "
                                                                       "at least 50)")
    parser.add_argument("--duplicate-rate", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the flow to drain")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 orders over 20 s")
    parser.add_argument("--ceiling-only", action="store_true", help="measure Tryton alone (comparing set-ups)")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.duration = 200, 20.0
    args.ceiling_orders = args.ceiling_orders or max(50, args.orders // 10)
    with bench_redis("av-bench-orders-") as (redis_url, scratch):
        out = asyncio.run(bench(args, redis_url, scratch))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
