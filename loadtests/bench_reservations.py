"""Benchmark: contended reservations on one hot SKU, our ledger against a row-locking
PostgreSQL design (`SELECT ... FOR UPDATE` then `UPDATE`, the way most commerce platforms
hold stock), same client process, same concurrency, same run. Prints JSON.

    python -m loadtests.bench_reservations [--requests 20000] [--stock 15000] [--concurrency 64]

Both sides get more requests than stock, so both must refuse some; `oversold` counts
successes beyond the stock and must be 0. The PostgreSQL side needs the server at
AVAILABILITY_BENCH_POSTGRES_DSN (default postgresql://postgres@127.0.0.1:5432/postgres); it
creates and drops its own database. Without a reachable server that side is skipped with
the reason in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid

from availability.bootstrap import make_redis
from availability.domain.errors import InsufficientStock
from availability.domain.events import StockEvent
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.domain.rules import Location, RuleBook
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from loadtests.bench_ledger import T0
from loadtests.ceilings import delete_prefix

HOT_SKU = "HOT-SNEAKER-42"


async def drive(attempt, requests: int, concurrency: int) -> dict:
    """Run `requests` single-unit reservations through `attempt(i) -> bool` from N workers."""
    counter = iter(range(requests))
    held = refused = 0
    latencies: list[float] = []

    async def worker():
        nonlocal held, refused
        for i in counter:
            started = time.perf_counter()
            ok = await attempt(i)
            latencies.append(time.perf_counter() - started)
            if ok:
                held += 1
            else:
                refused += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests, "held": held, "refused": refused, "seconds": round(elapsed, 3),
        "reservations_per_sec": round(requests / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


async def bench_ledger(redis_url: str, *, requests: int, stock: int, concurrency: int) -> dict:
    redis = make_redis(redis_url, max_connections=concurrency)
    prefix = f"br{uuid.uuid4().hex[:6]}"
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    book = RuleBook(version=1, locations=[Location(code="DC1", priority=1)], channels=[], rules=[])
    await ledger.apply(StockEvent(event_id="seed", type="receipt", source="sim", occurred_at=T0, sku=HOT_SKU,
                                  location="DC1", quantity=stock))

    async def attempt(i: int) -> bool:
        try:
            await ledger.reserve(ReservationRequest(f"r{i}", "online", [ReservationLine(HOT_SKU, 1)]), book)
            return True
        except InsufficientStock:
            return False

    result = await drive(attempt, requests, concurrency)
    reserved = (await ledger.stock(HOT_SKU))["DC1"].reserved
    result["reserved_in_ledger"] = reserved
    result["oversold"] = max(0, result["held"] - stock)
    await redis.aclose()
    delete_prefix(redis_url, prefix)
    return result


async def bench_postgres(dsn: str, *, requests: int, stock: int, concurrency: int) -> dict:
    import asyncpg

    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return {"skipped": f"PostgreSQL not reachable at {dsn}: {exc!r}"}
    database = f"av_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    base, _, _ = dsn.rpartition("/")
    pool = await asyncpg.create_pool(f"{base}/{database}", min_size=concurrency, max_size=concurrency)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE stock (sku text, location text, on_hand int NOT NULL, reserved int NOT NULL,"
                " PRIMARY KEY (sku, location));"
                "CREATE TABLE reservations (id text PRIMARY KEY, sku text, location text, quantity int)"
            )
            await conn.execute("INSERT INTO stock VALUES ($1, 'DC1', $2, 0)", HOT_SKU, stock)

        async def attempt(i: int) -> bool:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT on_hand, reserved FROM stock WHERE sku = $1 AND location = 'DC1' FOR UPDATE", HOT_SKU
                    )
                    if row["on_hand"] - row["reserved"] < 1:
                        return False
                    await conn.execute("UPDATE stock SET reserved = reserved + 1 WHERE sku = $1 AND location = 'DC1'",
                                       HOT_SKU)
                    await conn.execute("INSERT INTO reservations VALUES ($1, $2, 'DC1', 1)", f"r{i}", HOT_SKU)
                    return True

        result = await drive(attempt, requests, concurrency)
        async with pool.acquire() as conn:
            result["reserved_in_db"] = await conn.fetchval("SELECT reserved FROM stock WHERE sku = $1", HOT_SKU)
        result["oversold"] = max(0, result["held"] - stock)
        return result
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--stock", type=int, default=15_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="5k requests against 4k units")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.stock = 5_000, 4_000
    dsn = os.environ.get("AVAILABILITY_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="av-bench-")
    if not redis_url:
        server = EmbeddedRedis(tmp.name, appendonly=False).start()
        redis_url = server.url
    try:
        ours = asyncio.run(bench_ledger(redis_url, requests=args.requests, stock=args.stock,
                                        concurrency=args.concurrency))
        peer = asyncio.run(bench_postgres(dsn, requests=args.requests, stock=args.stock,
                                          concurrency=args.concurrency))
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    out = {"benchmark": "contended_reservations", "hot_sku_stock": args.stock, "concurrency": args.concurrency,
           "ledger": ours, "postgres_select_for_update": peer}
    if "reservations_per_sec" in peer:
        out["ratio_vs_postgres"] = round(ours["reservations_per_sec"] / peer["reservations_per_sec"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
