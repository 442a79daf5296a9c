"""Benchmark: the HTTP API under load, beside the same server answering a constant. Prints JSON.

    python -m loadtests.bench_api [--quick] [--redis-url URL] [--workers 1] [--concurrency 32]
                                  [--skus 10000] [--no-pin] [--out FILE]

What it does, in one run (about 4 minutes; --quick about 1.5):

1. Starts Redis (embedded, unless --redis-url), then the service exactly as operators do
   (`python -m availability.cli serve`: its default server, Granian on RSGI, api/rsgi.py)
   on a free loopback port with the benchmark's constant endpoint enabled
   (AVAILABILITY_BENCH_ENDPOINTS), an admin API key, and the rate limit set out of reach
   (the limiter still runs on every request).
2. Seeds master data and rules through the API (3 locations, a global safety stock, an
   online buffer) and stock for --skus SKUs at every location straight into the ledger.
3. Lookups: `GET /v1/availability/{sku}` (random seeded SKU) and `GET /bench/constant`
   (same app, same auth gate and metrics, no Redis, no rules: under Granian it is Litestar
   behind the RSGI bridge, the framework's own ceiling on that server), each first
   closed-loop with --concurrency connections (peak throughput), then open-loop at half
   that peak (p50/p99 at half of peak; issue 17's aim: p99 under 2 ms).
4. Batch: `POST /v1/availability/batch` with 100 SKUs, closed-loop.
5. Reservations (`reservations`): one hot SKU, more single-unit reservations than it has ATS, from 64
   connections at once; reports reservations per second and `oversold` (successes beyond
   the ATS before the run; must be 0), cross-checked with the ledger's reserved count.
6. Lookup variants (`lookup_variants`, skip with --no-variants): the main server stopped, one
   server at a time over the same Redis and rules: uvicorn (ASGI), Granian on ASGI
   (`granian --interface asgi`, the previous best) and Granian on RSGI (`serve`'s default),
   with the lookup fast path (api/fastpath.py) or with Litestar answering
   (AVAILABILITY_FAST_LOOKUPS=0), 1 or 2 workers; peak and p99 at half peak, each as a
   ratio to the uvicorn constant endpoint measured in the same run (`uvicorn_constant`)
   and to its own server's constant endpoint.

Load generators: the closed-loop peaks are taken by `wrk` (C, one thread) when it is on
PATH (`apt-get install wrk`), else by loadtests/api_loadgen.py; the open loop at half peak
is loadtests/api_loadgen.py (wrk has no fixed-rate mode). Unless --no-pin, on a machine
with 2+ cores the load generators, this process and the embedded Redis run on the last
core and a 1-worker server on the others (`os.sched_setaffinity`), so "one worker" is one
core the client does not share; a 2-worker server gets every core, the client's too.
The JSON's `client` says which generator measured what.
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
from loadtests.api_loadgen import build_request, closed_loop, open_loop, wrk_closed_loop, wrk_path

HOST = "127.0.0.1"
KEY = "bench-admin-" + uuid.uuid4().hex[:12]
LOCATIONS = ("DC1", "STORE-1", "STORE-2")
HOT_SKU = "HOT-SNEAKER-42"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


#: what the load generator, this process and Redis are pinned to, and what a server gets
PIN: dict[str, set[int] | None] = {"client": None, "server": None, "all": None}


def plan_cpus(pin: bool) -> None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin and len(cpus) >= 2:
        PIN.update(client={cpus[-1]}, server=set(cpus[:-1]), all=set(cpus))


def _pinned(cpus: set[int] | None):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def start_server(
    redis_url: str, port: int, prefix: str, data_dir: str, workers: int, server: str = "granian", fast: bool = True
) -> subprocess.Popen:
    """`server`: granian (serve's default: RSGI), uvicorn, or granian-asgi (Granian's own CLI on
    the ASGI factory, the interface `serve --server granian` used before RSGI)."""
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
    if server == "granian-asgi":
        cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", HOST, "--port",
               str(port), "--workers", str(workers), "--log-level", "warning", "availability.api.app:create_asgi_app"]
    else:
        cmd = [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "serve", "--host", HOST,
               "--port", str(port), "--workers", str(workers), "--server", server]
    log = open(Path(data_dir) / f"server-{port}.log", "wb")
    cpus = PIN["server"] if workers == 1 else PIN["all"]
    # The process's own session (stop_server kills the group) and its cores (workers inherit them).
    def setup() -> None:
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=setup)
    SERVER_SESSION[port] = proc.pid  # setsid: the session id is the server's pid
    return proc


def session_cpu_seconds(session: int) -> float:
    """User + system CPU of every live process in `session` (the server and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
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


AUTH = f"Bearer {KEY}"


def lookup_requests(skus: int) -> list[tuple[str, str, str]]:
    rng = random.Random(11)
    return [("GET", f"/v1/availability/SKU-{rng.randrange(skus):06d}", "") for _ in range(4096)]


def constant_requests() -> list[tuple[str, str, str]]:
    return [("GET", "/bench/constant", "")]


def batch_requests(skus: int, size: int = 100) -> list[tuple[str, str, str]]:
    rng = random.Random(13)
    out = []
    for _ in range(256):
        body = json.dumps({"skus": [f"SKU-{rng.randrange(skus):06d}" for _ in range(size)]}, separators=(",", ":"))
        out.append(("POST", "/v1/availability/batch", body))
    return out


def factory(requests: list[tuple[str, str, str]]):
    """The same requests for the Python load generator: pre-encoded, cycled."""
    headers = {"Authorization": AUTH}
    pool = []
    for method, path, body in requests:
        extra = {"Content-Type": "application/json"} if body else {}
        pool.append(build_request(method, path, HOST, {**headers, **extra}, body.encode()))
    size = len(pool)
    return lambda i: pool[i % size]


async def peak(port: int, requests: list[tuple[str, str, str]], concurrency: int, seconds: float,
               warmup: float) -> dict:
    """Closed loop: wrk on the client's core when installed, else the Python generator. With
    the server's session known (SERVER_SESSION), also its CPU per request: a figure that
    holds better than requests/s on a loaded machine (20,000/s on one core = 50 µs)."""
    session = SERVER_SESSION.get(port)
    if session is None:
        return await _peak(port, requests, concurrency, seconds, warmup)
    await _peak(port, requests, concurrency, warmup, 0)
    before = session_cpu_seconds(session)
    result = await _peak(port, requests, concurrency, seconds, 0)
    used = session_cpu_seconds(session) - before
    result["server_cpu_us_per_request"] = round(used / result["requests"] * 1e6, 1) if result["requests"] else None
    return result


#: port -> the session id of the server process listening there (start_server)
SERVER_SESSION: dict[int, int] = {}


async def _peak(port: int, requests: list[tuple[str, str, str]], concurrency: int, seconds: float,
                warmup: float) -> dict:
    if wrk_path():
        if warmup:
            await asyncio.to_thread(wrk_closed_loop, HOST, port, requests, AUTH, connections=concurrency,
                                    seconds=warmup, cpus=PIN["client"])
        return await asyncio.to_thread(wrk_closed_loop, HOST, port, requests, AUTH, connections=concurrency,
                                       seconds=seconds, cpus=PIN["client"])
    make = factory(requests)
    if warmup:
        await closed_loop(HOST, port, make, concurrency=concurrency, seconds=warmup)
    return dict((await closed_loop(HOST, port, make, concurrency=concurrency, seconds=seconds)).summary(),
                loadgen="loadtests/api_loadgen.py")


async def peak_and_half(port: int, requests: list[tuple[str, str, str]], concurrency: int, seconds: float,
                        warmup: float) -> dict:
    top = await peak(port, requests, concurrency, seconds, warmup)
    half_rate = max(50.0, top["requests_per_sec"] / 2)
    half = (await open_loop(HOST, port, factory(requests), rate=half_rate, seconds=seconds)).summary()
    return {"peak": top, "at_half_peak": dict(half, target_rate=round(half_rate, 1), loadgen="loadtests/api_loadgen.py")}


async def lookups(port: int, skus: int, concurrency: int, seconds: float, warmup: float) -> dict:
    out: dict = {}
    for name, requests in (("constant", constant_requests()), ("availability", lookup_requests(skus))):
        out[name] = await peak_and_half(port, requests, concurrency, seconds, warmup)
    const_rps = out["constant"]["peak"]["requests_per_sec"]
    avail_rps = out["availability"]["peak"]["requests_per_sec"]
    framework_us = 1e6 / const_rps if const_rps else 0.0
    total_us = 1e6 / avail_rps if avail_rps else 0.0
    out["comparison"] = {
        "throughput_ratio": round(avail_rps / const_rps, 3) if const_rps else None,
        "framework_us_per_request": round(framework_us, 1),
        "lookup_us_per_request": round(total_us, 1),
        "lookup_server_cpu_us": out["availability"]["peak"].get("server_cpu_us_per_request"),
        "constant_server_cpu_us": out["constant"]["peak"].get("server_cpu_us_per_request"),
        "p99_ms_at_half_peak": out["availability"]["at_half_peak"]["p99_ms"],
        "p99_under_2ms_at_half_peak": out["availability"]["at_half_peak"]["p99_ms"] < 2.0,
    }
    return out


#: (server, fast path, workers) measured one at a time beside the uvicorn constant endpoint;
#: the main server (granian, fast, 1 worker) is measured in step 3
VARIANTS = (
    ("granian", True, 1),
    ("uvicorn", False, 1),
    ("uvicorn", True, 1),
    ("uvicorn", True, 2),
    ("granian-asgi", True, 1),
    ("granian", False, 1),
    ("granian", True, 2),
)
#: servers whose own constant endpoint is measured too (1 worker)
CONSTANTS = ("uvicorn", "granian-asgi")


def _entry(server: str, fast: bool, workers: int, measured: dict) -> dict:
    top, half = measured["peak"], measured["at_half_peak"]
    return {
        "server": server,
        "fast_path": fast,
        "workers": workers,
        "peak_rps": top["requests_per_sec"],
        "peak_statuses": top["statuses"],
        "peak_loadgen": top.get("loadgen"),
        "server_cpu_us_per_request": top.get("server_cpu_us_per_request"),
        "at_half_peak": {q: half[q] for q in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")},
        "half_peak_target_rate": half["target_rate"],
        "half_peak_achieved_rate": half["requests_per_sec"],
    }


def _name(server: str, fast: bool, workers: int) -> str:
    return f"{server.replace('-', '_')}_{'fast' if fast else 'litestar'}_w{workers}"


async def lookup_variants(
    redis_url: str, prefix: str, work: str, skus: int, concurrency: int, seconds: float, warmup: float,
    main: dict, main_kind: tuple[str, bool, int],
) -> dict:
    """The lookup under each (server, fast path, workers), one server at a time, same Redis and
    rules as the main run; the main server's own figures stand for its kind."""
    out: dict = {_name(*main_kind): dict(
        _entry(*main_kind, main["availability"]),
        constant_peak_rps=main["constant"]["peak"]["requests_per_sec"],
        constant_server_cpu_us_per_request=main["constant"]["peak"].get("server_cpu_us_per_request"),
    )}
    requests = lookup_requests(skus)
    for server, fast, workers in VARIANTS:
        name = _name(server, fast, workers)
        if name in out:
            continue
        port = free_port()
        proc = start_server(redis_url, port, prefix, work, workers, server=server, fast=fast)
        try:
            await wait_ready(f"http://{HOST}:{port}", proc)
            entry = _entry(server, fast, workers, await peak_and_half(port, requests, concurrency, seconds, warmup))
            if server in CONSTANTS and workers == 1 and fast:
                constant = await peak(port, constant_requests(), concurrency, seconds, warmup)
                entry["constant_peak_rps"] = constant["requests_per_sec"]
                entry["constant_server_cpu_us_per_request"] = constant.get("server_cpu_us_per_request")
            out[name] = entry
        finally:
            stop_server(proc)
    const = out.get("uvicorn_fast_w1", {}).get("constant_peak_rps")
    base = out.get("uvicorn_litestar_w1", {}).get("peak_rps")
    own_constants = {e["server"]: e["constant_peak_rps"] for e in out.values() if "constant_peak_rps" in e}
    for entry in out.values():
        entry["ratio_to_uvicorn_constant"] = round(entry["peak_rps"] / const, 3) if const else None
        own = own_constants.get(entry["server"])
        entry["ratio_to_own_constant"] = round(entry["peak_rps"] / own, 3) if own else None
        entry["speedup_vs_uvicorn_litestar_w1"] = round(entry["peak_rps"] / base, 2) if base else None
    for server in ("uvicorn", "granian"):
        one, two = out.get(f"{server}_fast_w1"), out.get(f"{server}_fast_w2")
        if one and two:
            two["scaling_vs_w1"] = round(two["peak_rps"] / one["peak_rps"], 2)
    return out


async def batch(port: int, skus: int, seconds: float) -> dict:
    result = await peak(port, batch_requests(skus), 8, seconds, min(1.0, seconds))
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
    plan_cpus(not args.no_pin)
    if PIN["client"]:
        os.sched_setaffinity(0, PIN["client"])  # this process runs the Python load generator
    work = tempfile.mkdtemp(prefix="bench-api-")
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(Path(work) / "redis", appendonly=False).start()
        redis_url = embedded.url
        if PIN["client"] and embedded.process is not None:
            os.sched_setaffinity(embedded.process.pid, PIN["client"])
    prefix = f"ba{uuid.uuid4().hex[:6]}"
    port = free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(redis_url, port, prefix, work, args.workers, server=args.server, fast=not args.no_fast_path)
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
                "server": args.server,
                "interface": "RSGI (api/rsgi.py)" if args.server == "granian" else "ASGI",
                "fast_path": not args.no_fast_path,
                "granian": _module_version("granian"),
                "uvicorn": _module_version("uvicorn"),
                "redis": "embedded" if embedded else "given",
                "loop": _module_version("uvloop"),
                "cpus": sorted(PIN["server"]) if PIN["server"] and args.workers == 1 else "all",
            },
            "client": {
                "concurrency": args.concurrency,
                "peak_loadgen": "wrk (1 thread)" if wrk_path() else "loadtests/api_loadgen.py",
                "wrk": wrk_path(),
                "half_peak_loadgen": "loadtests/api_loadgen.py open loop",
                "loop": "uvloop" if _has("uvloop") else "asyncio",
                "cpus": sorted(PIN["client"]) if PIN["client"] else "all",
                "redis_cpus": sorted(PIN["client"]) if PIN["client"] and embedded else "not pinned",
            },
            "seeded": seeded,
            "lookups": await lookups(port, skus, args.concurrency, seconds, warmup),
            "batch_100": await batch(port, skus, seconds),
            "reservations": await reservations(base, port, redis_url, prefix, hot_stock),
        }
        if not args.no_variants:
            stop_server(proc)  # one server at a time: they share the two cores with the client
            result["lookup_variants"] = variants = await lookup_variants(
                redis_url, prefix, work, skus, args.concurrency, seconds, warmup, result["lookups"],
                (args.server, not args.no_fast_path, args.workers),
            )
            uvicorn = variants.get("uvicorn_fast_w1", {})
            result["uvicorn_constant"] = {"peak_rps": uvicorn.get("constant_peak_rps")}
            result["lookup_2_workers"] = {
                "peak_rps": variants.get("granian_fast_w2", {}).get("peak_rps"),
                **variants.get("granian_fast_w2", {}).get("at_half_peak", {}),
            }
        # Flat figures for loadtests/suite.py's table: peak throughput, latency at half peak.
        for name, part in (("lookup", "availability"), ("constant", "constant")):
            measured = result["lookups"][part]
            half = measured["at_half_peak"]
            result[name] = {
                "server": args.server,
                "peak_rps": measured["peak"]["requests_per_sec"],
                "server_cpu_us_per_request": measured["peak"].get("server_cpu_us_per_request"),
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
    parser.add_argument("--workers", type=int, default=1, help="main server's workers (default 1: the client needs a core)")
    parser.add_argument("--server", choices=("granian", "uvicorn", "granian-asgi"), default="granian",
                        help="main server (default granian, as `availability serve` runs)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the client and the server to separate cores")
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
