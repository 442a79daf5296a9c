"""Consumers that scale out (real `availability consume` processes): the partitions spread
over the processes through leases in Redis, move when one joins or leaves, and a process
killed with SIGKILL has its partitions taken over once its leases run out. The ledger
equals the oracle at the end: no event lost, none counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from availability.bootstrap import open_runtime
from availability.ingest.leases import PartitionLeases, assignment
from availability.ingest.publisher import EventPublisher
from availability.ingest.streams import StreamNames
from tests.ingest.conftest import assert_ledger_equals_oracle, make_settings, random_events, wait_drained

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 8
LEASE_SECONDS = 1.5


def _consumer(name: str, settings, redis_url: str, tmp_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": settings.key_prefix,
        "AVAILABILITY_DATA_DIR": str(tmp_path / name),
        "AVAILABILITY_DATABASE_URL": settings.database_url,
        "AVAILABILITY_PARTITIONS": str(PARTITIONS),
        "AVAILABILITY_BATCH_SIZE": "50",
        "AVAILABILITY_CONSUMER_POLL_MS": "20",
        "AVAILABILITY_RECLAIM_INTERVAL_SECONDS": "0.2",
        "AVAILABILITY_CONSUMER_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    return subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "consume", "--consumer", name],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def _owners(leases: PartitionLeases) -> Counter:
    return Counter([await leases.owner(p) for p in range(PARTITIONS)])


async def _until_owned(leases: PartitionLeases, wanted: dict[str, int], procs, timeout: float = 30.0) -> float:
    """Until the lease owners are exactly `wanted` (name -> partitions held); seconds taken."""
    started = time.monotonic()
    while True:
        owners = await _owners(leases)
        if owners == Counter(wanted):
            return time.monotonic() - started
        for proc in procs:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-3000:]
        assert time.monotonic() - started < timeout, f"owners {dict(owners)}, wanted {wanted}"
        await asyncio.sleep(0.05)


def test_the_assignment_is_balanced_and_the_same_for_every_member():
    members = ["c", "a", "b"]
    shares = [assignment(members, m, 64) for m in members]
    assert sorted(len(s) for s in shares) == [21, 21, 22]
    assert set().union(*shares) == set(range(64)) and sum(len(s) for s in shares) == 64
    assert assignment(members, "stranger", 64) == set()


async def test_partitions_follow_consumers_that_join_leave_and_die(redis_url, key_prefix, tmp_path):
    settings = make_settings(redis_url, key_prefix, tmp_path, partitions=PARTITIONS)
    names = StreamNames.from_settings(settings)
    events = random_events(8000, seed=11)
    phases = [events[:2000], events[2000:4000], events[4000:6000], events[6000:]]
    procs: list[subprocess.Popen] = []
    async with open_runtime(settings) as runtime:
        publisher = EventPublisher(runtime)
        leases = PartitionLeases(runtime.redis, names, "observer", ttl_ms=1)
        try:
            await publisher.publish(phases[0])
            a = _consumer("a", settings, redis_url, tmp_path)
            procs.append(a)
            await _until_owned(leases, {"a": PARTITIONS}, procs, timeout=60)

            b = _consumer("b", settings, redis_url, tmp_path)  # joins: a hands over half
            procs.append(b)
            await publisher.publish(phases[1])
            await _until_owned(leases, {"a": PARTITIONS // 2, "b": PARTITIONS // 2}, procs, timeout=60)

            await publisher.publish(phases[2])
            a.send_signal(signal.SIGKILL)  # dies, likely mid-batch: its leases run out, b takes over
            a.wait(10)
            procs.remove(a)
            # b must wait out what is left of a's leases (on Redis's clock, read after the
            # clock here started: none of them can run out sooner than that from now)
            started = time.monotonic()
            left_ms = []
            for p in range(PARTITIONS):
                left = await runtime.redis.pttl(leases.lease_key(p))
                if await leases.owner(p) == "a":  # still a's after the read: the TTL was a's (a is dead)
                    left_ms.append(left)
            await _until_owned(leases, {"b": PARTITIONS}, procs, timeout=60)
            took = time.monotonic() - started
            assert took >= (max(left_ms, default=0) - 1) / 1000, (took, left_ms)  # -1: PTTL rounds down

            c = _consumer("c", settings, redis_url, tmp_path)
            procs.append(c)
            await _until_owned(leases, {"b": PARTITIONS // 2, "c": PARTITIONS // 2}, procs, timeout=60)
            c.send_signal(signal.SIGTERM)  # leaves: hands its partitions back at once
            assert c.wait(30) == 0, c.stderr.read().decode(errors="replace")[-3000:]
            procs.remove(c)
            await _until_owned(leases, {"b": PARTITIONS}, procs)

            await publisher.publish(phases[3])
            await wait_drained(runtime.redis, names, timeout=90)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        await assert_ledger_equals_oracle(runtime.ledger, events)
        assert await runtime.redis.xlen(names.dlq) == 0
