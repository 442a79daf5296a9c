"""Ceilings measured in the same run as our figures, so ratios survive machine drift.

`apply_script_ceiling` runs the ledger's own apply_event.lua as fast as the Redis server
can: with `redis-benchmark` (pipelined EVALSHA, several connections) when it is
installed, else with a raw-socket RESP pipeline of pre-encoded commands (no client
library in the loop). Both hand the server the same script with random SKUs and
event ids, so it does the same work per event as in production.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import uuid
from importlib import resources
from urllib.parse import urlparse

APPLY_KEYS = 6


def apply_script_sha(redis_url: str) -> str:
    import redis

    source = resources.files("availability.ledger").joinpath("scripts", "apply_event.lua").read_text()
    client = redis.Redis.from_url(redis_url)
    try:
        return client.script_load(source)
    finally:
        client.close()


def _apply_args(prefix: str, sku: str, event_id: str) -> list[str]:
    return [
        f"{prefix}:{{{sku}}}:stock", f"{prefix}:{{{sku}}}:seen", f"{prefix}:{{{sku}}}:dl:DC1",
        f"{prefix}:{{{sku}}}:holds", f"{prefix}:dirty", f"{prefix}:journal",
        event_id, "receipt", "", sku, "DC1", "1", "1795168800000", "", "1795168800000",
        str(7 * 24 * 3600 * 1000), "1000000", "10000", "",
    ]


def apply_script_ceiling(redis_url: str, *, requests: int = 200_000, pipeline: int = 32, clients: int = 4,
                         skus: int = 100_000) -> dict:
    sha = apply_script_sha(redis_url)
    prefix = f"ceil{uuid.uuid4().hex[:6]}"
    binary = shutil.which("redis-benchmark")
    if binary:
        url = urlparse(redis_url)
        args = _apply_args(prefix, "SKU-__rand_int__", "ev-__rand_int__")
        cmd = [binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "-n", str(requests),
               "-P", str(pipeline), "-c", str(clients), "-r", str(skus), "-q", "EVALSHA", sha, str(APPLY_KEYS), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
        # "-q" prints e.g. "EVALSHA ...: 85034.01 requests per second, p50=..."
        match = re.findall(r"([\d.]+) requests per second", out)
        if not match:
            raise RuntimeError(f"could not read redis-benchmark output: {out!r}")
        return {"tool": "redis-benchmark", "ops_per_sec": float(match[-1]), "requests": requests,
                "pipeline": pipeline, "clients": clients, "key_prefix": prefix}
    return _raw_pipeline_ceiling(redis_url, sha, prefix, requests=requests, pipeline=pipeline * clients, skus=skus)


def _encode(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _raw_pipeline_ceiling(redis_url: str, sha: str, prefix: str, *, requests: int, pipeline: int, skus: int) -> dict:
    url = urlparse(redis_url)
    import random

    rnd = random.Random(7)
    commands = [
        _encode("EVALSHA", sha, str(APPLY_KEYS), *_apply_args(prefix, f"SKU-{rnd.randrange(skus)}", f"ev-{i}"))
        for i in range(requests)
    ]
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    reader = sock.makefile("rb")
    started = time.perf_counter()
    for start in range(0, requests, pipeline):
        chunk = commands[start : start + pipeline]
        sock.sendall(b"".join(chunk))
        for _ in chunk:
            _skip_reply(reader)
    elapsed = time.perf_counter() - started
    sock.close()
    return {"tool": "raw RESP pipeline (redis-benchmark not installed)", "ops_per_sec": requests / elapsed,
            "requests": requests, "pipeline": pipeline, "clients": 1, "key_prefix": prefix}


def _skip_reply(reader) -> None:
    line = reader.readline()
    kind = line[:1]
    if kind == b"*":
        for _ in range(int(line[1:])):
            _skip_reply(reader)
    elif kind == b"$":
        size = int(line[1:])
        if size >= 0:
            reader.read(size + 2)
    elif kind == b"-":
        raise RuntimeError(line.decode(errors="replace"))


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
