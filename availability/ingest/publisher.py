"""`EventPublisher`: puts canonical events on the partition streams.

Used by every intake (POST /v1/events, Shopify webhooks, WMS/ERP/POS/OMS uploads, the
drop folder, `availability ingest file`, DLQ replay, the benchmark):

    publisher = EventPublisher(runtime)
    await publisher.publish(events)      # start() is implicit; close() when done

Redis Streams (the default): one pipelined XADD per event, all in one round trip, each
to `{prefix}:events:{pN}`, N = crc32(sku) % partitions. NATS JetStream and Kafka: the FastStream
broker's publish, awaited for the broker's acknowledgement, so `publish()` returning
means the events are durable on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from availability.clusterclient import wait_for_replicas
from availability.domain.events import StockEvent, encode_event
from availability.ingest import metrics
from availability.ingest.streams import EVENT_FIELD, StreamNames, partition_of

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)


async def ensure_redis_groups(redis, names: StreamNames) -> None:
    """Create each partition stream and its consumer group, reading from the start.

    Created at id 0 (not `$`) so that events published before any consumer ever ran are
    consumed too; FastStream's own group creation then finds the group and leaves it.
    """
    pipe = redis.pipeline(transaction=False)
    for stream in names.all_partitions():
        pipe.xgroup_create(stream, names.group, id="0", mkstream=True)
    for reply in await pipe.execute(raise_on_error=False):
        if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
            raise reply


async def ensure_nats_stream(connection, names: StreamNames) -> None:
    """Declare the JetStream stream holding every partition subject (idempotent)."""
    from nats.js.errors import BadRequestError

    js = connection.jetstream()
    try:
        await js.add_stream(name=names.nats_stream, subjects=[names.nats_subjects_wildcard])
    except BadRequestError as exc:
        if "already in use" not in str(exc.description or exc):
            raise


class EventPublisher:
    """Publishes canonical events to the partitioned event streams of `Settings.broker`."""

    def __init__(self, runtime: Runtime) -> None:
        self.settings = runtime.settings
        self.redis = runtime.redis
        self.names = StreamNames.from_settings(runtime.settings)
        self.broker_kind = runtime.settings.broker
        self._broker: Any = None
        self._started = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._started:
                return
            if self.broker_kind == "redis":
                await ensure_redis_groups(self.redis, self.names)
            elif self.broker_kind == "nats":
                from faststream.nats import NatsBroker

                self._broker = NatsBroker(self.settings.broker_url or "nats://127.0.0.1:4222", logger=None)
                await self._broker.connect()
                await ensure_nats_stream(self._broker.connection, self.names)
            elif self.broker_kind == "kafka":
                from faststream.kafka import KafkaBroker

                self._broker = KafkaBroker(self.settings.broker_url or "127.0.0.1:9092", logger=None)
                await self._broker.connect()
            else:  # pragma: no cover - Settings validates the literal
                raise ValueError(f"unknown broker {self.broker_kind!r}")
            self._started = True

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.stop()
            self._broker = None
        self._started = False

    async def __aenter__(self) -> EventPublisher:  # noqa: PYI034
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def publish(self, events: list[StockEvent]) -> int:
        """Publish events (already validated) in order; returns how many were published."""
        if not events:
            return 0
        payloads = [(event.sku, encode_event(event)) for event in events]
        await self.publish_encoded(payloads)
        sources = Tally(event.source for event in events)
        for source, n in sources.items():
            metrics.PUBLISHED.labels(source).inc(n)
        return len(events)

    async def publish_encoded(self, payloads: Sequence[tuple[str, bytes]]) -> None:
        """Publish (sku, canonical JSON) pairs; the SKU picks the partition."""
        parts = self.names.partitions
        await self._send([(partition_of(sku, parts), sku, payload) for sku, payload in payloads])

    async def publish_raw(self, items: Iterable[tuple[int, bytes]]) -> None:
        """Publish raw payloads to given partitions (DLQ replay of bytes that may not parse)."""
        await self._send([(p, None, payload) for p, payload in items])

    async def _send(self, items: list[tuple[int, str | None, bytes]]) -> None:
        if not self._started:
            await self.start()
        if self.broker_kind == "redis":
            pipe = self.redis.pipeline(transaction=False)
            partition = self.names.partition
            for p, _, payload in items:
                pipe.xadd(partition(p), {EVENT_FIELD: payload})
            await pipe.execute()
            # published = on the replicas too, when asked (docs/scaling.md): else a primary
            # that dies right after the XADD takes an acknowledged event with it
            await wait_for_replicas(self.redis, self.settings.redis_wait_replicas,
                                    self.settings.redis_wait_timeout_ms, prefix=self.names.prefix)
        else:
            # Concurrent across partitions, in order within one: a SKU's events must keep
            # their order on the broker, and concurrent publishes may be stored in any order.
            by_partition: dict[int, list[tuple[str | None, bytes]]] = {}
            for p, sku, payload in items:
                by_partition.setdefault(p, []).append((sku, payload))
            await asyncio.gather(*(self._send_in_order(p, rows) for p, rows in by_partition.items()))

    async def _send_in_order(self, p: int, rows: list[tuple[str | None, bytes]]) -> None:
        if self.broker_kind == "nats":
            subject, stream = self.names.nats_subject(p), self.names.nats_stream
            for _, payload in rows:
                await self._broker.publish(payload, subject, stream=stream)
        else:
            # One topic; the key keeps one SKU in one Kafka partition, hence in order.
            topic = self.names.kafka_topic
            for sku, payload in rows:
                await self._broker.publish(payload, topic, key=(sku or str(p)).encode())
