"""The Redis Streams consumer end to end: publish -> FastStream batch consumer -> ledger,
compared with the plain-Python oracle; poison entries; crash recovery by reclaim."""

from __future__ import annotations

import asyncio

import msgspec

from availability.domain.events import encode_event
from availability.ingest.consumer import StreamConsumer
from availability.ingest.deadletters import DeadLetters
from availability.ingest.pipeline import Entry, IngestPipeline
from availability.ingest.publisher import EventPublisher, ensure_redis_groups
from availability.ingest.streams import EVENT_FIELD, StreamNames, partition_of
from tests.factories import event
from tests.ingest.conftest import (
    assert_ledger_equals_oracle,
    random_events,
    wait_drained,
)


async def test_published_events_are_applied_once_and_match_the_oracle(runtime):
    events = random_events(3000)
    publisher = EventPublisher(runtime)
    # Half before the consumer exists (the group must start at 0, not at "$"), half while it runs.
    await publisher.publish(events[:1500])
    consumer = StreamConsumer(runtime)
    await consumer.start()
    try:
        await publisher.publish(events[1500:])
        await wait_drained(runtime.redis, consumer.names)
    finally:
        await consumer.stop()
    await assert_ledger_equals_oracle(runtime.ledger, events)
    # The same events again (a source that re-sends everything) change nothing.
    before = await runtime.ledger.stock_many({e.sku for e in events})
    async with StreamConsumer(runtime) as again:
        await publisher.publish(events[:500])
        await wait_drained(runtime.redis, again.names)
    assert await runtime.ledger.stock_many({e.sku for e in events}) == before


async def test_partitioning_keeps_a_sku_on_one_stream(runtime):
    names = StreamNames.from_settings(runtime.settings)
    publisher = EventPublisher(runtime)
    events = [event("receipt", sku="TEE-BLK-M", quantity=1) for _ in range(20)]
    await publisher.publish(events)
    stream = names.for_sku("TEE-BLK-M")
    assert stream == names.partition(partition_of("TEE-BLK-M", 4))
    entries = await runtime.redis.xrange(stream)
    assert [msgspec.json.decode(f[EVENT_FIELD])["event_id"] for _, f in entries] == [e.event_id for e in events]
    assert partition_of("TEE-BLK-M", 4) == partition_of("TEE-BLK-M", 4)  # stable, not hash()-salted


async def test_poison_entries_go_to_the_dlq_and_the_rest_of_the_batch_is_applied(runtime):
    names = StreamNames.from_settings(runtime.settings)
    publisher = EventPublisher(runtime)
    good = [event("receipt", sku="SKU-P", quantity=5, event_id=f"good-{i}") for i in range(10)]
    negative = msgspec.json.encode({**msgspec.to_builtins(event("receipt", sku="SKU-P", event_id="neg")), "quantity": -3})
    missing_type = b'{"event_id": "x1", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z", "sku": "SKU-P", "location": "DC1", "quantity": 1}'
    await publisher.start()
    p = partition_of("SKU-P", names.partitions)
    raw = [encode_event(good[0]), b"{not json", negative, encode_event(good[1]), missing_type, b""]
    raw += [encode_event(e) for e in good[2:]]
    await publisher.publish_raw([(p, payload) for payload in raw])
    # An entry written by someone else without our field is dead-lettered too, not fatal.
    await runtime.redis.xadd(names.partition(p), {"foo": "bar"})

    async with StreamConsumer(runtime) as consumer:
        await wait_drained(runtime.redis, consumer.names)
    assert (await runtime.ledger.stock("SKU-P"))["DC1"].on_hand == 50

    letters = await DeadLetters(runtime.redis, names).list(limit=10)
    by_reason = sorted(letter.reason for letter in letters)
    assert by_reason == ["impossible_quantity", "invalid", "invalid", "unparseable", "unparseable"]
    neg = next(letter for letter in letters if letter.reason == "impossible_quantity")
    assert neg.payload == negative and neg.event_id == "neg" and neg.stream == names.partition(p)
    assert neg.entry_id and neg.at > 0 and "negative" in neg.detail


class _ExplodingLedger:
    """Wraps the real ledger; applying a batch that contains event `boom` raises, as a
    script error on one event would."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.redis = ledger.redis

    async def apply_batch(self, events):
        if any(e.event_id == "boom" for e in events):
            raise RuntimeError("ERR Error running script: boom")
        return await self.ledger.apply_batch(events)


async def test_an_unexpected_error_for_one_event_dead_letters_it_and_applies_the_others(runtime):
    names = StreamNames.from_settings(runtime.settings)
    pipeline = IngestPipeline(_ExplodingLedger(runtime.ledger), names, redis=runtime.redis)
    events = [event("receipt", sku="SKU-X", quantity=2, event_id=f"x{i}") for i in range(3)]
    events.insert(1, event("receipt", sku="SKU-X", quantity=100, event_id="boom"))
    report = await pipeline.process([Entry(f"1-{i}", encode_event(e), "s") for i, e in enumerate(events)])
    assert report.applied == 3
    assert [d.reason for d in report.dead_letters] == ["apply_error"]
    assert (await runtime.ledger.stock("SKU-X"))["DC1"].on_hand == 6
    assert (await DeadLetters(runtime.redis, names).list())[0].event_id == "boom"


async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed_and_applied(redis_url, key_prefix, tmp_path):
    from availability.bootstrap import open_runtime
    from tests.ingest.conftest import make_settings

    settings = make_settings(redis_url, key_prefix, tmp_path, reclaim_idle_ms=300)
    async with open_runtime(settings) as runtime:
        names = StreamNames.from_settings(settings)
        events = random_events(400, seed=11)
        publisher = EventPublisher(runtime)
        await publisher.publish(events)
        # A consumer reads every entry, then dies before acknowledging.
        await ensure_redis_groups(runtime.redis, names)
        for stream in names.all_partitions():
            await runtime.redis.xreadgroup(names.group, "dead-one", {stream: ">"}, count=10_000)
        pending = [(await runtime.redis.xpending(s, names.group))["pending"] for s in names.all_partitions()]
        assert sum(pending) == len(events)

        async with StreamConsumer(runtime, consumer_name="survivor") as consumer:
            await wait_drained(runtime.redis, names, timeout=10)
            assert consumer.reclaimer is not None
        await assert_ledger_equals_oracle(runtime.ledger, events)


async def test_a_restarted_consumer_recovers_its_own_pending_entries_at_start(runtime):
    names = StreamNames.from_settings(runtime.settings)
    events = [event("receipt", sku="SKU-R", quantity=1) for _ in range(30)]
    await EventPublisher(runtime).publish(events)
    stream = names.for_sku("SKU-R")
    await runtime.redis.xreadgroup(names.group, "fixed-name", {stream: ">"}, count=100)
    consumer = StreamConsumer(runtime, consumer_name="fixed-name")
    assert consumer.settings.reclaim_idle_ms == 30_000  # far away: only start-up recovery can do it
    async with consumer:
        await wait_drained(runtime.redis, names, timeout=5)
    assert (await runtime.ledger.stock("SKU-R"))["DC1"].on_hand == 30


async def test_an_entry_delivered_too_often_goes_to_the_dlq(redis_url, key_prefix, tmp_path):
    from availability.bootstrap import open_runtime
    from tests.ingest.conftest import make_settings

    settings = make_settings(redis_url, key_prefix, tmp_path, reclaim_idle_ms=1, max_deliveries=2)
    async with open_runtime(settings) as runtime:
        names = StreamNames.from_settings(settings)
        await EventPublisher(runtime).publish([event("receipt", sku="SKU-K", quantity=1, event_id="kills-consumers")])
        stream = names.for_sku("SKU-K")
        # Three consumers in turn took it and died (each claim counts a delivery).
        await runtime.redis.xreadgroup(names.group, "c1", {stream: ">"}, count=10)
        for name in ("c2", "c3"):
            await asyncio.sleep(0.01)
            await runtime.redis.xautoclaim(stream, names.group, name, 1, start_id="0-0")
        await asyncio.sleep(0.01)
        async with StreamConsumer(runtime, consumer_name="c4"):
            await wait_drained(runtime.redis, names, timeout=5)
        letters = await DeadLetters(runtime.redis, names).list()
        assert [letter.reason for letter in letters] == ["too_many_deliveries"]
        assert (await runtime.ledger.stock("SKU-K")) == {}


async def test_lag_and_pending_are_observed_per_partition(runtime):
    names = StreamNames.from_settings(runtime.settings)
    await EventPublisher(runtime).publish([event("receipt", sku=f"L{i}") for i in range(40)])
    consumer = StreamConsumer(runtime)
    consumer_reclaimer_cls = __import__("availability.ingest.reclaim", fromlist=["Reclaimer"]).Reclaimer
    observer = consumer_reclaimer_cls(runtime.redis, names, consumer.pipeline, "observer")
    await ensure_redis_groups(runtime.redis, names)
    observed = await observer.observe()
    assert sum(lag for lag, _ in observed.values()) == 40
    assert sum(pending for _, pending in observed.values()) == 0


async def test_consumer_service_runs_beside_the_api(runtime, tmp_path):
    """`availability serve` builds the "consumer" service from availability/services.py."""
    from availability.services import build_services

    [service] = build_services(runtime, ["consumer"])
    assert service.name == "consumer"
    await service.start()
    try:
        await EventPublisher(runtime).publish([event("receipt", sku="SKU-S", quantity=4)])
        await wait_drained(runtime.redis, StreamNames.from_settings(runtime.settings))
    finally:
        await service.stop()
    assert (await runtime.ledger.stock("SKU-S"))["DC1"].on_hand == 4
