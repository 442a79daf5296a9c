"""A small HTTP/1.1 load generator on raw asyncio protocols (no HTTP client library).

httpx and aiohttp spend more CPU per request than the server under test, and on a 2-core
machine the client shares the CPU with the server and Redis, so the client here is as thin
as it gets: keep-alive connections, pre-encoded requests, responses framed by
Content-Length (what uvicorn sends for every fixed-size body), one request in flight per
connection (no pipelining, so a latency is one request's).

- `closed_loop`: N connections, each sending its next request as soon as the last one is
  answered: the throughput ceiling, and latency at that load.
- `open_loop`: requests started on a fixed schedule (rate per second) whatever the server
  does; latency is measured from the scheduled start, so a stall is charged to every
  request it delays (no coordinated omission).

Only loopback addresses are used by the benchmark that drives it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

RequestFactory = Callable[[int], bytes]


def build_request(method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "buffer", "waiter", "closed")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : end if end > 0 else None])
        total = head_end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[head_end + 4 : total])
        del self.buffer[:total]
        self.waiter.set_result((status, body))

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)  # type: ignore[union-attr]
        return await self.waiter


async def connect(host: str, port: int) -> _Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    return protocol


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    seconds: float = 0.0
    bodies: list[tuple[int, bytes]] = field(default_factory=list)

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        n = len(lat)

        def pct(p: float) -> float:
            return round(lat[min(n - 1, int(n * p))] * 1000, 3) if n else 0.0

        return {
            "requests": n,
            "seconds": round(self.seconds, 3),
            "requests_per_sec": round(n / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "p999_ms": pct(0.999),
            "max_ms": round(lat[-1] * 1000, 3) if n else 0.0,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
        }


async def closed_loop(
    host: str,
    port: int,
    make: RequestFactory,
    *,
    concurrency: int,
    seconds: float | None = None,
    requests: int | None = None,
    keep_bodies: bool = False,
) -> Stats:
    """Each of `concurrency` connections sends back to back, for `seconds` or until `requests` are sent."""
    stats = Stats()
    conns = [await connect(host, port) for _ in range(concurrency)]
    counter = iter(range(requests if requests is not None else 10**12))
    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else float("inf")
    clock = time.perf_counter

    async def worker(conn: _Connection) -> None:
        for i in counter:
            t0 = clock()
            if t0 >= deadline:
                return
            try:
                status, body = await conn.send(make(i))
            except ConnectionError:
                stats.errors += 1
                conn = await connect(host, port)
                continue
            stats.latencies.append(clock() - t0)
            stats.statuses[status] += 1
            if keep_bodies:
                stats.bodies.append((status, body))

    await asyncio.gather(*(worker(c) for c in conns))
    stats.seconds = time.perf_counter() - started
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return stats


async def open_loop(
    host: str, port: int, make: RequestFactory, *, rate: float, seconds: float, max_connections: int = 64
) -> Stats:
    """Start requests at `rate` per second for `seconds` over up to `max_connections` connections.

    Request i is due at start + i / rate. A connection that is free early sleeps until the
    request is due and times it from when it wakes (the event loop's timer is coarse, and its
    lateness is the client's, not the server's); a request that is already overdue because
    every connection was busy is timed from when it was due, so a server stall is charged to
    every request it held up (no coordinated omission).
    """
    stats = Stats()
    total = int(rate * seconds)
    interval = 1.0 / rate
    clock = time.perf_counter
    counter = iter(range(total))
    conns = [await connect(host, port) for _ in range(max_connections)]
    started = clock()

    async def worker(conn: _Connection) -> None:
        for i in counter:
            due = started + i * interval
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                t0 = clock()
            else:
                t0 = due
            try:
                status, _ = await conn.send(make(i))
            except ConnectionError:
                stats.errors += 1
                conn = await connect(host, port)
                continue
            stats.latencies.append(clock() - t0)
            stats.statuses[status] += 1

    await asyncio.gather(*(worker(c) for c in conns))
    stats.seconds = clock() - started
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return stats


# --- wrk: the closed-loop peak from a compiled load generator ------------------------------
#
# A Python client on the same two cores caps what it can measure (it spends about as much
# CPU per request as the server under test), so peaks are taken with wrk (Debian's `wrk`,
# C + LuaJIT) when it is installed, pinned to a core of its own. wrk has no open loop
# (fixed request rate) mode, so latency at half peak stays with `open_loop` above.

WRK_LUA = r"""
local pool = {}
local n = 0
local i = 0
function init(args)
  for line in io.lines("%(requests)s") do
    local method, path, body = line:match("^(%%S+) (%%S+) ?(.*)$")
    local headers = { ["Authorization"] = "%(auth)s" }
    if body ~= "" then headers["Content-Type"] = "application/json" else body = nil end
    n = n + 1
    pool[n] = wrk.format(method, path, headers, body)
  end
end
function request()
  i = i + 1
  return pool[(i %% n) + 1]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests":%%d,"duration_us":%%d,"connect_errors":%%d,"read_errors":%%d,' ..
    '"write_errors":%%d,"timeouts":%%d,"non_2xx":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"p999_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def wrk_path() -> str | None:
    import shutil  # noqa: PLC0415

    return shutil.which("wrk")


def wrk_closed_loop(
    host: str,
    port: int,
    requests: list[tuple[str, str, str]],
    auth: str,
    *,
    connections: int,
    seconds: float,
    cpus: set[int] | None = None,
) -> dict:
    """wrk, one thread (pinned to `cpus`), `connections` keep-alive connections cycling
    through `requests` ((method, path, JSON body or "")). Same keys as `Stats.summary()`."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        listing = os.path.join(tmp, "requests.txt")
        with open(listing, "w") as fh:
            for method, path, body in requests:
                fh.write(f"{method} {path} {body}".rstrip() + "\n")
        script = os.path.join(tmp, "bench.lua")
        with open(script, "w") as fh:
            fh.write(WRK_LUA % {"requests": listing, "auth": auth})
        cmd = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", script, f"http://{host}:{port}/"]
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=seconds + 60,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    raw = json.loads(line[len("WRK-JSON "):])
    secs = raw["duration_us"] / 1e6
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "requests": raw["requests"],
        "seconds": round(secs, 3),
        "requests_per_sec": round(raw["requests"] / secs, 1) if secs else 0.0,
        **{f"{q}_ms": round(raw[f"{q}_us"] / 1000, 3) for q in ("p50", "p90", "p99", "p999", "max")},
        # wrk counts answers, not statuses: everything but 2xx/3xx is `non_2xx`
        "statuses": {"2xx/3xx": raw["requests"] - raw["non_2xx"], "other": raw["non_2xx"]},
        "errors": errors,
        "loadgen": "wrk",
    }
