"""Prometheus metrics of ingestion (module level: one set per process, served by GET /metrics).

Labels are bounded on purpose: event type, source system, partition number and a
dead-letter *reason kind*; never a SKU, an event id or free text.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPLIED = Counter(
    "availability_ingest_events_applied_total",
    "Canonical events that changed the ledger (status applied or recorded), by type and source",
    ["type", "source"],
)
EVENTS_BY_STATUS = Counter(
    "availability_ingest_events_total",
    "Every event the consumer handed to the ledger, by ledger status",
    ["status"],
)
DUPLICATES = Counter(
    "availability_ingest_duplicates_total",
    "Events skipped because their event_id was already applied (redelivery, replay, retried source)",
    ["source"],
)
LATE_EVENTS = Counter(
    "availability_ingest_late_events_total",
    "Late or out-of-order events reconciled by the ledger: stale_count, inside_count, released_before",
    ["status", "source"],
)
DEAD_LETTERS = Counter(
    "availability_ingest_dead_letters_total",
    "Entries sent to the dead-letter stream, by reason kind",
    ["reason"],
)
DEAD_LETTERS_NOT_KEPT = Counter(
    "availability_ingest_dead_letters_not_kept_total",
    "Dead letters not kept: beyond an upload's per-request cap (request_cap; reported to the sender as "
    "not_kept) or trimmed, oldest first, by the stream's length cap (stream_maxlen)",
    ["cause"],
)
DEAD_LETTERS_TRUNCATED = Counter(
    "availability_ingest_dead_letters_truncated_total",
    "Dead letters stored with their payload truncated to the per-letter cap (original size recorded)",
)
DEAD_LETTER_CAP_HITS = Counter(
    "availability_ingest_dead_letter_cap_hits_total",
    "Times a dead-letter cap was hit: an upload over its per-request cap (request), a write that trimmed the stream (stream)",
    ["cap"],
)
UNKNOWN_LOCATIONS = Counter(
    "availability_ingest_unknown_location_events_total",
    "Events for a location that master data does not list (still applied; not offered on any configured channel)",
    ["source"],
)
UNKNOWN_SKUS = Counter(
    "availability_ingest_unknown_sku_events_total",
    "Events for a SKU that SKU master data does not list, when master data lists SKUs (still applied)",
    ["source"],
)
BATCH_SIZE = Histogram(
    "availability_ingest_batch_size",
    "Entries per consumed batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
APPLY_SECONDS = Histogram(
    "availability_ingest_apply_seconds",
    "Time to decode, apply (one Redis pipeline) and acknowledge one batch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RECLAIMED = Counter(
    "availability_ingest_reclaimed_total",
    "Pending entries taken over from a consumer that stopped acknowledging (XAUTOCLAIM) or recovered at start",
    ["partition"],
)
LAG = Gauge(
    "availability_ingest_lag",
    "Entries in a partition not yet delivered to the consumer group",
    ["partition"],
)
PENDING = Gauge(
    "availability_ingest_pending",
    "Entries delivered to a consumer but not yet acknowledged",
    ["partition"],
)
PUBLISHED = Counter(
    "availability_ingest_published_total",
    "Canonical events published to the partition streams, by source",
    ["source"],
)
INTAKE_REQUESTS = Counter(
    "availability_ingest_intake_requests_total",
    "HTTP intake requests by endpoint and outcome",
    ["endpoint", "outcome"],
)
WEBHOOKS = Counter(
    "availability_ingest_shopify_webhooks_total",
    "Shopify webhooks by topic and outcome (accepted, duplicate, forged, ignored)",
    ["topic", "outcome"],
)
