"""Prometheus metrics of the return-to-refund flow (availability/flows/flowmetrics.py, named
`availability_refunds_*`, plus the stock events it sends)."""

from __future__ import annotations

from prometheus_client import Counter

from availability.flows.flowmetrics import flow_metrics

_m = flow_metrics(
    "refunds",
    latency=("completion_seconds",
             "From Shopify creating a refund (its created_at) to its ERP credit note being posted"),
    # a refund may wait days for its sale: the buckets reach a day
    buckets=(0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0),
    erp_calls="ERP operations of the refund flow, by operation (create, post) and outcome",
    exceptions="Refund/return exceptions opened, by reason",
    backlog="Refunds without a posted credit note (received, awaiting_sale, posted, exception)",
    intake=("webhooks_total", "Refund and return webhooks taken in, by topic and outcome", ["topic", "outcome"]),
)
COMPLETION, ERP_CALLS, EXCEPTIONS, BACKLOG, WEBHOOKS = _m.latency, _m.erp_calls, _m.exceptions, _m.backlog, _m.intake
STOCK_EVENTS = Counter(
    "availability_refunds_stock_events_total",
    "Ledger events sent for refunds and returns (restock, release, damaged/quality hold), by type",
    ["type"],
)
