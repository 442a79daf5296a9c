"""Benchmark: canonical events applied per second by ONE consumer process (Redis Streams ->
FastStream batch subscriber -> Ledger pipeline -> XACK), beside the same-work ceiling of
the same Redis (loadtests/ceilings.py: apply_event.lua on the same event mix and key space,
pre-encoded, on the same server in the same run). Prints JSON with the ratio.

The consumer runs twice in the same run (`--apply both`, the default): `batched` (each
partition's share of a batch in one apply_batch.lua call, the default path) and `per_event`
(one apply_event.lua call per event, AVAILABILITY_APPLY_BATCHED=false, the path before),
each beside both ceilings: the per-event ceiling and the batched one (apply_batch.lua,
pre-encoded, same events).

    python -m loadtests.bench_ingest                 # 1,000,000 events
    python -m loadtests.bench_ingest --quick         # 100,000 events
    python -m loadtests.bench_ingest --events 300000 --batch 1000 --partitions 8
    python -m loadtests.bench_ingest --ceiling-json c.json   # the suite's ceiling of this run

The events are published first (pipelined XADD, timed too), then `availability consume`
is started as a separate process and timed from its first delivered entry until every
partition is drained (all delivered and acknowledged). With AVAILABILITY_REDIS_URL set it
uses that server (only under its own key prefix, removed afterwards); otherwise it starts
an embedded redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from availability.bootstrap import make_redis
from availability.domain.events import encode_event
from availability.embedded_redis import EmbeddedRedis
from availability.ingest.publisher import ensure_redis_groups
from availability.ingest.streams import EVENT_FIELD, StreamNames, partition_of
from loadtests.ceilings import apply_ceiling, delete_prefix, load_or_measure, ratios
from loadtests.workload import SKUS, iter_mixed_events, mixed_events

REPO = Path(__file__).resolve().parents[1]


def synthetic_payloads(count: int, skus: int, seed: int = 1) -> list[tuple[str, bytes]]:
    return [(event.sku, encode_event(event)) for event in iter_mixed_events(count, skus, seed)]


async def publish(redis_url: str, names: StreamNames, payloads: list[tuple[str, bytes]]) -> dict:
    redis = make_redis(redis_url)
    await ensure_redis_groups(redis, names)
    started = time.perf_counter()
    for start in range(0, len(payloads), 5000):
        pipe = redis.pipeline(transaction=False)
        for sku, payload in payloads[start : start + 5000]:
            pipe.xadd(names.partition(partition_of(sku, names.partitions)), {EVENT_FIELD: payload})
        await pipe.execute()
    elapsed = time.perf_counter() - started
    await redis.aclose()
    return {"events": len(payloads), "seconds": round(elapsed, 3), "events_per_sec": round(len(payloads) / elapsed, 1)}


async def group_progress(redis, names: StreamNames) -> tuple[int, int]:
    """(entries delivered to the group, entries still pending) over all partitions."""
    delivered = pending = 0
    for stream in names.all_partitions():
        for group in await redis.xinfo_groups(stream):
            if group["name"].decode() == names.group:
                pending += group["pending"]
                read = group.get("entries-read")
                if read is None:  # Redis < 7: count what is left after last-delivered-id
                    left = await redis.xrange(stream, min="(" + group["last-delivered-id"].decode(), max="+")
                    read = await redis.xlen(stream) - len(left)
                delivered += read
    return delivered, pending


async def consume(redis_url: str, names: StreamNames, total: int, args, data_dir: str, *, batched: bool = True) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": names.prefix,
        "AVAILABILITY_DATA_DIR": data_dir,
        "AVAILABILITY_PARTITIONS": str(names.partitions),
        "AVAILABILITY_BATCH_SIZE": str(args.batch),
        "AVAILABILITY_CONSUMER_POLL_MS": "5",
        "AVAILABILITY_APPLY_BATCHED": "true" if batched else "false",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
        [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "consume", "--consumer", "bench"],
        env=env, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )
    redis = make_redis(redis_url)
    try:
        while True:
            delivered, pending = await group_progress(redis, names)
            if delivered or pending:
                break
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            await asyncio.sleep(0.002)
        started, first = time.perf_counter(), delivered - pending
        samples = []
        while True:
            delivered, pending = await group_progress(redis, names)
            samples.append((time.perf_counter() - started, delivered - pending))
            if delivered >= total and pending == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        await redis.aclose()
    applied = total - first
    return {
        "events": applied, "batch": args.batch, "partitions": names.partitions, "seconds": round(elapsed, 3),
        "events_per_sec": round(applied / elapsed, 1), "consumer_cpu_seconds": cpu,
        # the consumer's CPU per event: unlike the rate, it barely moves with the machine's load
        "consumer_cpu_us_per_event": round(cpu / applied * 1e6, 2) if cpu else None,
    }


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k events")
    parser.add_argument("--skus", type=int, default=SKUS)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--ceiling-events", type=int, default=200_000,
                        help="the ceiling runs the first N events of the same stream, several times")
    parser.add_argument("--ceiling-json", metavar="PATH", help="the ceiling the suite measured for this run")
    parser.add_argument("--apply", choices=("both", "batched", "per_event"), default="both",
                        help="which consumer path(s) to measure")
    args = parser.parse_args()
    if args.quick:
        args.events, args.ceiling_events = 100_000, min(args.ceiling_events, 50_000)

    server = None
    redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
    tmp = tempfile.TemporaryDirectory(prefix="av-bench-ingest-")
    if not redis_url:
        server = EmbeddedRedis(Path(tmp.name) / "redis", appendonly=False).start()
        redis_url = server.url
    modes = ["batched", "per_event"] if args.apply == "both" else [args.apply]
    runs: dict[str, dict] = {}
    try:
        ceiling_events = mixed_events(args.ceiling_events, args.skus)
        reps = 3 if args.quick else 5
        ceiling = load_or_measure(args.ceiling_json, redis_url, ceiling_events, repetitions=reps)
        batched_ceiling = apply_ceiling(redis_url, ceiling_events, repetitions=reps, batched=True)
        del ceiling_events
        payloads = synthetic_payloads(args.events, args.skus)
        for mode in modes:
            names = StreamNames(f"bi{uuid.uuid4().hex[:6]}", args.partitions)
            published = asyncio.run(publish(redis_url, names, payloads))
            consumed = asyncio.run(consume(redis_url, names, args.events, args, tmp.name, batched=mode == "batched"))
            delete_prefix(redis_url, names.prefix)
            runs[mode] = {
                "publish": published, "consumer": consumed,
                "vs_per_event_ceiling": ratios(consumed["events_per_sec"], ceiling),
                "vs_batched_ceiling": ratios(consumed["events_per_sec"], batched_ceiling),
            }
        del payloads
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    main_run = runs[modes[0]]
    out = {
        "benchmark": "ingest_consumer",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "ceiling": ceiling,
        "batched_ceiling": batched_ceiling,
        # the default path's figures at the top level, as before (the suite reads these)
        "apply": modes[0],
        "publish": main_run["publish"],
        "consumer": main_run["consumer"],
        "workload": "loadtests.workload.mixed_events",
        **ratios(main_run["consumer"]["events_per_sec"], ceiling),
        "runs": runs,
    }
    if "batched" in runs and "per_event" in runs:
        out["batched_over_per_event"] = round(
            runs["batched"]["consumer"]["events_per_sec"] / runs["per_event"]["consumer"]["events_per_sec"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
