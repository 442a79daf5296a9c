"""Ingest streams carry their partition's hash tag (`{prefix}:events:{pN}`, keys.py), and a
deployment whose streams still have the untagged names (`{prefix}:events:N`) is moved by
`availability ledger migrate-layout`, a real process: what the old consumers had not
finished (never delivered, or delivered and not acknowledged, half-applied) is applied once
by today's consumer, what they acknowledged is not applied again, and nothing starts while an
untagged stream is left."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.crc import key_slot

from availability.bootstrap import open_runtime
from availability.domain.events import decode_event, encode_event
from availability.ingest.consumer import StreamConsumer
from availability.ingest.publisher import EventPublisher
from availability.ingest.streams import EVENT_FIELD, StreamNames, partition_of
from availability.ledger.keys import KeyLayout, LayoutMismatch, legacy_event_stream
from availability.ledger.ledger import Ledger
from tests.ingest.conftest import SKUS, assert_ledger_equals_oracle, make_settings, random_events, wait_drained

REPO = Path(__file__).resolve().parents[2]


async def test_a_partitions_stream_shares_the_slot_of_its_ledger_partition(runtime):
    names = StreamNames.from_settings(runtime.settings)
    keys = runtime.ledger.keys
    assert names.partition(3) == f"{keys.prefix}:events:{{p3}}"
    for sku in SKUS:
        stream = names.for_sku(sku)
        ledger_partition = keys.partition(sku)
        # stream partition N is in the slot of ledger partition N; the SKU's ledger partition
        # is one the stream feeds (4 stream partitions divide the ledger's 64)
        assert key_slot(stream.encode()) == key_slot(keys.tag(partition_of(sku, names.partitions)).encode())
        assert ledger_partition % names.partitions == partition_of(sku, names.partitions)
    await EventPublisher(runtime).publish(random_events(20))
    assert sum([await runtime.redis.xlen(s) for s in names.all_partitions()]) == 20
    assert not await runtime.redis.exists(*(legacy_event_stream(keys.prefix, p) for p in range(names.partitions)))
    assert names.partition_number(names.partition(3)) == 3 == names.partition_number(legacy_event_stream("av", 3))


async def test_untagged_streams_are_moved_by_migrate_layout_and_applied_once(redis_client, redis_url, key_prefix, tmp_path):
    settings = make_settings(redis_url, key_prefix, tmp_path)
    names = StreamNames.from_settings(settings)
    # The previous version: a partitioned ledger (recorded), streams under untagged names.
    old_ledger = Ledger(redis_client, keys=KeyLayout(key_prefix, settings.ledger_partitions))
    await old_ledger.load_scripts()
    await old_ledger.check_layout()
    events = random_events(900, seed=23)
    for e in events:
        await redis_client.xadd(legacy_event_stream(key_prefix, partition_of(e.sku, names.partitions)),
                                {EVENT_FIELD: encode_event(e)})
    acked = pending_applied = pending = 0
    for p in range(names.partitions):
        old = legacy_event_stream(key_prefix, p)
        await redis_client.xgroup_create(old, names.group, id="0")
        # its consumer applied and acknowledged a first batch, applied half of a second and
        # died before acknowledging it; the rest was never delivered
        for size, ack in ((40, True), (30, False)):
            [[_, rows]] = await redis_client.xreadgroup(names.group, "old-consumer", {old: ">"}, count=size)
            batch = [decode_event(fields[EVENT_FIELD]) for _, fields in rows]
            applied = batch if ack else batch[: len(batch) // 2]
            await old_ledger.apply_batch(applied)
            if ack:
                await redis_client.xack(old, names.group, *[i for i, _ in rows])
                acked += len(rows)
            else:
                pending_applied += len(applied)
                pending += len(rows)
    unfinished = len(events) - acked

    with pytest.raises(LayoutMismatch, match="migrate-layout"):  # nothing starts on untagged streams
        async with open_runtime(settings):
            pass

    env = {
        **os.environ, "PYTHONPATH": str(REPO), "AVAILABILITY_REDIS_URL": redis_url, "AVAILABILITY_KEY_PREFIX": key_prefix,
        "AVAILABILITY_DATA_DIR": str(tmp_path / "data"), "AVAILABILITY_DATABASE_URL": settings.database_url,
        "AVAILABILITY_PARTITIONS": str(names.partitions),
    }
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "ledger", "migrate-layout",
                         "--batch", "25"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ledger"] == "partitioned already"
    assert sum(report["event_streams"].values()) == unfinished and len(report["event_streams"]) == names.partitions
    assert pending > pending_applied > 0 and unfinished > pending
    assert not await redis_client.exists(*(legacy_event_stream(key_prefix, p) for p in range(names.partitions)))
    again = await asyncio.to_thread(subprocess.run, run.args, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and json.loads(again.stdout)["event_streams"] == {}, again.stderr

    async with open_runtime(settings) as runtime, StreamConsumer(runtime) as consumer:
        await wait_drained(runtime.redis, consumer.names, timeout=60)
        await assert_ledger_equals_oracle(runtime.ledger, events)

