"""The rate limit holds across API workers: `availability serve --workers 2` (real processes)
over the session's Redis, hammered on fresh connections so both workers take requests.
The same run with `rate_limit_shared=false` shows the test can fail: each worker then has
its own bucket and the caller gets about twice as much."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from availability.embedded_redis import free_port
from loadtests.bench_api import stop_server

KEY = "limit-reader-key"
RATE = 5


def _serve(redis_url: str, tmp_path, *, shared: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": f"rl{uuid.uuid4().hex[:8]}",
        "AVAILABILITY_DATA_DIR": str(tmp_path / f"var-{shared}"),
        "AVAILABILITY_API_KEYS": json.dumps([{"key": KEY, "scopes": ["read"], "name": "shopper"}]),
        "AVAILABILITY_RATE_LIMIT_PER_SECOND": str(RATE),
        "AVAILABILITY_RATE_LIMIT_SHARED": "true" if shared else "false",
        "AVAILABILITY_SERVICES": "[]",
        "AVAILABILITY_DEV_ADMIN_KEY": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "serve", "--server", "uvicorn",
         "--workers", "2", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


#: Startup and hammering bounds: generous, for a loaded CI machine (a dead server fails at once).
READY_BOUND_S = 180
HAMMER_BOUND_S = 60


def ceiling(elapsed: float) -> float:
    """The most one shared bucket admits in `elapsed` seconds: a burst of RATE, then RATE per
    second; each worker may hold one unspent prefetched token (chunk = 1 at this rate), and
    a second of clock slack."""
    return RATE + RATE * (elapsed + 1) + 2


async def _ready(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_BOUND_S
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"serve exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                # both workers: a live answer from several fresh connections
                answers = [await client.get(f"{base}/health/live", headers={"Connection": "close"}) for _ in range(4)]
                if all(a.status_code == 200 for a in answers):
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"serve did not answer within {READY_BOUND_S} s")


async def _hammer(base: str, done) -> tuple[int, int, float]:
    """(admitted, refused, elapsed) for lookups sent by 8 callers on fresh connections, as they
    stood when `done(admitted, refused, elapsed)` first held (checked after each answer,
    the clock read after the counts: a later clock only raises the ceiling)."""
    counts = {200: 0, 429: 0}
    snapshot: list[tuple[int, int, float]] = []
    # a new connection per request: uvicorn's workers share the socket, so both take some
    # (one client made before the clock starts: making one costs more than a request)
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as client:
        started = time.monotonic()
        finished = asyncio.Event()

        async def caller() -> None:
            while not finished.is_set():
                resp = await client.get(f"{base}/v1/availability/TEE", headers={"Authorization": f"Bearer {KEY}"})
                assert resp.status_code in (200, 429), resp.text
                counts[resp.status_code] += 1
                elapsed = time.monotonic() - started
                if not finished.is_set() and (done(counts[200], counts[429], elapsed) or elapsed > HAMMER_BOUND_S):
                    snapshot.append((counts[200], counts[429], elapsed))
                    finished.set()

        await asyncio.gather(*(caller() for _ in range(8)))
        return snapshot[0]


async def _admitted(redis_url: str, tmp_path, done, *, shared: bool) -> tuple[int, int, float]:
    proc, base = _serve(redis_url, tmp_path, shared=shared)
    try:
        await _ready(base, proc)
        await asyncio.sleep(1.5)  # the readiness probes took no tokens, but let any bucket refill
        return await _hammer(base, done)
    finally:
        stop_server(proc)


async def test_a_caller_gets_the_limit_across_two_workers(redis_url, tmp_path):
    # Three seconds of traffic and at least one refusal (a slow machine sends fewer requests:
    # it then hammers on until the limit shows); the ceiling is measured over the whole run.
    admitted, refused, elapsed = await _admitted(
        redis_url, tmp_path, lambda ok, no, elapsed: elapsed >= 3.0 and no > 0, shared=True)
    assert refused > 0 and admitted <= ceiling(elapsed), (admitted, refused, elapsed, ceiling(elapsed))
    assert admitted >= RATE, (admitted, refused)  # and it did let the caller in

    # The same traffic with a bucket per worker: both workers admit their own share, and the
    # caller gets past the one-bucket ceiling (hammering until it does, within the bound).
    per_process, _, elapsed_pp = await _admitted(
        redis_url, tmp_path, lambda ok, no, elapsed: ok > ceiling(elapsed), shared=False)
    assert per_process > ceiling(elapsed_pp), (per_process, elapsed_pp, admitted)
