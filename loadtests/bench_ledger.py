"""Benchmark: events applied per second through the ledger (Ledger.apply_batch, pipelined),
beside the same-work ceiling (loadtests/ceilings.py: Redis running apply_event.lua on the
same events, pre-encoded, on the same server in the same run). Prints JSON.

    python -m loadtests.bench_ledger            # 200k events of the mixed workload, 100k SKUs
    python -m loadtests.bench_ledger --events 50000 --quick
    python -m loadtests.bench_ledger --ceiling-json c.json   # the suite's ceiling of this run

With AVAILABILITY_REDIS_URL set it uses that server (writing only under its own key
prefixes, removed afterwards); otherwise it starts an embedded redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid

from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from loadtests.ceilings import delete_prefix, load_or_measure, ratios
from loadtests.workload import SKUS, T0, mixed_events

#: T0 stays importable from here: bench_memory takes its timestamps from it
__all__ = ["T0", "measure_ledger"]


async def measure_ledger(redis_url: str, events: list[StockEvent], *, batch: int, in_flight: int) -> dict:
    redis = make_redis(redis_url)
    prefix = f"bl{uuid.uuid4().hex[:6]}"
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    queue = iter(batches)

    async def worker():
        for chunk in queue:
            await ledger.apply_batch(chunk)

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await redis.aclose()
    delete_prefix(redis_url, prefix)
    return {"events": len(events), "batch": batch, "in_flight_batches": in_flight,
            "seconds": round(elapsed, 3), "events_per_sec": round(len(events) / elapsed, 1),
            # the client's own CPU per event: unlike the rate, it barely moves with the machine's load
            "client_cpu_us_per_event": round(cpu / len(events) * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--skus", type=int, default=SKUS)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--ceiling-json", metavar="PATH", help="the ceiling the suite measured for this run")
    parser.add_argument("--quick", action="store_true", help="50k events, 3 ceiling repetitions")
    args = parser.parse_args()
    if args.quick:
        args.events = min(args.events, 50_000)

    server = None
    redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
    tmp = tempfile.TemporaryDirectory(prefix="av-bench-")
    if not redis_url:
        server = EmbeddedRedis(tmp.name, appendonly=False).start()
        redis_url = server.url
    try:
        events = mixed_events(args.events, args.skus)
        ceiling = load_or_measure(args.ceiling_json, redis_url, events, repetitions=3 if args.quick else 5)
        sequential = asyncio.run(measure_ledger(redis_url, events, batch=args.batch, in_flight=1))
        concurrent = asyncio.run(measure_ledger(redis_url, events, batch=args.batch, in_flight=4))
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    best = max(sequential["events_per_sec"], concurrent["events_per_sec"])
    print(json.dumps({
        "benchmark": "ledger_apply",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "ceiling": ceiling,
        "ledger_sequential": sequential,
        "ledger_4_in_flight": concurrent,
        "workload": "loadtests.workload.mixed_events",
        **ratios(best, ceiling),
    }, indent=2))


if __name__ == "__main__":
    main()
