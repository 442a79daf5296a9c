"""Configuration of the simulated shop: plans, the cost model, fault and sales knobs."""

from __future__ import annotations

import re

import msgspec

MAX_INPUT_ARRAY = 250  # Shopify caps every array input (and connection page) at 250
MAX_QUANTITY = 1_000_000_000
SETTABLE_NAMES = ("available", "on_hand")
QUANTITY_NAMES = (
    "available",
    "on_hand",
    "committed",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
    "incoming",
)
# Components of on_hand besides "available" (incoming is not on hand).
ON_HAND_PARTS = ("committed", "reserved", "damaged", "safety_stock", "quality_control")
ALLOWED_REASONS = frozenset(
    {
        "correction",
        "cycle_count_available",
        "damaged",
        "movement_created",
        "movement_updated",
        "movement_received",
        "movement_canceled",
        "other",
        "promotion",
        "quality_control",
        "received",
        "reservation_created",
        "reservation_deleted",
        "reservation_updated",
        "restock",
        "safety_stock",
        "shrinkage",
    }
)
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
VERSION_RE = re.compile(r"^(?:\d{4}-\d{2}|unstable)$")


class PlanLimits(msgspec.Struct, frozen=True):
    restore_rate: float
    bucket_size: float


PLANS: dict[str, PlanLimits] = {
    "standard": PlanLimits(100.0, 2000.0),
    "advanced": PlanLimits(200.0, 4000.0),
    "plus": PlanLimits(1000.0, 20000.0),
    "enterprise": PlanLimits(2000.0, 40000.0),
}


class CostModel(msgspec.Struct, frozen=True, kw_only=True):
    """Points charged per request. Shopify documents objects 1, scalars 0, connections
    2 + first x node and "about 10" for a mutation; the exact price of an inventory
    mutation with many entries is not published, hence ``mutation_entry_cost``."""

    mutation_cost: float = 10.0  # per mutation root field
    mutation_entry_cost: float = 0.0  # per entry of ``quantities`` / ``changes``
    bulk_mutation_cost: float = 10.0  # bulkOperationRun*, stagedUploadsCreate: cheap
    bucket_factor: float = 1.0  # multiplies the plan's bucket size
    restore_factor: float = 1.0  # multiplies the plan's restore rate


#: ``documented`` follows shopify.dev (flat 10 per mutation, plan bucket and rate);
#: ``pessimistic`` charges 1 point per entry on top and halves bucket and restore rate,
#: to see how the push behaves if Shopify's real price is higher than documented.
COST_MODELS: dict[str, CostModel] = {
    "documented": CostModel(),
    "pessimistic": CostModel(mutation_entry_cost=1.0, bucket_factor=0.5, restore_factor=0.5),
}


class FaultConfig(msgspec.Struct, kw_only=True):
    """Fault and traffic knobs; all off by default. Changeable at runtime
    (``POST /_sim/faults``)."""

    error_rate: float = 0.0
    error_statuses: list[int] = msgspec.field(default_factory=lambda: [500, 502, 503])
    error_marks_key_failed: bool = True
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 30.0
    force_throttle: int = 0
    # The next N requests answer with the first of error_statuses, whatever error_rate
    # draws: a test that must see a 5xx does not depend on how the draws fall.
    force_error: int = 0
    throttle_all: bool = False
    external_writer_interval_s: float = 0.0
    external_writer_max_delta: int = 5
    # Webhook delivery: every delivery waits delay + uniform(0, jitter); with
    # probability reorder_rate it waits reorder_hold_ms more, so later ones overtake it;
    # with probability duplicate_rate it is delivered a second time (same ids).
    webhook_duplicate_rate: float = 0.0
    webhook_delay_ms: float = 0.0
    webhook_delay_jitter_ms: float = 0.0
    webhook_reorder_rate: float = 0.0
    webhook_reorder_hold_ms: float = 200.0
    # Background shoppers: checkouts per second (0 = off), each of 1..max units of
    # one random stocked item.
    buyer_rate_per_s: float = 0.0
    buyer_max_quantity: int = 1


class SimulatorConfig(msgspec.Struct, kw_only=True):
    """Everything the simulator needs; every field has a usable default."""

    access_token: str = "shpat_simulator"
    extra_access_tokens: list[str] = []
    plan: str = "standard"
    cost_model: str = "documented"
    restore_rate: float | None = None  # overrides the plan (and the cost model's factor)
    bucket_size: float | None = None  # overrides the plan (and the cost model's factor)
    mutation_entry_cost: float | None = None  # overrides the cost model
    max_query_cost: int = 1000
    throttle_http_status: int = 200
    shop_domain: str = "availability-sim.myshopify.com"
    #: the shop's currency (Shopify's `shop.currencyCode`): orders' `currency` and shop money,
    #: refunds' `shopMoney`, and the Shopify Payments account's (payouts settle in it);
    #: a checkout may present the order in another currency (`presentment`)
    currency: str = "USD"
    api_version: str = "2026-04"  # announced in webhook headers; the URL decides per request
    webhook_url: str | None = None
    webhook_secret: str = "shpss_simulator_secret"
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 3
    webhook_retry_backoff_s: float = 0.2
    echo_api_writes: bool = True
    idempotency_ttl_s: float = 86400.0
    seed: int = 0
    # Demo catalogue created at start (and on reset): N items stocked at M locations.
    catalog_items: int = 0
    catalog_locations: int = 2
    catalog_available: int = 10
    # Bulk operations: seconds in CREATED before RUNNING (Shopify queues them).
    bulk_start_delay_s: float = 0.05
    faults: FaultConfig = msgspec.field(default_factory=FaultConfig)

    def costs(self) -> CostModel:
        try:
            model = COST_MODELS[self.cost_model]
        except KeyError:
            raise ValueError(f"unknown cost model {self.cost_model!r}; one of {sorted(COST_MODELS)}") from None
        if self.mutation_entry_cost is not None:
            model = msgspec.structs.replace(model, mutation_entry_cost=float(self.mutation_entry_cost))
        return model

    def limits(self) -> PlanLimits:
        try:
            base = PLANS[self.plan]
        except KeyError:
            raise ValueError(f"unknown plan {self.plan!r}; one of {sorted(PLANS)}") from None
        model = self.costs()
        return PlanLimits(
            restore_rate=float(self.restore_rate if self.restore_rate is not None else base.restore_rate * model.restore_factor),
            bucket_size=float(self.bucket_size if self.bucket_size is not None else base.bucket_size * model.bucket_factor),
        )
