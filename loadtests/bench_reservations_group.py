"""Benchmark: group commit on one hot SKU, at the ledger, beside the per-SKU protocol and
the PostgreSQL peers, same request stream, same client process, same run. Prints JSON.

    python -m loadtests.bench_reservations_group [--requests 60000] [--stock 45000]
                                                 [--concurrency 64 256] [--quick]

The request stream is bench_reservations' (single-unit reservations of one SKU, more than
its stock, from N concurrent workers, `drive`), so both sides must refuse some and
`oversold` (successes beyond the stock) must be 0; the ledger's reserved count is checked
against the successes. Rows:

- `ledger_group_commit` (the default: reserve_group.lua, one call per batch), per concurrency;
- `ledger_per_sku_protocol` (group commit off: intent, hold, finish per reservation);
- `postgres_select_for_update` (bench_reservations' row-lock peer: five round trips);
- `postgres_conditional_update` (the one-statement design of issue 17:
  `WITH u AS (UPDATE ... WHERE on_hand - reserved >= 1 RETURNING ...) INSERT ...`), the
  strongest SQL peer; the ratios are against it and against the row-lock one.

PostgreSQL is AVAILABILITY_BENCH_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/postgres);
without it those rows say why they were skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from functools import partial

from availability.embedded_redis import EmbeddedRedis
from loadtests.bench_reservations import HOT_SKU, SQL_DESIGNS, bench_ledger, bench_postgres


def run_peer(bench, dsn: str, **kw) -> dict:
    """A PostgreSQL row, retried while the shared server has no connection slots left."""
    for attempt in range(6):
        try:
            return asyncio.run(bench(dsn, **kw))
        except Exception as exc:  # noqa: BLE001 - e.g. TooManyConnectionsError from other users
            if attempt == 5:
                return {"skipped": f"PostgreSQL run failed: {exc!r}"}
            time.sleep(10)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--stock", type=int, default=45_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--peer-requests", type=int, default=20_000,
                        help="requests for the slower rows (per-SKU protocol, PostgreSQL), same stock ratio")
    parser.add_argument("--quick", action="store_true", help="20k group requests, 5k for the slower rows")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.stock, args.peer_requests = 20_000, 15_000, 5_000
    peer_stock = args.peer_requests * args.stock // args.requests
    base_concurrency = args.concurrency[0]
    dsn = os.environ.get("AVAILABILITY_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="av-bench-")
    if not redis_url:
        server = EmbeddedRedis(tmp.name, appendonly=False).start()
        redis_url = server.url
    out: dict = {"benchmark": "contended_reservations_group_commit", "hot_sku": HOT_SKU,
                 "stock_to_requests": round(args.stock / args.requests, 3)}
    try:
        out["ledger_group_commit"] = [
            asyncio.run(bench_ledger(redis_url, requests=args.requests, stock=args.stock, concurrency=c,
                                     group_max=256))
            for c in args.concurrency
        ]
        out["ledger_per_sku_protocol"] = asyncio.run(bench_ledger(
            redis_url, requests=args.peer_requests, stock=peer_stock, concurrency=base_concurrency, group_max=0))
        peer_load = dict(requests=args.peer_requests, stock=peer_stock, concurrency=base_concurrency)
        for design in SQL_DESIGNS:  # the same two SQL designs and code as bench_reservations
            out[f"postgres_{design}"] = run_peer(partial(bench_postgres, design=design), dsn, **peer_load)
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    best = max(row["reservations_per_sec"] for row in out["ledger_group_commit"])
    same = out["ledger_group_commit"][0]["reservations_per_sec"]  # same concurrency as the peers
    ratios = {"group_vs_per_sku_protocol": round(same / out["ledger_per_sku_protocol"]["reservations_per_sec"], 2)}
    for peer in ("postgres_conditional_update", "postgres_select_for_update"):
        if "reservations_per_sec" in out[peer]:
            ratios[f"group_vs_{peer}"] = round(same / out[peer]["reservations_per_sec"], 2)
            ratios[f"best_group_vs_{peer}"] = round(best / out[peer]["reservations_per_sec"], 2)
    out["ratios"] = ratios
    out["oversold_total"] = sum(row["oversold"] for row in out["ledger_group_commit"]) + sum(
        out[k].get("oversold", 0) for k in ("ledger_per_sku_protocol", "postgres_select_for_update",
                                            "postgres_conditional_update"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
