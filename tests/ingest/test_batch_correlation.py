"""A consumer batch runs under one correlation id (its log lines carry it): the events'
own when they all share one, else the batch's."""

from __future__ import annotations

import json

from availability.correlation import current_correlation_id
from availability.ingest.pipeline import Entry, IngestPipeline
from availability.ingest.streams import StreamNames


class Recording:
    """The real ledger, noting the correlation id each batch is applied under."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.seen: list[str | None] = []

    async def apply_batch(self, events):
        self.seen.append(current_correlation_id.get())
        return await self.ledger.apply_batch(events)


def _entry(i: int, correlation_id: str | None) -> Entry:
    doc = {"event_id": f"c{i}", "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z",
           "sku": "TEE", "location": "DC1", "quantity": 1}
    if correlation_id:
        doc["correlation_id"] = correlation_id
    return Entry(f"1-{i}", json.dumps(doc).encode(), "s")


async def test_a_batch_carries_its_events_id_or_one_of_its_own(ledger, redis_client, key_prefix):
    applier = Recording(ledger)
    pipeline = IngestPipeline(ledger, StreamNames(key_prefix, 1), redis=redis_client, applier=applier)
    await pipeline.process([_entry(1, "wms-wave-9"), _entry(2, "wms-wave-9")])
    await pipeline.process([_entry(3, "wms-wave-9"), _entry(4, None)])
    token = current_correlation_id.set("consumer-batch-1")
    try:
        await pipeline.process([_entry(5, None)])
    finally:
        current_correlation_id.reset(token)
    shared, mixed, consumers = applier.seen
    assert shared == "wms-wave-9"
    assert mixed and mixed != "wms-wave-9"
    assert consumers == "consumer-batch-1"
    assert current_correlation_id.get() is None  # reset after each batch
