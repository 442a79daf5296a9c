"""Batched apply (apply_batch.lua: a partition's events in one script call) against the
per-event path (apply_event.lua, one call an event) and the plain-Python oracle
(availability/domain/ledger_model.py): the same statuses, buckets, journal, dirty marks and
oversells for random mixed batches with duplicates and events the script refuses; and a
real process SIGKILLed mid-batch loses nothing once the delivery is redelivered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from availability.domain.ats import Buckets
from availability.domain.ledger_model import LedgerModel
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from tests.factories import event
from tests.ingest.conftest import LOCATIONS, random_events

#: enough SKUs to land in many partitions (and several in one)
SKUS = tuple(f"B-{i}" for i in range(40))
BAD_SKU = "BAD-1"
STAMP = 1_795_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def _ledger(redis_client, partitions: int = 16) -> Ledger:
    return Ledger(redis_client, keys=KeyLayout(f"ba{uuid.uuid4().hex[:10]}", partitions))


async def _dirty(ledger: Ledger) -> set[str]:
    out: set[str] = set()
    for key in ledger.keys.all_dirty():
        out |= {m.decode() for m in await ledger.redis.zrange(key, 0, -1)}
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batched_apply_equals_per_event_path_and_oracle(redis_client, seed):
    rng = random.Random(seed)
    events = random_events(1500, seed=seed, skus=SKUS, dup_rate=0.1)
    # events the script refuses: their (SKU, location) holds a stored value that does not parse
    for k in range(30):
        events.insert(rng.randrange(len(events)), event("receipt", sku=BAD_SKU, location="DC1", quantity=1,
                                                        event_id=f"bad-{seed}-{k}"))
    batched, per_event = _ledger(redis_client), _ledger(redis_client)
    for led in (batched, per_event):
        await led.load_scripts()
        await led.redis.hset(led.keys.stock(BAD_SKU), "DC1", "7,seven,0,0,0,-1")
    oracle = LedgerModel()

    start = 0
    while start < len(events):
        chunk = events[start : start + rng.randint(1, 400)]
        start += len(chunk)
        got = await batched.apply_partitioned(chunk, at_ms=STAMP, per_call=rng.choice((3, 50, 256)))
        want = await per_event.apply_batch(chunk, at_ms=STAMP)
        assert [(r.event_id, r.status, r.buckets, r.units_short, r.error) for r in got] == [
            (r.event_id, r.status, r.buckets, r.units_short, r.error) for r in want
        ]
        for ev, result in zip(chunk, got):
            if ev.sku == BAD_SKU:
                assert result.status == "error" and result.error.startswith("corrupt_stock"), result
                continue
            assert result.status == oracle.apply(ev), ev

    stock = await batched.stock_many(SKUS)
    assert stock == await per_event.stock_many(SKUS)
    for sku in SKUS:
        for loc in LOCATIONS:
            assert stock[sku].get(loc, Buckets()) == oracle.buckets(sku, loc), (sku, loc)
    assert await batched.journal_length() == await per_event.journal_length()
    assert await _dirty(batched) == await _dirty(per_event)
    over = lambda rows: sorted((o.event_id, o.sku, o.location, o.units_short) for _, o in rows)  # noqa: E731
    assert over(await batched.oversells(limit=5000)) == over(await per_event.oversells(limit=5000))
    # a refused event wrote nothing: no idempotency record, so it applies once the value is repaired
    bad_ids = [e.event_id for e in events if e.sku == BAD_SKU]
    assert await batched.applied(BAD_SKU, bad_ids, at_ms=STAMP) == set()
    await batched.redis.hset(batched.keys.stock(BAD_SKU), "DC1", "7,0,0,0,0,-1")
    again = await batched.apply_partitioned([e for e in events if e.sku == BAD_SKU], at_ms=STAMP)
    assert {r.status for r in again} == {"applied"}
    assert (await batched.stock(BAD_SKU))["DC1"].on_hand == 7 + len(bad_ids)


async def test_a_batch_touches_one_partition_per_call(redis_client):
    """Every key apply_batch.lua is given carries one partition's hash tag (one slot)."""
    from availability.ledger.ledger import batch_call, partition_batches

    ledger = _ledger(redis_client, partitions=8)
    events = random_events(300, seed=9, skus=SKUS)
    for group in partition_batches(ledger.keys, events, 40):
        keys, _argv = batch_call(ledger.keys, ledger.limits, [events[i] for i in group], STAMP)
        tags = {key[len(ledger.keys.prefix) + 1 : key.index("}") + 1] for key in keys}
        assert len(tags) == 1 and len(group) <= 40, tags


_CHILD = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
from availability.bootstrap import make_redis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from tests.ingest.conftest import random_events

async def main():
    on_cluster = os.environ.get("AVAILABILITY_REDIS_CLUSTER", "").lower() in ("1", "true")
    redis = make_redis({url!r}, **({{"cluster": True}} if on_cluster else {{}}))
    ledger = Ledger(redis, keys=KeyLayout({prefix!r}, 16))
    events = random_events({n}, seed=5, skus={skus!r}, dup_rate=0.05)
    for start in range(0, len(events), 500):
        await ledger.apply_partitioned(events[start:start + 500], at_ms={stamp})
        print("batch", start, flush=True)
    print("done", flush=True)

asyncio.run(main())
"""


async def test_a_process_killed_mid_batch_loses_nothing(redis_client, redis_url):
    """SIGKILL a real process while its batches are in flight; the consumer's redelivery
    (the whole delivery again, as unacknowledged entries are) then gives exactly the state
    of one clean pass: nothing lost, nothing counted twice."""
    n = 40_000
    prefix = f"bk{uuid.uuid4().hex[:10]}"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT), url=redis_url, prefix=prefix, n=n, skus=SKUS, stamp=STAMP)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        seen = []
        while len(seen) < 3:  # let a few batches land, then kill it mid-stream
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, child.stderr.read()
            seen.append(line)
        assert "done" not in "".join(seen)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    killed = Ledger(redis_client, keys=KeyLayout(prefix, 16))
    assert 0 < await killed.journal_length()
    events = random_events(n, seed=5, skus=SKUS, dup_rate=0.05)
    for start in range(0, len(events), 2000):
        await killed.apply_partitioned(events[start : start + 2000], at_ms=STAMP)

    clean = _ledger(redis_client)
    await clean.apply_partitioned(events, at_ms=STAMP)
    assert await killed.stock_many(SKUS) == await clean.stock_many(SKUS)
    assert await killed.journal_length() == await clean.journal_length()
    oracle = LedgerModel()
    for ev in events:
        oracle.apply(ev)
    stock = await killed.stock_many(SKUS)
    for sku in SKUS:
        for loc in LOCATIONS:
            assert stock[sku].get(loc, Buckets()) == oracle.buckets(sku, loc), (sku, loc)
