"""Prometheus metrics of the sync flows (module level: one set per process, served by
GET /metrics with everything else in the default registry).

Labels are bounded: flow name, operation, outcome, repair source, dead-letter reason
(Shopify's user error codes, a closed list). Never a SKU, a GID or an idempotency key.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from adapters.shopify.client import QueryCost

# --- shared flow machinery -------------------------------------------------------------------

FLOW_RETRIES = Counter(
    "availability_flow_retries_total",
    "Requests to a peer retried after a transient failure (same idempotency key), by flow and kind",
    ["flow", "kind"],
)
FLOW_DEAD_LETTERS = Counter(
    "availability_flow_dead_letters_total",
    "Work sent to a flow's dead-letter list, by flow and reason",
    ["flow", "reason"],
)
FLOW_DLQ_SIZE = Gauge("availability_flow_dlq_size", "Entries in a flow's dead-letter list", ["flow"])
FLOW_OUTBOX_RECOVERED = Counter(
    "availability_flow_outbox_recovered_total",
    "Outbox messages resent (same key and payload) after their worker stopped renewing them",
    ["flow"],
)
FLOW_GAVE_UP = Counter(
    "availability_flow_gave_up_total",
    "Requests whose transient failures outlasted the retry budget (the work is marked again)",
    ["flow"],
)

# --- Shopify inventory push --------------------------------------------------------------------

PUSH_LAG = Histogram(
    "availability_shopify_push_lag_seconds",
    "From a (SKU, location) first becoming dirty to Shopify confirming the value (or it proving unchanged)",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
CALLS = Counter(
    "availability_shopify_calls_total",
    "GraphQL calls made by the push, by operation (set, read) and outcome",
    ["operation", "outcome"],
)
QUANTITIES_PUSHED = Counter(
    "availability_shopify_quantities_pushed_total", "Quantities Shopify confirmed (entries of successful sets)"
)
QUANTITIES_UNCHANGED = Counter(
    "availability_shopify_quantities_unchanged_total",
    "Recomputed values equal to what Shopify already holds (no call needed)",
)
MARKS_CLAIMED = Counter(
    "availability_shopify_marks_claimed_total", "Dirty (SKU, location) marks claimed, by path", ["path"]
)
COALESCING_RATIO = Gauge(
    "availability_shopify_coalescing_ratio",
    "Marks claimed per quantity pushed since start (how many ledger changes one push carries)",
)
POINTS_USED = Counter("availability_shopify_points_used_total", "Shopify cost points actually used (actualQueryCost)")
POINTS_AVAILABLE = Gauge(
    "availability_shopify_points_available", "Points in Shopify's bucket as last reported (throttleStatus)"
)
THROTTLED = Counter("availability_shopify_throttled_total", "Calls Shopify answered THROTTLED")
STALE = Counter(
    "availability_shopify_stale_total",
    "Compare-and-set entries Shopify rejected as stale (someone changed the level): re-read, recomputed, pushed again",
)
DRIFT_DETECTED = Counter(
    "availability_shopify_drift_detected_total",
    "Levels found different from ATS outside our own pushes, by source (webhook, periodic, resync)",
    ["source"],
)
DRIFT_REPAIRED = Counter(
    "availability_shopify_drift_repaired_total", "Drifted levels set back to ATS, by source", ["source"]
)
SALES_HELD = Counter(
    "availability_shopify_sales_held_total",
    "Units held against a Shopify level: drops of available our pushes do not explain (Shopify's own sales in flight)",
)
SALES_SETTLED = Counter(
    "availability_shopify_sales_settled_total",
    "Held units released, by how (order: its ledger event applied; external: judged not a sale after the window)",
    ["how"],
)
EXTERNAL_EDITS = Counter(
    "availability_shopify_external_edits_total",
    "External changes of available (admin edits, other apps), by direction and what was done (revert, adopt)",
    ["direction", "policy"],
)
UNMAPPED_SKUS = Gauge(
    "availability_shopify_unmapped_skus", "SKUs with stock changes but no Shopify InventoryItem mapping"
)
UNMAPPED_MARKS = Counter(
    "availability_shopify_unmapped_marks_total", "Dirty marks dropped because their SKU has no Shopify mapping"
)
PARKED_SKIPPED = Counter(
    "availability_shopify_parked_skipped_total",
    "Levels not pushed because an earlier push of theirs is dead-lettered (until replayed)",
)
DLQ_SIZE = Gauge("availability_shopify_dlq_size", "Entries in the Shopify push dead-letter list")
PENDING_MARKS = Gauge("availability_shopify_pending_marks", "Dirty marks waiting for the publisher")

FLOW = "shopify.inventory"


def observe_cost(cost: QueryCost) -> None:
    """`ShopifyAdminClient(on_cost=...)`: points used and the bucket as Shopify reports it."""
    if cost.actual:
        POINTS_USED.inc(cost.actual)
    if cost.throttle_status is not None:
        POINTS_AVAILABLE.set(cost.throttle_status.currently_available)
