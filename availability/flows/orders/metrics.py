"""Prometheus metrics of the order-to-ERP flow (labels bounded: reason, outcome, state)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POSTING_LATENCY = Histogram(
    "availability_orders_posting_latency_seconds",
    "From an order's first webhook being received to its ERP sale being confirmed",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)
ERP_CALLS = Counter(
    "availability_orders_erp_operations_total",
    "ERP operations of the order flow, by operation (create, update, confirm, cancel) and outcome",
    ["operation", "outcome"],
)
EXCEPTIONS = Counter(
    "availability_orders_exceptions_total", "Order exceptions opened, by reason", ["reason"]
)
BACKLOG = Gauge(
    "availability_orders_backlog", "Orders not yet settled in the ERP (received, posted, awaiting order), by state",
    ["state"],
)
WEBHOOKS = Counter(
    "availability_orders_webhooks_total", "Order webhooks taken in, by topic and outcome (queued, duplicate)",
    ["topic", "outcome"],
)
