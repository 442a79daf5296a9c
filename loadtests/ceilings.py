"""The same-work ceiling of applying events: Redis running apply_event.lua as fast as it can.

    python -m loadtests.ceilings                       # 200k events x 5 repetitions, JSON on stdout
    python -m loadtests.ceilings --quick --json c.json # 50k x 3, also written to c.json

The ceiling hands Redis exactly the commands the consumer sends for the measured run's
events and nothing else a client would add:

- the events are `loadtests.workload.mixed_events` (the mix and the 100,000-SKU key space
  that `bench_ledger` and `bench_ingest` measure); every key of a call carries the
  partition's `{pN}` hash tag (keys.py): per event, one SKU per apply_event.lua call, or
  (`--batched`) one partition's events per apply_batch.lua call, as the consumer sends them;
- the commands are encoded before the clock starts, by the consumer's own encoder
  (`FastApplier._encode`, so KEYS/ARGV are byte for byte what production sends), and sent
  as deep pipelines on several connections opened by the consumer's own handshake
  (`FastApplier._connect`); replies are parsed by hiredis;
- each repetition starts on an empty key prefix (fresh idempotency records, so no call is
  a cheap "duplicate") and reports its own rate; the JSON gives min / median / max and the
  spread, plus the server's own microseconds per call from INFO commandstats (a stricter
  bound still: Lua execution alone, without reading and writing the sockets).

redis-benchmark is not used: it draws every `__rand_int__` placeholder separately, so one
call would touch several SKUs' keys (a call Redis Cluster refuses, and not the work the
ledger does). The suite measures this once per run and hands the same JSON to every
benchmark that compares against it (`--ceiling-json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from availability.domain.events import StockEvent

TOOL = "apply_event.lua, pre-encoded EVALSHA pipelines (FastApplier encoding), hiredis replies"
TOOL_BATCHED = "apply_batch.lua (one call per partition group), pre-encoded EVALSHA pipelines (FastApplier encoding)"


async def _commandstats(redis) -> tuple[int, int]:
    """(calls, usec) of EVALSHA so far on this server."""
    stats = await redis.info("commandstats")
    entry = stats.get("cmdstat_evalsha") or {}
    return int(entry.get("calls", 0)), int(entry.get("usec", 0))


async def _server_cpu(redis) -> float:
    """CPU seconds the server has used (user + system): per event, unlike a rate or
    commandstats' wall-clock microseconds, it barely moves with the machine's load."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _one_repetition(redis_url: str, events: Sequence[StockEvent], *, connections: int, pipeline: int,
                          batched: bool = False) -> dict:
    from availability.bootstrap import make_redis
    from availability.ingest.fastapply import FastApplier
    from availability.ledger.keys import KeyLayout
    from availability.ledger.ledger import Ledger, now_ms

    redis = make_redis(redis_url)
    prefix = f"ceil{uuid.uuid4().hex[:6]}"
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    applier = FastApplier(ledger, redis_url, connections=connections)
    stamp = now_ms()
    chunks = []
    for i in range(0, len(events), pipeline):
        chunk = events[i : i + pipeline]
        if batched:  # one apply_batch.lua call per partition group of the chunk
            payload, groups = applier._encode_batched(chunk, stamp)
            chunks.append((payload, len(groups)))
        else:
            chunks.append((applier._encode(chunk, stamp), len(chunk)))
    conns = [await applier._connect() for _ in range(connections)]
    queue = iter(chunks)
    replies: list[list] = []

    async def drive(conn) -> None:
        for payload, count in queue:
            replies.append(await conn.roundtrip(payload, count))

    calls_before, usec_before = await _commandstats(redis)
    server_cpu_before = await _server_cpu(redis)
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(drive(conn) for conn in conns))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_started
    calls_after, usec_after = await _commandstats(redis)
    server_cpu = await _server_cpu(redis) - server_cpu_before
    for conn in conns:
        conn.close()
    await redis.aclose()
    delete_prefix(redis_url, prefix)

    statuses: Counter[str] = Counter()
    for chunk in replies:
        for reply in chunk:
            if isinstance(reply, Exception):
                raise RuntimeError(f"the ceiling's script call failed: {reply}")
            for one in (reply if batched else [reply]):
                if one[0] == b"error":
                    raise RuntimeError(f"the ceiling's script refused an event: {one[1]!r}")
                statuses[one[0].decode()] += 1
    if sum(statuses.values()) != len(events):
        raise RuntimeError(f"expected {len(events)} replies, got {sum(statuses.values())}")
    calls = calls_after - calls_before
    return {
        "events_per_sec": round(len(events) / elapsed, 1),
        "seconds": round(elapsed, 3),
        # Other clients of a shared server would be counted too; with the embedded server it is ours alone.
        "server_us_per_call": round((usec_after - usec_before) / calls, 2) if calls else None,
        "server_us_per_event": round((usec_after - usec_before) / len(events), 2) if calls else None,
        #: the server's CPU per event (all its work: sockets, parsing, Lua)
        "server_cpu_us_per_event": round(server_cpu / len(events) * 1e6, 2),
        #: how busy this client was: well under 1 means Redis, not the client, set the pace
        "client_cpu_share": round(client_cpu / elapsed, 3),
        "statuses": dict(statuses),
    }


def _summary(reps: list[dict]) -> dict:
    rates = sorted(r["events_per_sec"] for r in reps)
    median = statistics.median(rates)
    server = [r["server_us_per_call"] for r in reps if r["server_us_per_call"]]
    return {
        "min": rates[0], "median": round(median, 1), "max": rates[-1],
        #: (max - min) / median: how far one measurement of this ceiling can move on this machine
        "spread": round((rates[-1] - rates[0]) / median, 3),
        "server_us_per_call_median": round(statistics.median(server), 2) if server else None,
    }


async def measure(redis_url: str, events: Sequence[StockEvent], *, repetitions: int = 5, connections: int = 4,
                  pipeline: int = 1000, batched: bool = False) -> dict:
    reps = [await _one_repetition(redis_url, events, connections=connections, pipeline=pipeline, batched=batched)
            for _ in range(repetitions)]
    summary = _summary(reps)
    return {
        "tool": TOOL_BATCHED if batched else TOOL,
        "workload": "loadtests.workload.mixed_events",
        "events": len(events),
        "skus": len({e.sku for e in events}),
        "repetitions": repetitions, "connections": connections, "pipeline": pipeline,
        "runs": reps,
        "events_per_sec": summary,
        # the single figure ratios are taken against
        "ops_per_sec": summary["median"],
    }


def apply_ceiling(redis_url: str, events: Sequence[StockEvent], **options) -> dict:
    return asyncio.run(measure(redis_url, events, **options))


def load_or_measure(path: str | None, redis_url: str, events: Sequence[StockEvent], **options) -> dict:
    """The suite's ceiling of this run when it handed one over, else measure it here."""
    if path:
        ceiling = json.loads(Path(path).read_text())
        ceiling["source"] = "measured once for the whole suite run (--ceiling-json)"
        return ceiling
    ceiling = apply_ceiling(redis_url, events, **options)
    ceiling["source"] = "measured by this benchmark, same server, just before it"
    return ceiling


def ratios(value: float, ceiling: dict) -> dict:
    """Our rate against the ceiling's median, and against its fastest and slowest repetition."""
    rates = ceiling["events_per_sec"]
    return {
        "ratio_to_ceiling": round(value / rates["median"], 3),
        "ratio_range": [round(value / rates["max"], 3), round(value / rates["min"], 3)],
    }


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Remove what a benchmark wrote under its own prefix (never anything else)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def main() -> None:
    from availability.embedded_redis import EmbeddedRedis
    from loadtests.workload import SKUS, mixed_events

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--skus", type=int, default=SKUS)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--pipeline", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="50k events, 3 repetitions")
    parser.add_argument("--batched", action="store_true", help="apply_batch.lua per partition group (the consumer's default)")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON here (the suite hands it on)")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repetitions = min(args.events, 50_000), min(args.repetitions, 3)
    server = None
    redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
    tmp = tempfile.TemporaryDirectory(prefix="av-ceiling-")
    if not redis_url:
        server = EmbeddedRedis(tmp.name, appendonly=False).start()
        redis_url = server.url
    try:
        result = apply_ceiling(redis_url, mixed_events(args.events, args.skus), repetitions=args.repetitions,
                               connections=args.connections, pipeline=args.pipeline, batched=args.batched)
    finally:
        if server:
            server.stop()
        tmp.cleanup()
    out = {"benchmark": "apply_ceiling", **result}
    text = json.dumps(out, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
