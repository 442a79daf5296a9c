"""Month-end finance posting: a month of Shopify Payments balance transactions (100,000 by
default) posted by the finance flow into a real Tryton, beside the ERP's own journal-entry
create rate measured in the same run (its ceiling) and the plain read of every page from
the simulator (the Shopify side's ceiling).

    python -m loadtests.bench_finance                      # 100,000 transactions, 30 days
    python -m loadtests.bench_finance --transactions 20000 --days 30
    python -m loadtests.bench_finance --quick              # 6,000 transactions, 10 days

The simulator runs in its own process (its bucket is set high: this measures posting, not
Shopify's rate limit, which a real shop's plan sets); Tryton runs in its own process over
a copy of the test database template (built once, cached under
AVAILABILITY_TEST_ERP_CACHE or the temp dir). Peak memory is this process's (the flow's)
maximum RSS. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx

from adapters.erp.port import JournalEntryDraft
from adapters.erp.tryton.client import TrytonErp
from adapters.erp.tryton.server import ErpHome, TrytonServer, free_port, trytond_available
from adapters.shopify.client import ShopifyAdminClient
from adapters.shopify.payments import ShopifyPayments
from availability.flows.finance import mapping
from availability.flows.finance.flow import FinanceConfig, FinanceFlow, finance_queue
from availability.flows.finance.store import FinanceStore
from loadtests.target import bench_redis

SHOP = "bench.myshopify.com"
TOKEN = "shpat_simulator"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _start_simulator(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "adapters.shopify.simulator", "--port", str(port),
                             "--restore-rate", "10000000", "--bucket-size", "100000000", "--seed-items", "20",
                             "--seed-locations", "1", "--initial-available", "1000000000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sim/payments/config", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def _template(scratch: Path) -> ErpHome:
    from tests.flows_erp.conftest import SKUS, _cache_dir  # the tests' template: built once, cached

    home = ErpHome(scratch / "erp-data")
    home.init(SKUS, cache_dir=_cache_dir())
    return home


async def _ceiling(erp: TrytonErp, shapes: list[JournalEntryDraft], run_id: str) -> dict:
    """The ERP alone: create and post entries of the flow's shapes, one after the other."""
    started = time.perf_counter()
    for i, draft in enumerate(shapes):
        await erp.post_journal_entry(JournalEntryDraft(reference=f"ceiling-{run_id}-{i}", date=draft.date,
                                                       lines=draft.lines, description=draft.description))
    seconds = time.perf_counter() - started
    return {"entries": len(shapes), "seconds": round(seconds, 2), "entries_per_s": round(len(shapes) / seconds, 2)}


async def run(args) -> dict:
    start = dt.date.today().replace(day=1)
    per_day = max(1, round(args.transactions / args.days / 1.25))  # each 4th order also has a refund
    port = free_port()
    sim = _start_simulator(port)
    out: dict = {"benchmark": "finance", "days": args.days, "start": start.isoformat()}
    try:
        with bench_redis("av-bench-finance-") as (redis_url, scratch_dir):
            scratch = Path(scratch_dir)
            t0 = time.perf_counter()
            made = httpx.post(f"http://127.0.0.1:{port}/_sim/payments/generate", timeout=3600, json={
                "start": start.isoformat(), "days": args.days, "orders_per_day": per_day, "refund_every": 4,
            }).json()
            out["generate_seconds"] = round(time.perf_counter() - t0, 1)
            out["transactions"] = made["transaction_count"]
            out["payouts"] = made["payout_status"]
            client = ShopifyAdminClient(f"http://127.0.0.1:{port}", TOKEN, timeout=120)
            payments = ShopifyPayments(client)

            # the Shopify side alone: every payout's pages, no posting
            t0 = time.perf_counter()
            listed = await payments.payouts(issued_from=start)
            read = 0
            for p in listed:
                read += len(await payments.payout_transactions(p))
            out["read_ceiling"] = {"transactions": read, "seconds": round(time.perf_counter() - t0, 2),
                                   "transactions_per_s": round(read / (time.perf_counter() - t0))}

            home = _template(scratch)
            server = TrytonServer(home.dir.parent).start()
            erp = TrytonErp(server.url, server.login, server.password(), timeout=300)
            from redis.asyncio import Redis  # noqa: PLC0415

            redis = Redis.from_url(redis_url)
            store = await FinanceStore(f"sqlite+aiosqlite:///{scratch}/finance.db").open()
            try:
                flow = FinanceFlow(store, finance_queue(redis, f"bench{os.getpid()}"), erp, payments, shop=SHOP,
                                   config=FinanceConfig(lease_ms=600_000, batch=10))
                rss_before = _rss_mb()
                t0 = time.perf_counter()
                await flow.poll(issued_from=start)
                await flow.drain(timeout=7200)
                seconds = time.perf_counter() - t0
                counts = await store.counts()
                posted = await store.transaction_count()
                entries = await erp.list_journal_entries(f"{SHOP}#payout-")
                out["flow"] = {
                    "seconds": round(seconds, 2), "transactions_posted": posted,
                    "transactions_per_s": round(posted / seconds, 1),
                    "entries": len(entries), "entries_per_s": round(len(entries) / seconds, 2),
                    "states": counts, "duplicates": len(entries) - len({e.reference for e in entries}),
                    "peak_rss_mb": round(_rss_mb(), 1), "rss_before_mb": round(rss_before, 1),
                }
                # the ERP's own rate for the same entries (same line shapes), same run
                shapes = []
                for p in listed[: args.ceiling_entries]:
                    if p.status != "SCHEDULED":
                        shapes.append(mapping.payout_entry("ceiling", p, await payments.payout_transactions(p)))
                out["erp_ceiling"] = await _ceiling(erp, shapes, str(os.getpid()))
                out["flow_vs_erp_ceiling"] = round(out["flow"]["entries_per_s"] / out["erp_ceiling"]["entries_per_s"], 3)
                # the same work done by its two peers alone: read every page, then let Tryton post the entries
                same_work = out["read_ceiling"]["seconds"] + out["flow"]["entries"] / out["erp_ceiling"]["entries_per_s"]
                out["same_work_ceiling_seconds"] = round(same_work, 1)
                out["flow_vs_same_work"] = round(seconds / same_work, 2)
                out["ok"] = out["flow"]["duplicates"] == 0 and not counts.get("pending") and not counts.get("exception")
            finally:
                await store.close()
                await erp.aclose()
                await client.aclose()
                await redis.aclose()
                server.stop()
    finally:
        sim.terminate()
        sim.wait(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000, help="balance transactions in the month")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--ceiling-entries", type=int, default=10, help="entries the ERP ceiling posts")
    parser.add_argument("--quick", action="store_true", help="6,000 transactions over 10 days")
    args = parser.parse_args()
    if args.quick:
        args.transactions, args.days, args.ceiling_entries = 6000, 10, 5
    reason = trytond_available()
    if reason:
        print(json.dumps({"benchmark": "finance", "skipped": reason}))
        return
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
