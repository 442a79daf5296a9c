"""Prometheus metrics of the finance posting flow (availability/flows/flowmetrics.py, plus
posting completeness and the transactions posted)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from availability.flows.flowmetrics import flow_metrics

_m = flow_metrics(
    "finance",
    latency=("payout_posting_latency_seconds",
             "From a payout being first seen moving money (polled as IN_TRANSIT, PAID, FAILED or CANCELED) to its "
             "journal entry being posted in the ERP"),
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
    erp_calls="ERP operations of the finance flow, by operation (post, confirm, reverse) and outcome",
    exceptions="Finance exceptions opened, by reason",
    backlog="Payouts not posted yet, by state",
)
POSTING_LATENCY, ERP_CALLS, EXCEPTIONS, BACKLOG = _m.latency, _m.erp_calls, _m.exceptions, _m.backlog
COMPLETENESS = Gauge(
    "availability_finance_posting_completeness",
    "Share of the payouts that move money (not SCHEDULED) whose entry is posted (1.0 = every one)",
)
TRANSACTIONS = Counter("availability_finance_transactions_posted_total", "Balance transactions posted, by type",
                       ["type"])
