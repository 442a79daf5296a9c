"""Where canonical events travel: stream names, partitioning, dead letters.

Events are partitioned by SKU so that one SKU's events stay in order in one partition
and partitions spread across consumers. The hash is CRC-32 of the UTF-8 SKU modulo the
partition count: stable across processes, machines and Python versions (unlike `hash()`).

    Redis   {prefix}:events:{pN}    one stream per partition, consumer group `consumer_group`; the
                                    hash tag is ledger partition N's (availability/ledger/keys.py,
                                    the one layout module), so on Redis Cluster the stream sits in
                                    the slot of the SKUs' keys it feeds
            {prefix}:dlq            dead letters (reason, original payload, source, entry id)
            {prefix}:shopify:levels Shopify inventory_levels/update webhooks (drift repair)
    NATS    {prefix}.events.{p}     subjects of the JetStream stream `{prefix}-events`
    Kafka   {prefix}.events         one topic, keyed by SKU (Kafka's partitioner keeps a SKU in one partition)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgspec

from availability.config import Settings
from availability.ledger.keys import event_stream, event_stream_partition

#: stream entry field holding the canonical event JSON
EVENT_FIELD = b"event"


_FASTSTREAM_DATA = b"__data__"


def entry_payload(fields: dict[bytes, bytes]) -> bytes:
    """The event bytes of a Redis stream entry: ours (`event`), a FastStream envelope
    (`__data__`, when someone published with `broker.publish`), or else the raw fields as
    JSON so that the dead letter shows what was there."""
    payload = fields.get(EVENT_FIELD)
    if payload is not None:
        return payload
    if _FASTSTREAM_DATA in fields:
        from faststream.redis.parser.binary import BinaryMessageFormatV1

        body, _headers = BinaryMessageFormatV1.parse(fields[_FASTSTREAM_DATA])
        return body
    return msgspec.json.encode({k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()})


def partition_of(sku: str, partitions: int) -> int:
    return zlib.crc32(sku.encode()) % partitions


@dataclass(frozen=True)
class StreamNames:
    prefix: str
    partitions: int
    group: str = "ledger"

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamNames:
        return cls(settings.key_prefix, settings.partitions, settings.consumer_group)

    def partition(self, p: int) -> str:
        return event_stream(self.prefix, p)

    def for_sku(self, sku: str) -> str:
        return self.partition(partition_of(sku, self.partitions))

    def all_partitions(self) -> list[str]:
        return [self.partition(p) for p in range(self.partitions)]

    def partition_number(self, stream: str) -> int | None:
        """The partition of a stream/subject name of ours (a Redis stream's tagged or legacy
        name, a NATS subject), or None."""
        found = event_stream_partition(stream)
        if found is not None:
            return found
        _, dot, tail = stream.rpartition(".events.")
        return int(tail) if dot and tail.isdigit() else None

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    def webhook_seen(self, webhook_id: str) -> str:
        return f"{self.prefix}:webhook-seen:{webhook_id}"

    # --- NATS JetStream ---------------------------------------------------------------------

    @property
    def nats_stream(self) -> str:
        return f"{self.prefix}-events"

    def nats_subject(self, p: int) -> str:
        return f"{self.prefix}.events.{p}"

    @property
    def nats_subjects_wildcard(self) -> str:
        return f"{self.prefix}.events.*"

    # --- Kafka ------------------------------------------------------------------------------

    @property
    def kafka_topic(self) -> str:
        return f"{self.prefix}.events"
