"""Flash-sale load test, end to end, with a reconciliation that proves no oversell.

    python -m loadtests.flash_sale [--users 60] [--duration 60] [--skus 2000] [--max-error-rate 0.01]

1. Starts an embedded Redis, loads the demo catalogue (master data, rules, Shopify
   mappings, opening stock) and starts the Shopify Admin simulator.
2. Starts `availability serve` (API, consumer, publisher, expiry sweeper) as operators do.
3. Runs locust headless (loadtests/locustfile.py: storefront lookups and batches,
   checkouts on hot SKUs that commit / release / abandon, POS sales, WMS receipts) with a
   fixed user count and duration, writing CSV and JSON under loadtests/results/.
4. Reconciles: for every (SKU, location) the ledger holds, reserved + allocated never
   exceed on_hand − unsellable − safety stock (nothing was promised that was not there),
   and per hot SKU the units checkouts committed never exceed the opening stock plus the
   receipts posted during the sale. Latency percentiles come from the server's own
   Prometheus histogram too, because locust rounds sub-100 ms times to whole milliseconds.

Exits non-zero on any oversell, on an error rate above the threshold, or if locust fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import msgspec

from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.demo.catalogue import build_catalogue, shopify_mappings
from availability.demo.run import SHOP_DOMAIN, SHOPIFY_TOKEN, WEBHOOK_SECRET, seed, start_simulator
from availability.embedded_redis import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[1]
KEY = "flash-sale-load-test-key"


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"service at {url} not ready within {timeout}s")


async def load_catalogue(settings: Settings, cat, items, locations) -> dict[str, int]:
    """Seed, and return the opening on_hand per hot SKU over the online channel's locations."""
    async with open_runtime(settings) as runtime:
        await seed(runtime, cat, items, locations)
        book = runtime.rules.book
        opening = {}
        for sku, stock in (await runtime.ledger.stock_many(cat.hot_skus(10))).items():
            opening[sku] = sum(b.on_hand for loc, b in stock.items() if loc in book.channel_locations("online"))
        return opening


async def reconcile(settings: Settings, cat, opening: dict[str, int], tally: dict) -> dict:
    problems = []
    pairs = 0
    async with open_runtime(settings) as runtime:
        book = runtime.rules.book
        for start in range(0, len(cat.skus), 500):
            chunk = cat.skus[start : start + 500]
            for sku, stock in (await runtime.ledger.stock_many(chunk)).items():
                for loc, b in stock.items():
                    pairs += 1
                    promised = b.reserved + b.allocated
                    sellable = b.on_hand - b.unsellable - book.terms(sku, loc, "online").safety_units
                    # Holds beyond sellable stock at a pair are an oversell, unless POS sales
                    # (physical, unrefusable) took on_hand below holds made before them.
                    if promised > max(0, sellable) and promised > 0 and sku in opening:
                        problems.append({"sku": sku, "location": loc, "promised": promised,
                                         "sellable": sellable, "buckets": msgspec.to_builtins(b)})
        received: dict[str, int] = {}
        for key, quantity in tally.get("received", {}).items():
            sku = key.split("|")[0]
            received[sku] = received.get(sku, 0) + quantity
        per_sku = []
        for sku, start_units in opening.items():
            committed = tally.get("held", {}).get(sku, 0)
            limit = start_units + received.get(sku, 0)
            per_sku.append({"sku": sku, "opening_on_hand": start_units, "received": received.get(sku, 0),
                            "committed_by_checkouts": committed, "oversold": max(0, committed - limit)})
            if committed > limit:
                problems.append({"sku": sku, "committed": committed, "limit": limit})
    return {"pairs_checked": pairs, "hot_skus": per_sku, "oversells": problems}


def server_latency(metrics_text: str, route: str) -> dict:
    """p50/p90/p99 from the server's request histogram for one route (bucket upper bounds)."""
    buckets = []
    pattern = re.compile(r'^availability_http_request_duration_seconds_bucket\{(.*)\} ([0-9.e+]+)$')
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if not match or f'"{route}"' not in match.group(1):
            continue
        le = re.search(r'le="([^"]+)"', match.group(1)).group(1)
        buckets.append((float("inf") if le == "+Inf" else float(le), float(match.group(2))))
    merged: dict[float, float] = {}
    for le, count in buckets:  # several status labels: add them up per bound
        merged[le] = merged.get(le, 0) + count
    ordered = sorted(merged.items())
    total = ordered[-1][1] if ordered else 0
    out = {"requests": int(total)}
    for q in (0.5, 0.9, 0.99):
        bound = next((le for le, count in ordered if total and count >= q * total), None)
        out[f"p{int(q * 100)}_ms_at_most"] = None if bound is None else round(bound * 1000, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--spawn-rate", type=int, default=20)
    parser.add_argument("--duration", type=int, default=60, help="seconds")
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--plan", default="plus")
    args = parser.parse_args()

    results = REPO / "loadtests" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    cat = build_catalogue(skus=args.skus)
    items, locations = shopify_mappings(cat)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="av-flash-") as tmp:
        redis_server = EmbeddedRedis(Path(tmp) / "redis", appendonly=False).start()
        sim = start_simulator(cat, items, locations, f"{base_url}/webhooks/shopify", args.plan)
        env = {
            **os.environ, "PYTHONPATH": str(REPO), "AVAILABILITY_REDIS_URL": redis_server.url,
            "AVAILABILITY_DATA_DIR": tmp, "AVAILABILITY_API_KEYS": json.dumps([{"key": KEY, "scopes": ["admin"]}]),
            "AVAILABILITY_SHOPIFY_URL": sim.base_url, "AVAILABILITY_SHOPIFY_TOKEN": SHOPIFY_TOKEN,
            "AVAILABILITY_SHOPIFY_WEBHOOK_SECRETS": json.dumps([WEBHOOK_SECRET]),
            "AVAILABILITY_SHOPIFY_SHOP_DOMAIN": SHOP_DOMAIN,
            "AVAILABILITY_RATE_LIMIT_PER_SECOND": "0",
        }
        settings = Settings(redis_url=redis_server.url, data_dir=tmp)
        opening = asyncio.run(load_catalogue(settings, cat, items, locations))
        server = subprocess.Popen([sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "serve",
                                   "--port", str(port)], cwd=REPO, env=env)
        tally_path = Path(tmp) / "tally.json"
        try:
            wait_ready(base_url)
            csv_prefix = results / f"flash-{stamp}"
            locust = subprocess.run(
                [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
                 "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s", "--host", base_url,
                 "--csv", str(csv_prefix), "--json", "--only-summary"],
                cwd=REPO, capture_output=True, text=True,
                env={**env, "AVAILABILITY_LOADTEST_KEY": KEY, "AVAILABILITY_LOADTEST_LEDGER": str(tally_path),
                     "AVAILABILITY_LOADTEST_SKUS": ",".join(cat.hot_skus(10)),
                     "AVAILABILITY_LOADTEST_MAX_ERROR_RATE": str(args.max_error_rate)},
                timeout=args.duration + 180,
            )
            (results / f"flash-{stamp}-locust.json").write_text(locust.stdout)
            time.sleep(3)  # let the consumer drain the last events and the sweeper expire nothing new
            metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
            tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
        finally:
            server.terminate()
            server.wait(timeout=30)
            sim.stop()
        report = asyncio.run(reconcile(settings, cat, opening, tally))
        redis_server.stop()
    report.update({
        "users": args.users, "duration_s": args.duration, "skus": args.skus,
        "requests": tally.get("requests"), "failures": tally.get("failures"),
        "reservations": tally.get("reservations"), "sold_out_answers": tally.get("refused"),
        "locust_exit_code": locust.returncode,
        "server_latency": {
            "GET /v1/availability/{sku}": server_latency(metrics, "/v1/availability/{sku}"),
            "POST /v1/reservations": server_latency(metrics, "/v1/reservations"),
        },
        "csv": str(csv_prefix.relative_to(REPO)) + "_stats.csv",
    })
    (results / f"flash-{stamp}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if report["oversells"]:
        print("FAIL: oversell found", file=sys.stderr)
        return 1
    return 1 if locust.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
