"""Prometheus metrics of the fulfilment flow (availability/flows/flowmetrics.py, plus its
Shopify calls)."""

from __future__ import annotations

from prometheus_client import Counter

from availability.flows.flowmetrics import flow_metrics

_m = flow_metrics(
    "fulfilment",
    latency=("latency_seconds",
             "From a shipment being received (945 or ERP shipment read) to its Shopify fulfillment existing"),
    erp_calls="ERP calls of the fulfilment flow, by operation (read, mark_done) and outcome",
    exceptions="Fulfilment exceptions opened, by reason",
    backlog="Shipments not yet settled (received, posting, fulfilled), by state",
    intake=("shipments_total",
            "Shipments taken in, by source (wms, erp) and outcome (queued, duplicate; for WMS uploads and the drop "
            "folder also not_configured: no fulfilment flow in that process, rejected: the 945 names no readable order)",
            ["source", "outcome"]),
)
LATENCY, ERP_CALLS, EXCEPTIONS, BACKLOG, SHIPMENTS = _m.latency, _m.erp_calls, _m.exceptions, _m.backlog, _m.intake
SHOPIFY_CALLS = Counter(
    "availability_fulfilment_shopify_operations_total",
    "Shopify calls of the fulfilment flow, by operation (read, create) and outcome",
    ["operation", "outcome"],
)
