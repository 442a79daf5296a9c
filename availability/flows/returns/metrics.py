"""Prometheus metrics of the return-to-refund flow (labels bounded: reason, outcome, state, type)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMPLETION = Histogram(
    "availability_refunds_completion_seconds",
    "From Shopify creating a refund (its created_at) to its ERP credit note being posted",
    buckets=(0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0),
)
ERP_CALLS = Counter(
    "availability_refunds_erp_operations_total",
    "ERP operations of the refund flow, by operation (create, post) and outcome",
    ["operation", "outcome"],
)
EXCEPTIONS = Counter("availability_refunds_exceptions_total", "Refund/return exceptions opened, by reason", ["reason"])
BACKLOG = Gauge(
    "availability_refunds_backlog", "Refunds without a posted credit note (received, awaiting_sale, posted, exception)",
    ["state"],
)
WEBHOOKS = Counter(
    "availability_refunds_webhooks_total", "Refund and return webhooks taken in, by topic and outcome",
    ["topic", "outcome"],
)
STOCK_EVENTS = Counter(
    "availability_refunds_stock_events_total",
    "Ledger events sent for refunds and returns (restock, release, damaged/quality hold), by type",
    ["type"],
)
