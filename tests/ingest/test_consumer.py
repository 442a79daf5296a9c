"""The Redis Streams consumer end to end: publish -> FastStream batch consumer -> ledger,
compared with the plain-Python oracle; poison entries; crash recovery by reclaim."""

from __future__ import annotations

import asyncio

import msgspec

from availability.domain.events import encode_event
from availability.ingest.consumer import StreamConsumer
from availability.ingest.deadletters import DeadLetters
from availability.ingest.publisher import EventPublisher, ensure_redis_groups
from availability.ingest.streams import EVENT_FIELD, StreamNames, partition_of
from tests.conftest import differs_on_cluster
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


async def test_a_script_error_dead_letters_the_event_with_its_reason_and_leaves_no_trace(runtime):
    """The real script fails on real Redis (a corrupted stock value written directly): the
    event is dead-lettered with the script's reason, no idempotency record or any other
    write is left, the rest of the batch applies, and a replay after the repair applies it."""
    from availability.ingest.replay import replay_all

    names = StreamNames.from_settings(runtime.settings)
    ledger = runtime.ledger
    await ledger.apply(event("receipt", sku="SKU-X", location="S1", quantity=9, event_id="seed"))
    stock_key = ledger.keys.stock("SKU-X")
    await runtime.redis.hset(stock_key, "DC1", "12,zero,0,0,0,-1")  # a bad hand edit
    journal_before = await ledger.journal_length()
    records_before = await ledger.idempotency_records("SKU-X")

    events = [event("receipt", sku="SKU-X", location="S1", quantity=2, event_id=f"x{i}") for i in range(3)]
    events.insert(1, event("receipt", sku="SKU-X", location="DC1", quantity=100, event_id="boom"))
    async with StreamConsumer(runtime) as consumer:
        await EventPublisher(runtime).publish(events)
        await wait_drained(runtime.redis, consumer.names)

    [letter] = await DeadLetters(runtime.redis, names).list()
    assert (letter.reason, letter.event_id) == ("apply_error", "boom")
    assert letter.detail.startswith("corrupt_stock: SKU-X|DC1 = 12,zero,0,0,0,-1"), letter.detail
    # nothing of `boom` was written: the corrupt value as it was, no record, no journal entry
    assert await runtime.redis.hget(stock_key, "DC1") == b"12,zero,0,0,0,-1"
    assert await ledger.idempotency_records("SKU-X") == records_before + 3
    assert await ledger.journal_length() == journal_before + 3
    assert (await ledger.apply(event("receipt", sku="SKU-X", location="S1", quantity=2, event_id="x0"))).status \
        == "duplicate"

    # Repair the value, replay the dead letter: now it applies, once.
    await runtime.redis.hset(stock_key, "DC1", "12,0,0,0,0,-1")
    publisher = EventPublisher(runtime)
    replayed, kept = await replay_all(runtime, DeadLetters(runtime.redis, names), publisher)
    assert (replayed, kept) == (1, [])
    async with StreamConsumer(runtime) as consumer:
        await wait_drained(runtime.redis, consumer.names)
    stock = await ledger.stock("SKU-X")
    assert stock["DC1"].on_hand == 112 and stock["S1"].on_hand == 15
    again = await ledger.apply(event("receipt", sku="SKU-X", location="DC1", quantity=100, event_id="boom"))
    assert again.status == "duplicate"


@differs_on_cluster("the fast applier speaks RESP to one server; on a cluster the consumer applies through "
                    "Ledger.apply_partitioned, whose refused-event report test_a_script_error_dead_letters... checks")
async def test_the_fast_path_reports_a_refused_event_like_the_ledger(runtime):
    """FastApplier and Ledger.apply_batch both answer status "error" with the reason for the
    refused event only; the events beside it apply."""
    from availability.ingest.fastapply import FastApplier

    ledger = runtime.ledger
    await runtime.redis.hset(ledger.keys.holds("SKU-H"), "ord-1", "H|0|online|DC1=two/0")
    events = [event("receipt", sku="SKU-H", quantity=5, event_id="h1"),
              event("fulfil", sku="SKU-H", quantity=1, reference="ord-1", source="oms", event_id="h2"),
              event("receipt", sku="SKU-H", quantity=5, event_id="h3")]
    applier = FastApplier(ledger, runtime.redis_url, connections=1)
    try:
        results = await applier.apply_batch(events)
    finally:
        await applier.close()
    assert [r.status for r in results] == ["applied", "error", "applied"]
    assert results[1].error.startswith("corrupt_hold: SKU-H ord-1 = H|0|online|DC1=two/0")
    [again] = await ledger.apply_batch([events[1]])
    assert again.status == "error" and again.error == results[1].error
    assert (await ledger.stock("SKU-H"))["DC1"].on_hand == 10


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
