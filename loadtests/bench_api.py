"""Benchmark: the HTTP API under load, beside the same server answering a constant. Prints JSON.

    python -m loadtests.bench_api [--quick] [--redis-url URL] [--workers 1] [--concurrency 32]
                                  [--skus 10000] [--out FILE]

What it does, in one run (about 60 s; --quick about 15 s):

1. Starts Redis (embedded redis-server, unless --redis-url), then the service exactly as
   operators do (`python -m availability.cli serve`, uvicorn) on a free loopback port with
   the benchmark's constant endpoint enabled (AVAILABILITY_BENCH_ENDPOINTS), an admin API
   key, and the rate limit set out of reach (the limiter still runs on every request).
2. Seeds master data and rules through the API (3 locations, a global safety stock, an
   online buffer) and stock for --skus SKUs at every location straight into the ledger.
3. Lookups: `GET /v1/availability/{sku}` (random seeded SKU) and `GET /bench/constant`
   (same app, same auth gate and metrics, no Redis, no rules), each first closed-loop with
   --concurrency connections (peak throughput), then open-loop at half that peak (p50/p99
   at half of peak, the product target: p99 under 5 ms). From the two peaks it derives the
   time per request the Redis read plus ATS cost on top of the framework's own.
4. Batch: `POST /v1/availability/batch` with 100 SKUs, closed-loop.
5. Reservations (`reservations`): one hot SKU, more single-unit reservations than it has ATS, from 64
   connections at once; reports reservations per second and `oversold` (successes beyond
   the ATS before the run; must be 0), cross-checked with the ledger's reserved count.
6. Lookup variants (`lookup_variants`, skip with --no-variants): the main server stopped, one
   server at a time over the same Redis and rules: uvicorn or Granian (`--server`), with the
   lookup fast path (api/fastpath.py) or with Litestar answering (AVAILABILITY_FAST_LOOKUPS=0),
   1 or 2 workers; peak and p99 at half peak, each as a ratio to step 3's uvicorn constant
   endpoint (Granian also measures its own constant endpoint).

The main server (steps 3-5) is uvicorn with the fast path on, as `availability serve
--server uvicorn` runs; --no-fast-path measures it with Litestar answering lookups.

The load generator is loadtests/api_loadgen.py (raw asyncio protocols, uvloop when
installed). It and the server share the machine: figures are for this machine, and the
ratios to the constant endpoint are what carries across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

from availability.bootstrap import make_redis
from availability.domain.events import StockEvent
from availability.embedded_redis import EmbeddedRedis, free_port
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from loadtests.api_loadgen import build_request, closed_loop, open_loop

HOST = "127.0.0.1"
KEY = "bench-admin-" + uuid.uuid4().hex[:12]
LOCATIONS = ("DC1", "STORE-1", "STORE-2")
HOT_SKU = "HOT-SNEAKER-42"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def start_server(
    redis_url: str, port: int, prefix: str, data_dir: str, workers: int, server: str = "uvicorn", fast: bool = True
) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        AVAILABILITY_REDIS_URL=redis_url,
        AVAILABILITY_KEY_PREFIX=prefix,
        AVAILABILITY_DATA_DIR=data_dir,
        AVAILABILITY_DATABASE_URL=f"sqlite+aiosqlite:///{data_dir}/rules.db",
        AVAILABILITY_API_KEYS=json.dumps([{"key": KEY, "scopes": ["admin"], "name": "bench"}]),
        AVAILABILITY_BENCH_ENDPOINTS="true",
        AVAILABILITY_RATE_LIMIT_PER_SECOND="1000000000",
        AVAILABILITY_EVENTS_MODE="direct",
        AVAILABILITY_FAST_LOOKUPS="1" if fast else "0",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "availability.cli",
        "--log-level",
        "WARNING",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--server",
        server,
    ]
    log = open(Path(data_dir) / f"server-{port}.log", "wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                if (await client.get(f"{base}/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become ready")


async def seed(base: str, redis_url: str, prefix: str, skus: int) -> dict:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        for priority, code in enumerate(LOCATIONS, 1):
            kind = "warehouse" if code == "DC1" else "store"
            (await client.put(f"/v1/locations/{code}", json={"type": kind, "priority": priority})).raise_for_status()
        (await client.put("/v1/channels/online", json={"priority": 1})).raise_for_status()
        (await client.post("/v1/rules", json={"kind": "safety_stock", "units": 1})).raise_for_status()
        (await client.post("/v1/rules", json={"kind": "buffer", "units": 1, "channel": "online"})).raise_for_status()
    redis = make_redis(redis_url)
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    rng = random.Random(7)
    events = []
    for n in range(skus):
        for code in LOCATIONS:
            events.append(
                StockEvent(
                    event_id=f"seed-{n}-{code}",
                    type="receipt",
                    source="sim",
                    occurred_at=T0,
                    sku=f"SKU-{n:06d}",
                    location=code,
                    quantity=rng.randint(0, 40),
                )
            )
    for start in range(0, len(events), 2000):
        await ledger.apply_batch(events[start : start + 2000])
    await redis.aclose()
    await settle(base)
    return {"skus": skus, "locations": len(LOCATIONS), "pairs": len(events)}


async def settle(base: str, timeout: float = 30.0) -> None:
    """Wait until the rule changes made while seeding are marked dirty, so no background pass
    runs during a measurement."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).text
            pending = [line for line in text.splitlines() if line.startswith("availability_rules_dirty_pending ")]
            if not pending or float(pending[0].split()[1]) == 0:
                return
            await asyncio.sleep(0.2)


def lookup_factory(skus: int):
    rng = random.Random(11)
    auth = {"Authorization": f"Bearer {KEY}"}
    pool = [build_request("GET", f"/v1/availability/SKU-{rng.randrange(skus):06d}", HOST, auth) for _ in range(4096)]
    return lambda i: pool[i & 4095]


def constant_factory():
    raw = build_request("GET", "/bench/constant", HOST, {"Authorization": f"Bearer {KEY}"})
    return lambda i: raw


def batch_factory(skus: int, size: int = 100):
    rng = random.Random(13)
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    pool = []
    for _ in range(256):
        body = json.dumps({"skus": [f"SKU-{rng.randrange(skus):06d}" for _ in range(size)]}).encode()
        pool.append(build_request("POST", "/v1/availability/batch", HOST, auth, body))
    return lambda i: pool[i & 255]


async def lookups(port: int, skus: int, concurrency: int, seconds: float, warmup: float) -> dict:
    out: dict = {}
    for name, make in (("constant", constant_factory()), ("availability", lookup_factory(skus))):
        await closed_loop(HOST, port, make, concurrency=concurrency, seconds=warmup)
        peak = (await closed_loop(HOST, port, make, concurrency=concurrency, seconds=seconds)).summary()
        half_rate = max(50.0, peak["requests_per_sec"] / 2)
        half = (await open_loop(HOST, port, make, rate=half_rate, seconds=seconds)).summary()
        out[name] = {"peak": peak, "at_half_peak": dict(half, target_rate=round(half_rate, 1))}
    const_rps = out["constant"]["peak"]["requests_per_sec"]
    avail_rps = out["availability"]["peak"]["requests_per_sec"]
    framework_us = 1e6 / const_rps if const_rps else 0.0
    total_us = 1e6 / avail_rps if avail_rps else 0.0
    out["comparison"] = {
        "throughput_ratio": round(avail_rps / const_rps, 3) if const_rps else None,
        "framework_us_per_request": round(framework_us, 1),
        "redis_and_ats_us_per_request": round(total_us - framework_us, 1),
        "redis_and_ats_within_framework_overhead": total_us - framework_us <= framework_us,
        "p99_ms_at_half_peak": out["availability"]["at_half_peak"]["p99_ms"],
        "p99_under_5ms_at_half_peak": out["availability"]["at_half_peak"]["p99_ms"] < 5.0,
    }
    return out


#: (server, fast path, workers) measured beside the main server's uvicorn constant endpoint
VARIANTS = (
    ("uvicorn", False, 1),
    ("uvicorn", True, 2),
    ("granian", False, 1),
    ("granian", True, 1),
    ("granian", True, 2),
)


async def lookup_variants(
    redis_url: str, prefix: str, work: str, skus: int, concurrency: int, seconds: float, warmup: float, const_rps: float
) -> dict:
    """The lookup under each (server, fast path, workers), one server at a time, same Redis and
    rules as the main run. Each reports its ratio to the main run's uvicorn constant endpoint;
    Granian servers also measure their own constant endpoint (the framework under Granian)."""
    out: dict = {}
    make = lookup_factory(skus)
    for server, fast, workers in VARIANTS:
        name = f"{server}_{'fast' if fast else 'litestar'}_w{workers}"
        port = free_port()
        proc = start_server(redis_url, port, prefix, work, workers, server=server, fast=fast)
        try:
            await wait_ready(f"http://{HOST}:{port}", proc)
            entry: dict = {"server": server, "fast_path": fast, "workers": workers}
            if server == "granian" and workers == 1:
                constant = constant_factory()
                await closed_loop(HOST, port, constant, concurrency=concurrency, seconds=warmup)
                entry["constant_peak_rps"] = (
                    await closed_loop(HOST, port, constant, concurrency=concurrency, seconds=seconds)
                ).summary()["requests_per_sec"]
            await closed_loop(HOST, port, make, concurrency=concurrency, seconds=warmup)
            peak = (await closed_loop(HOST, port, make, concurrency=concurrency, seconds=seconds)).summary()
            half_rate = max(50.0, peak["requests_per_sec"] / 2)
            half = (await open_loop(HOST, port, make, rate=half_rate, seconds=seconds)).summary()
            rps = peak["requests_per_sec"]
            entry.update(
                peak_rps=rps,
                peak_statuses=peak["statuses"],
                at_half_peak={q: half[q] for q in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")},
                half_peak_target_rate=round(half_rate, 1),
                ratio_to_uvicorn_constant=round(rps / const_rps, 3) if const_rps else None,
            )
            out[name] = entry
        finally:
            stop_server(proc)
    base = out.get("uvicorn_litestar_w1", {}).get("peak_rps")
    for entry in out.values():
        entry["speedup_vs_uvicorn_litestar_w1"] = round(entry["peak_rps"] / base, 2) if base else None
    for server in ("uvicorn", "granian"):
        one, two = out.get(f"{server}_fast_w1"), out.get(f"{server}_fast_w2")
        if one and two:
            two["scaling_vs_w1"] = round(two["peak_rps"] / one["peak_rps"], 2)
    return out


async def batch(port: int, skus: int, seconds: float) -> dict:
    make = batch_factory(skus)
    await closed_loop(HOST, port, make, concurrency=8, seconds=min(1.0, seconds))
    result = (await closed_loop(HOST, port, make, concurrency=8, seconds=seconds)).summary()
    result["peak_rps"] = result["requests_per_sec"]
    result["skus_per_request"] = 100
    result["skus_per_sec"] = round(result["requests_per_sec"] * 100, 1)
    return result


async def reservations(base: str, port: int, redis_url: str, prefix: str, stock: int) -> dict:
    headers = {"Authorization": f"Bearer {KEY}"}
    redis = make_redis(redis_url)
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    await ledger.apply(
        StockEvent(
            event_id="hot-seed",
            type="receipt",
            source="sim",
            occurred_at=T0,
            sku=HOT_SKU,
            location="DC1",
            quantity=stock,
        )
    )
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        ats_before = (await client.get(f"/v1/availability/{HOT_SKU}")).json()["ats"]
    attempts = int(ats_before * 1.5) + 100
    run = uuid.uuid4().hex[:6]
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def make(i: int) -> bytes:
        body = (
            '{"reservation_id":"bench-%s-%d","channel":"online","lines":[{"sku":"%s","quantity":1}]}'
            % (run, i, HOT_SKU)
        ).encode()
        return build_request("POST", "/v1/reservations", HOST, auth, body)

    stats = await closed_loop(HOST, port, make, concurrency=64, requests=attempts)
    summary = stats.summary()
    held = stats.statuses.get(201, 0)
    refused = stats.statuses.get(409, 0)
    stock_after = await ledger.stock(HOT_SKU)
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        ats_after = (await client.get(f"/v1/availability/{HOT_SKU}")).json()["ats"]
    await redis.aclose()
    return {
        "hot_sku_on_hand": stock,
        "ats_before": ats_before,
        "attempts": attempts,
        "held": held,
        "refused_409": refused,
        "other_statuses": {k: v for k, v in summary["statuses"].items() if k not in ("201", "409")},
        "reservations_per_sec": summary["requests_per_sec"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "ledger_reserved": stock_after["DC1"].reserved,
        "ats_after": ats_after,
        "oversold": max(0, held - ats_before),
        "ledger_agrees": stock_after["DC1"].reserved == held,
    }


async def run(args: argparse.Namespace) -> dict:
    seconds = 2.0 if args.quick else 8.0
    warmup = 0.5 if args.quick else 1.5
    skus = args.skus or (2000 if args.quick else 10_000)
    hot_stock = 1500 if args.quick else 5000
    work = tempfile.mkdtemp(prefix="bench-api-")
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(Path(work) / "redis", appendonly=False).start()
        redis_url = embedded.url
    prefix = f"ba{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(redis_url, port, prefix, work, args.workers, server="uvicorn", fast=not args.no_fast_path)
    started = time.perf_counter()
    try:
        await wait_ready(base, proc)
        seeded = await seed(base, redis_url, prefix, skus)
        result = {
            "benchmark": "api",
            "quick": args.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            },
            "server": {
                "workers": args.workers,
                "server": "uvicorn",
                "fast_path": not args.no_fast_path,
                "granian": _module_version("granian"),
                "redis": "embedded" if embedded else "given",
                "loop": _module_version("uvloop"),
                "http": _module_version("httptools"),
            },
            "client": {
                "concurrency": args.concurrency,
                "loadgen": "loadtests/api_loadgen.py",
                "loop": "uvloop" if _has("uvloop") else "asyncio",
            },
            "seeded": seeded,
            "lookups": await lookups(port, skus, args.concurrency, seconds, warmup),
            "batch_100": await batch(port, skus, seconds),
            "reservations": await reservations(base, port, redis_url, prefix, hot_stock),
        }
        if not args.no_variants:
            stop_server(proc)  # one server at a time: they share the two cores with the client
            result["lookup_variants"] = await lookup_variants(
                redis_url,
                prefix,
                work,
                skus,
                args.concurrency,
                seconds,
                warmup,
                result["lookups"]["constant"]["peak"]["requests_per_sec"],
            )
        # Flat figures for loadtests/suite.py's table: peak throughput, latency at half peak.
        for name, part in (("lookup", "availability"), ("constant", "constant")):
            measured = result["lookups"][part]
            half = measured["at_half_peak"]
            result[name] = {
                "peak_rps": measured["peak"]["requests_per_sec"],
                **{q: half[q] for q in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")},
            }
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result
    finally:
        stop_server(proc)
        if embedded is not None:
            embedded.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _module_version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return f"{module} {getattr(mod, '__version__', '')}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 15 s: shorter phases, fewer SKUs")
    parser.add_argument("--redis-url", help="use this Redis instead of starting an embedded one")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1: the client needs a core)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections for the closed-loop runs")
    parser.add_argument("--skus", type=int, help="SKUs to seed (default 10000; 2000 with --quick)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--no-fast-path", action="store_true", help="main server without the lookup fast path")
    parser.add_argument("--no-variants", action="store_true", help="skip the server / fast path / worker variants")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server log, data)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
