"""Benchmark: the same ingestion and lookup work on one server and on a local 3-primary
Redis Cluster, in one run, with the server CPU each shard spent per event (INFO cpu and
commandstats deltas, per node). Prints JSON.

    python -m loadtests.bench_scaling             # 60,000 events, 20,000 lookups
    python -m loadtests.bench_scaling --quick     # 12,000 events, 4,000 lookups

Both targets get the same work through the same code path the service takes on them:
`Ledger.apply_batch` (the consumer's path on a cluster: one pipeline per batch, split per
node by the cluster client) and `Ledger.stock_many` (lookups), from one client process
with `--concurrency` batches in flight, each worker on its own SKUs so each SKU's events
stay in order. On this 2-core machine the client and all servers share the cores, so the
throughput figures say what one client process gets, not what the cluster can take; the
per-shard server CPU per event is the figure to size from (docs/scaling.md).
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
from pathlib import Path

from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.embedded_redis import EmbeddedRedis
from availability.local_cluster import LocalCluster
from loadtests.workload import iter_mixed_events

import redis


def _cpu(port: int) -> dict:
    with redis.Redis(port=port) as c:
        cpu = c.info("cpu")
        stats = c.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return {
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "evalsha_calls": int(evalsha.get("calls", 0)),
        "evalsha_usec": int(evalsha.get("usec", 0)),
    }


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


async def _apply(runtime, events, concurrency: int, batch: int) -> float:
    # one worker per SKU group: a SKU's events go in order, groups go in parallel
    groups: list[list] = [[] for _ in range(concurrency)]
    for event in events:
        groups[hash(event.sku) % concurrency].append(event)

    async def worker(mine: list) -> None:
        for start in range(0, len(mine), batch):
            await runtime.ledger.apply_batch(mine[start:start + batch])

    started = time.perf_counter()
    await asyncio.gather(*(worker(g) for g in groups))
    return time.perf_counter() - started


async def _lookups(runtime, skus: list[str], count: int, concurrency: int, per_call: int) -> float:
    calls = count // per_call

    async def worker(n: int) -> None:
        for i in range(n, calls, concurrency):
            chosen = [skus[(i * per_call + j) % len(skus)] for j in range(per_call)]
            await runtime.ledger.stock_many(chosen)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return time.perf_counter() - started


async def measure(target: str, url: str, ports: list[int], *, cluster: bool, events, skus, lookups: int,
                  concurrency: int, batch: int, tmp: Path) -> dict:
    settings = Settings(
        _env_file=None, redis_url=url, redis_cluster=cluster, key_prefix=f"bs{uuid.uuid4().hex[:6]}",
        data_dir=str(tmp / target), database_url=f"sqlite+aiosqlite:///{tmp}/{target}.db",
    )
    async with open_runtime(settings) as runtime:
        before = {p: _cpu(p) for p in ports}
        apply_s = await _apply(runtime, events, concurrency, batch)
        mid = {p: _cpu(p) for p in ports}
        lookup_s = await _lookups(runtime, skus, lookups, concurrency, per_call=20)
        after = {p: _cpu(p) for p in ports}
    shards = []
    for p in ports:
        ingest = _delta(before[p], mid[p])
        reads = _delta(mid[p], after[p])
        shards.append({
            "port": p,
            "ingest_server_cpu_s": round(ingest["cpu_s"], 3),
            "ingest_evalsha_calls": ingest["evalsha_calls"],
            "ingest_server_cpu_us_per_event_on_this_shard": (
                round(ingest["cpu_s"] * 1e6 / ingest["evalsha_calls"], 2) if ingest["evalsha_calls"] else None),
            "ingest_script_us_per_call": (
                round(ingest["evalsha_usec"] / ingest["evalsha_calls"], 2) if ingest["evalsha_calls"] else None),
            "lookup_server_cpu_s": round(reads["cpu_s"], 3),
        })
    total_ingest_cpu = sum(s["ingest_server_cpu_s"] for s in shards)
    total_lookup_cpu = sum(s["lookup_server_cpu_s"] for s in shards)
    return {
        "target": target,
        "nodes": len(ports),
        "events": len(events),
        "ingest_seconds": round(apply_s, 3),
        "ingest_events_per_sec": round(len(events) / apply_s, 1),
        "ingest_server_cpu_us_per_event_all_shards": round(total_ingest_cpu * 1e6 / len(events), 2),
        "lookups": lookups,
        "lookup_seconds": round(lookup_s, 3),
        "lookups_per_sec": round(lookups / lookup_s, 1),
        "lookup_server_cpu_us_per_lookup_all_shards": round(total_lookup_cpu * 1e6 / lookups, 2),
        "shards": shards,
    }


async def main_async(args) -> dict:
    events = list(iter_mixed_events(args.events, args.skus, 3))
    # one SKU per call: the consumer's per-event path (a batch of a partition's events goes in one
    # pipeline either way; the cluster splits that pipeline per node)
    skus = sorted({e.sku for e in events})
    with tempfile.TemporaryDirectory(prefix="av-bench-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        single = EmbeddedRedis(tmp / "single", appendonly=False).start()
        try:
            one = await measure("1 node", single.url, [single.port], cluster=False, events=events, skus=skus,
                                lookups=args.lookups, concurrency=args.concurrency, batch=args.batch, tmp=tmp)
        finally:
            single.stop()
        with LocalCluster(tmp / "cluster", replicas=0) as cluster:
            three = await measure("3-primary cluster", cluster.url, [n.port for n in cluster.primaries],
                                  cluster=True, events=events, skus=skus, lookups=args.lookups,
                                  concurrency=args.concurrency, batch=args.batch, tmp=tmp)
    return {
        "bench": "scaling",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "workload": {"events": args.events, "skus": args.skus, "batch": args.batch, "concurrency": args.concurrency},
        "single": one,
        "cluster": three,
        "cluster_to_single_ingest": round(three["ingest_events_per_sec"] / one["ingest_events_per_sec"], 3),
        "cluster_to_single_lookups": round(three["lookups_per_sec"] / one["lookups_per_sec"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--lookups", type=int)
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    args.events = args.events or (12_000 if args.quick else 60_000)
    args.lookups = args.lookups or (4_000 if args.quick else 20_000)
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
