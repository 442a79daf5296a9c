"""Prometheus metrics of the order-to-ERP flow (availability/flows/flowmetrics.py)."""

from __future__ import annotations

from availability.flows.flowmetrics import flow_metrics

_m = flow_metrics(
    "orders",
    latency=("posting_latency_seconds",
             "From an order's first webhook being received to its ERP sale being confirmed"),
    erp_calls="ERP operations of the order flow, by operation (create, update, confirm, cancel) and outcome",
    exceptions="Order exceptions opened, by reason",
    backlog="Orders not yet settled in the ERP (received, posted, awaiting order), by state",
    intake=("webhooks_total", "Order webhooks taken in, by topic and outcome (queued, duplicate)", ["topic", "outcome"]),
)
POSTING_LATENCY, ERP_CALLS, EXCEPTIONS, BACKLOG = _m.latency, _m.erp_calls, _m.exceptions, _m.backlog
WEBHOOKS = _m.intake
