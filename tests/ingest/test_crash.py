"""A consumer process killed with SIGKILL in the middle of a batch: a new consumer
reclaims what it left pending, and the ledger equals the oracle: no event lost, none
counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from availability.bootstrap import open_runtime
from availability.ingest.consumer import StreamConsumer
from availability.ingest.publisher import EventPublisher
from availability.ingest.streams import StreamNames
from tests.ingest.conftest import (
    assert_ledger_equals_oracle,
    make_settings,
    random_events,
    wait_drained,
)

REPO = Path(__file__).resolve().parents[2]


def _id(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)


async def _marks(redis, names: StreamNames, nth: int) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Per partition: (id of its nth entry, id of its last entry), to tell from the group's
    last-delivered-id how far delivery got. (XINFO GROUPS' `entries-read` would count it
    directly, but only from Redis 7.0; this works on every supported server, 6.2 up.)"""
    marks = {}
    for stream in names.all_partitions():
        head = await redis.xrange(stream, "-", "+", count=nth)
        tail = await redis.xrevrange(stream, "+", "-", count=1)
        marks[stream] = (_id(head[-1][0]), _id(tail[0][0]))
    return marks


async def _group_state(redis, names: StreamNames, marks) -> tuple[int, int, int]:
    """(partitions delivered past their mark, partitions not delivered to the end,
    entries pending) over every partition."""
    past = unfinished = pending = 0
    for stream in names.all_partitions():
        for group in await redis.xinfo_groups(stream):
            if group["name"].decode() == names.group:
                pending += group["pending"]
                last = _id(group["last-delivered-id"])
                mark, end = marks[stream]
                past += last >= mark
                unfinished += last < end
    return past, unfinished, pending


async def test_sigkill_mid_batch_then_reclaim_applies_everything_exactly_once(redis_url, key_prefix, tmp_path):
    settings = make_settings(redis_url, key_prefix, tmp_path, batch_size=500, reclaim_idle_ms=300)
    names = StreamNames.from_settings(settings)
    events = random_events(60_000, seed=3)
    async with open_runtime(settings) as runtime:
        await EventPublisher(runtime).publish(events)

        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "AVAILABILITY_REDIS_URL": redis_url,
            "AVAILABILITY_KEY_PREFIX": key_prefix,
            "AVAILABILITY_DATA_DIR": str(tmp_path / "victim"),
            "AVAILABILITY_DATABASE_URL": settings.database_url,
            "AVAILABILITY_PARTITIONS": str(settings.partitions),
            "AVAILABILITY_BATCH_SIZE": str(settings.batch_size),
        }
        victim = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "consume", "--consumer", "victim"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            marks = await _marks(runtime.redis, names, nth=300)
            while True:
                past, _, pending = await _group_state(runtime.redis, names, marks)
                if past >= 2 and pending > 0:
                    break  # it is in the middle of a batch: delivered, not yet acknowledged
                assert victim.poll() is None, victim.stderr.read().decode()
                assert loop.time() < deadline, "the consumer process never got going"
                await asyncio.sleep(0.005)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()

        _, unfinished, pending = await _group_state(runtime.redis, names, marks)
        assert pending > 0, "the kill should leave a batch pending"
        assert unfinished > 0, "the kill should come before the end"

        async with StreamConsumer(runtime, consumer_name="successor"):
            await wait_drained(runtime.redis, names, timeout=40)
        await assert_ledger_equals_oracle(runtime.ledger, events)
        assert await runtime.redis.xlen(names.dlq) == 0
