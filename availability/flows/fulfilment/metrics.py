"""Prometheus metrics of the fulfilment flow (labels bounded: reason, outcome, state, source)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY = Histogram(
    "availability_fulfilment_latency_seconds",
    "From a shipment being received (945 or ERP shipment read) to its Shopify fulfillment existing",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)
SHOPIFY_CALLS = Counter(
    "availability_fulfilment_shopify_operations_total",
    "Shopify calls of the fulfilment flow, by operation (read, create) and outcome",
    ["operation", "outcome"],
)
ERP_CALLS = Counter(
    "availability_fulfilment_erp_operations_total",
    "ERP calls of the fulfilment flow, by operation (read, mark_done) and outcome",
    ["operation", "outcome"],
)
EXCEPTIONS = Counter(
    "availability_fulfilment_exceptions_total", "Fulfilment exceptions opened, by reason", ["reason"]
)
BACKLOG = Gauge(
    "availability_fulfilment_backlog", "Shipments not yet settled (received, posting, fulfilled), by state", ["state"]
)
SHIPMENTS = Counter(
    "availability_fulfilment_shipments_total",
    "Shipments taken in, by source (wms, erp) and outcome (queued, duplicate; for WMS uploads and the drop folder "
    "also not_configured: no fulfilment flow in that process, rejected: the 945 names no readable order)",
    ["source", "outcome"],
)
