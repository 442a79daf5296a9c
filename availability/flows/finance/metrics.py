"""Prometheus metrics of the finance posting flow (labels bounded: reason, outcome, state)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POSTING_LATENCY = Histogram(
    "availability_finance_payout_posting_latency_seconds",
    "From a payout being first seen moving money (polled as IN_TRANSIT, PAID, FAILED or CANCELED) to its "
    "journal entry being posted in the ERP",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
COMPLETENESS = Gauge(
    "availability_finance_posting_completeness",
    "Share of the payouts that move money (not SCHEDULED) whose entry is posted (1.0 = every one)",
)
BACKLOG = Gauge("availability_finance_backlog", "Payouts not posted yet, by state", ["state"])
EXCEPTIONS = Counter("availability_finance_exceptions_total", "Finance exceptions opened, by reason", ["reason"])
ERP_CALLS = Counter(
    "availability_finance_erp_operations_total",
    "ERP operations of the finance flow, by operation (post, confirm, reverse) and outcome", ["operation", "outcome"],
)
TRANSACTIONS = Counter("availability_finance_transactions_posted_total", "Balance transactions posted, by type",
                       ["type"])
