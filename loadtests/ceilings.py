"""Ceilings measured in the same run as our figures, so ratios survive machine drift.

`apply_script_ceiling` runs the ledger's own apply_event.lua as fast as the Redis server
can: a raw-socket RESP pipeline of pre-encoded commands (no client library in the loop),
built by `ledger.apply_call` exactly as the ledger calls the script, with random SKUs and
event ids, so the server does the same work per event as in production. (redis-benchmark
is no longer used: its `__rand_int__` placeholders cannot make the per-event 8-byte
digest the script takes, and a constant one would make every event after the first a
cheaper duplicate.)
"""

from __future__ import annotations

import socket
import time
import uuid
from importlib import resources
from urllib.parse import urlparse

def apply_script_sha(redis_url: str) -> str:
    import redis

    source = resources.files("availability.ledger").joinpath("scripts", "apply_event.lua").read_text()
    client = redis.Redis.from_url(redis_url)
    try:
        return client.script_load(source)
    finally:
        client.close()


def _apply_command(sha: str, prefix: str, sku: str, event_id: str, at_ms: int) -> bytes:
    from availability.domain.events import StockEvent
    from availability.ledger.keys import KeyLayout
    from availability.ledger.ledger import LedgerLimits, apply_call
    from datetime import UTC, datetime

    event = StockEvent(event_id=event_id, type="receipt", source="sim", sku=sku, location="DC1", quantity=1,
                       occurred_at=datetime(2026, 11, 20, tzinfo=UTC))
    keys, argv = apply_call(KeyLayout(prefix), LedgerLimits(), event, at_ms)
    return _encode("EVALSHA", sha, str(len(keys)), *keys, *argv)


def apply_script_ceiling(redis_url: str, *, requests: int = 200_000, pipeline: int = 32, clients: int = 4,
                         skus: int = 100_000) -> dict:
    sha = apply_script_sha(redis_url)
    prefix = f"ceil{uuid.uuid4().hex[:6]}"
    return _raw_pipeline_ceiling(redis_url, sha, prefix, requests=requests, pipeline=pipeline * clients, skus=skus)


def _encode(*parts) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _raw_pipeline_ceiling(redis_url: str, sha: str, prefix: str, *, requests: int, pipeline: int, skus: int) -> dict:
    url = urlparse(redis_url)
    import random

    rnd = random.Random(7)
    at_ms = int(time.time() * 1000)
    commands = [_apply_command(sha, prefix, f"SKU-{rnd.randrange(skus)}", f"ev-{i}", at_ms) for i in range(requests)]
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
    return {"tool": "raw RESP pipeline", "ops_per_sec": requests / elapsed,
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
