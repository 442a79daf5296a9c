"""The same handler code on NATS JetStream (the local server, skipped when absent) and
on Kafka (FastStream's in-memory TestKafkaBroker: no Kafka server was available)."""

from __future__ import annotations

import logging
import socket

import pytest

from availability.bootstrap import open_runtime
from availability.domain.events import encode_event
from availability.ingest.consumer import StreamConsumer, register_kafka_subscriber
from availability.ingest.deadletters import DeadLetters
from availability.ingest.pipeline import IngestPipeline
from availability.ingest.publisher import EventPublisher
from availability.ingest.streams import StreamNames
from tests.ingest.conftest import (
    SKUS,
    assert_ledger_equals_oracle,
    make_settings,
    random_events,
)

NATS_URL = "nats://127.0.0.1:4222"


def _nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return True
    except OSError:
        return False


async def _until(predicate, timeout: float = 20.0) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.nats
@pytest.mark.skipif(not _nats_reachable(), reason="no NATS JetStream server on 127.0.0.1:4222")
async def test_nats_jetstream_round_trip(redis_url, key_prefix, tmp_path):
    settings = make_settings(redis_url, key_prefix, tmp_path, broker="nats", broker_url=NATS_URL, batch_size=100)
    names = StreamNames.from_settings(settings)
    events = random_events(600, seed=5)
    poison = b'{"event_id": "bad", "quantity": "many"}'
    async with open_runtime(settings) as runtime:
        publisher = EventPublisher(runtime)
        try:
            await publisher.publish(events[:300])
            async with StreamConsumer(runtime) as consumer:
                await publisher.publish(events[300:])
                await publisher.publish_raw([(0, poison)])
                seen = len({(e.sku, e.event_id) for e in events})

                async def all_applied() -> bool:
                    n = 0
                    for sku in SKUS:
                        n += await runtime.ledger.idempotency_records(sku)
                    return n == seen and await runtime.redis.xlen(names.dlq) == 1

                await _until(all_applied, timeout=60)  # generous: CI machines are shared
                assert consumer.reclaimer is None  # JetStream redelivers by itself
            await assert_ledger_equals_oracle(runtime.ledger, events)
            [letter] = await DeadLetters(runtime.redis, names).list()
            assert letter.stream == names.nats_subject(0) and letter.payload == poison
        finally:
            js = publisher._broker.connection.jetstream() if publisher._broker else None
            if js is not None:
                await js.delete_stream(names.nats_stream)
            await publisher.close()


@pytest.mark.nats
@pytest.mark.skipif(not _nats_reachable(), reason="no NATS JetStream server on 127.0.0.1:4222")
async def test_nats_readers_survive_a_stalled_event_loop(redis_url, key_prefix, tmp_path, caplog):
    """A loaded machine stalls the event loop: when that happens right after a batch fetch
    sent its no-wait probe, nats-py 2.16 finds the fetch's deadline passed once the answer
    is handled and raises a bare asyncio.TimeoutError (not its own TimeoutError). FastStream
    0.7.8's pull loop let that escape (its supervisor restarted the loop, dropping the batch
    in hand for JetStream to redeliver after its ack wait, behind newer events). The stalls
    here are real ones (the loop blocked), placed at that moment: right after a probe."""
    import asyncio
    import time

    settings = make_settings(redis_url, key_prefix, tmp_path, broker="nats", broker_url=NATS_URL, batch_size=100)
    names = StreamNames.from_settings(settings)
    events = random_events(200, seed=6)
    async with open_runtime(settings) as runtime:
        publisher = EventPublisher(runtime)
        try:
            await publisher.publish(events[:100])
            async with StreamConsumer(runtime) as consumer:
                connection = consumer._broker.connection
                publish, stalls = connection.publish, []

                async def publish_then_stall(subject, payload=b"", reply="", headers=None):
                    await publish(subject, payload, reply, headers)
                    if subject.startswith("$JS.API.CONSUMER.MSG.NEXT.") and b"no_wait" in payload and len(stalls) < 8:
                        stalls.append(subject)
                        time.sleep(0.6)  # noqa: ASYNC251 - the stall: past the fetch's 0.5 s timeout

                connection.publish = publish_then_stall
                try:
                    await _until(lambda: asyncio.sleep(0, len(stalls) == 8), timeout=60)
                finally:
                    connection.publish = publish
                await publisher.publish(events[100:])
                seen = len({(e.sku, e.event_id) for e in events})

                async def all_applied() -> bool:
                    n = 0
                    for sku in SKUS:
                        n += await runtime.ledger.idempotency_records(sku)
                    return n == seen

                await _until(all_applied, timeout=60)
                # every reader ran throughout: none crashed (and was restarted) on a stall
                assert all(not reader.done() for reader in consumer._nats_readers), consumer._nats_readers
                assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-3000:]
            await assert_ledger_equals_oracle(runtime.ledger, events)
        finally:
            js = publisher._broker.connection.jetstream() if publisher._broker else None
            if js is not None:
                await js.delete_stream(names.nats_stream)
            await publisher.close()


async def test_kafka_handler_with_the_test_broker(runtime):
    from faststream.kafka import KafkaBroker, TestKafkaBroker

    names = StreamNames.from_settings(runtime.settings)
    pipeline = IngestPipeline(runtime.ledger, names, redis=runtime.redis)
    broker = KafkaBroker("127.0.0.1:9092")
    register_kafka_subscriber(broker, names, pipeline, batch_size=100)
    events = random_events(300, seed=9)
    async with TestKafkaBroker(broker) as test_broker:
        # The publisher's Kafka path, on the in-memory broker.
        publisher = EventPublisher(runtime)
        publisher.broker_kind = "kafka"
        publisher._broker = test_broker
        publisher._started = True
        await publisher.publish(events)
        await test_broker.publish(b"{broken", names.kafka_topic)
    await assert_ledger_equals_oracle(runtime.ledger, events)
    [letter] = await DeadLetters(runtime.redis, names).list()
    assert letter.reason == "unparseable" and letter.stream == names.kafka_topic
    assert encode_event(events[0])  # the wire format is the canonical JSON
