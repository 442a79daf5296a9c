"""The simulated shop: catalogue, levels, orders, buckets, idempotency keys, counters.

Thread-safe: the server runs in its own thread (and event loop) while tests inspect and
mutate the state from theirs, so every access goes through one lock. Critical sections
never await. Everything that changes a level returns the webhook bodies of the change,
captured at the moment of the change (Shopify's payloads describe the event, not the
state at delivery time), for :mod:`.webhooks` to deliver.
"""

from __future__ import annotations

import hmac
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from adapters.shopify.gid import GidError, inventory_level_gid, item_gid, location_gid, parse_gid

from .config import (
    ALLOWED_REASONS,
    MAX_QUANTITY,
    ON_HAND_PARTS,
    QUANTITY_NAMES,
    SETTABLE_NAMES,
    URI_RE,
    FaultConfig,
    SimulatorConfig,
)
from ._util import gid, now_iso, user_error
from .cost import LeakyBucket
from .customers import CustomersMixin
from .fulfillment import FulfillmentMixin
from .payments import PaymentsAccount
from .sales import SalesMixin, _Order
from .versions import Features


# ------------------------------------------------------------------------ records


@dataclass
class _Item:
    id: int
    sku: str
    mutable: bool = True
    policy: str = "DENY"  # ProductVariant.inventoryPolicy: DENY | CONTINUE
    created_at: str = field(default_factory=now_iso)


@dataclass
class _Location:
    id: int
    name: str
    active: bool = True


@dataclass
class _Level:
    item_id: int
    location_id: int
    quantities: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUANTITY_NAMES, 0))
    updated_at: str = field(default_factory=now_iso)
    created_at: str = field(default_factory=now_iso)

    def set(self, name: str, value: int) -> int:
        """Set ``available`` or ``on_hand``; keep the on_hand identity. Returns the delta."""
        delta = value - self.quantities[name]
        if delta:
            self.quantities["available"] += delta
            self.quantities["on_hand"] += delta
            self.updated_at = now_iso()
        return delta


class SetRecord(msgspec.Struct, kw_only=True):
    """One applied quantity change, for "never applied twice" style assertions."""

    seq: int
    at: str
    source: str  # "api" | "external" | "seed" | "checkout" | "cancel"
    inventory_item_id: str
    location_id: str
    name: str
    before: int
    after: int
    delta: int
    idempotency_key: str | None = None
    adjustment_group_id: str | None = None


class WebhookDelivery(msgspec.Struct, kw_only=True):
    webhook_id: str
    topic: str
    url: str
    attempts: int
    status: int | None  # last HTTP status, None if no answer
    ok: bool
    body: dict[str, Any]
    error: str | None = None
    event_id: str | None = None
    triggered_at: str | None = None
    first_attempt_at: str | None = None
    duplicate: bool = False


class SimulatorStats(msgspec.Struct, kw_only=True):
    calls: int = 0  # GraphQL requests received with a valid token
    unauthorized: int = 0
    throttled: int = 0
    points_spent: float = 0.0  # sum of actualQueryCost
    min_available: float | None = None  # lowest bucket level ever observed
    max_overdraw: float = 0.0  # how far below 0 any bucket ever went (must stay 0)
    mutations: int = 0  # inventory mutations executed (not replays)
    mutations_rejected: int = 0  # ... of which answered with user errors
    quantities_applied: int = 0  # entries applied by the API
    replays: int = 0
    idempotency_conflicts: int = 0
    queries: int = 0
    graphql_errors: int = 0  # top-level errors other than THROTTLED
    max_cost_exceeded: int = 0
    injected_errors: int = 0
    injected_timeouts: int = 0
    external_changes: int = 0
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    checkouts: int = 0
    checkouts_refused: int = 0
    fulfillments: int = 0
    fulfillments_refused: int = 0
    units_sold: int = 0
    oversold_units: int = 0  # units sold beyond available (CONTINUE policy only)
    cancellations: int = 0
    bulk_operations: int = 0


@dataclass
class _IdempotencyRecord:
    input_hash: str
    state: str  # "in_flight" | "completed" | "failed"
    created: float
    payload: dict[str, Any] | None = None


Event = tuple[str, dict[str, Any]]  # (webhook topic, body)


class SimulatorState(FulfillmentMixin, SalesMixin, CustomersMixin):
    """The simulated shop (see the module docstring)."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.limits = self.config.limits()
        self.costs = self.config.costs()
        self.faults = msgspec.structs.replace(self.config.faults)  # runtime copy
        self.webhook_url = self.config.webhook_url
        self.webhook_secret = self.config.webhook_secret
        self._lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        # Webhook ids and delivery draws have their own stream, so that announcing a change
        # does not shift the fault draws a seed gives the requests.
        self.webhook_rng = random.Random(f"{self.config.seed}/webhooks")
        self._clock = time.monotonic
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.bulk: Any = None
        from .refunds import RefundDesk  # refunds and returns live in their own module

        self.refunds = RefundDesk(self)
        self.reset()
        from .bulk import BulkOperations  # late: bulk imports the GraphQL engine lazily too

        BulkOperations(self)  # sets self.bulk

    def _reset_unlocked(self) -> None:
        self._items: dict[int, _Item] = {}
        self._locations: dict[int, _Location] = {}
        self._levels: dict[tuple[int, int], _Level] = {}
        self._levels_by_item: dict[int, dict[int, _Level]] = {}
        self._orders: dict[int, _Order] = {}
        self._buckets: dict[str, LeakyBucket] = {}
        self._idem: dict[str, _IdempotencyRecord] = {}
        self._history: list[SetRecord] = []
        self._stats = SimulatorStats()
        self._next_item = 40001
        self._next_location = 7001
        self._next_group = 1
        self._next_order = 820001
        self._next_line = 1
        self._order_number = 1001
        self._reset_fulfillments()
        self.payments = PaymentsAccount(currency=self.config.currency)

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # ---- seeding and inspection (tests, demo, /_sim endpoints) --------------------

    @staticmethod
    def _ref(ref: int | str, type_name: str) -> int:
        if isinstance(ref, str) and ref.startswith("gid://"):
            return parse_gid(ref, type_name)[1]
        if isinstance(ref, bool):
            raise GidError(f"not an id: {ref!r}")
        return int(ref)

    def reset(self) -> None:
        """Back to the initial shop: empty, or the configured demo catalogue."""
        with self._lock:
            self._reset_unlocked()
            self.webhook_deliveries.clear()
            self.refunds.reset()
            if self.bulk is not None:
                self.bulk.reset()
            if self.config.catalog_items > 0:
                self.seed_catalog(self.config.catalog_items, self.config.catalog_locations, self.config.catalog_available)

    def add_location(self, name: str | None = None, id: int | None = None, active: bool = True) -> str:
        with self._lock:
            loc_id = int(id) if id is not None else self._next_location
            self._next_location = max(self._next_location, loc_id + 1)
            self._locations[loc_id] = _Location(loc_id, name or f"Location {loc_id}", active)
            return location_gid(loc_id)

    def add_item(self, sku: str, id: int | None = None, mutable: bool = True, policy: str = "DENY") -> str:
        """Add an inventory item; ``policy`` is its variant's inventory policy (``DENY``:
        checkouts stop at 0 available, ``CONTINUE``: keep selling into negative)."""
        if policy not in ("DENY", "CONTINUE"):
            raise ValueError(f"inventory policy is DENY or CONTINUE, not {policy!r}")
        with self._lock:
            item_id = int(id) if id is not None else self._next_item
            self._next_item = max(self._next_item, item_id + 1)
            self._items[item_id] = _Item(item_id, sku, mutable, policy)
            return item_gid(item_id)

    def set_policy(self, item: int | str, policy: str) -> None:
        if policy not in ("DENY", "CONTINUE"):
            raise ValueError(f"inventory policy is DENY or CONTINUE, not {policy!r}")
        with self._lock:
            self._items[self._ref(item, "InventoryItem")].policy = policy

    def stock(self, item: int | str, location: int | str, available: int = 0, **other_quantities: int) -> None:
        """Mark ``item`` stocked at ``location`` with the given quantities (seed, no history)."""
        with self._lock:
            i, loc = self._ref(item, "InventoryItem"), self._ref(location, "Location")
            if i not in self._items:
                raise KeyError(f"unknown item {item!r}")
            if loc not in self._locations:
                raise KeyError(f"unknown location {location!r}")
            level = self._levels.get((i, loc)) or _Level(i, loc)
            for name, value in other_quantities.items():
                if name not in QUANTITY_NAMES or name in ("available", "on_hand"):
                    raise ValueError(f"cannot seed quantity {name!r} directly")
                level.quantities[name] = int(value)
            level.quantities["available"] = int(available)
            level.quantities["on_hand"] = int(available) + sum(level.quantities[p] for p in ON_HAND_PARTS)
            self._levels[(i, loc)] = level
            self._levels_by_item.setdefault(i, {})[loc] = level

    def unstock(self, item: int | str, location: int | str) -> None:
        with self._lock:
            i, loc = self._ref(item, "InventoryItem"), self._ref(location, "Location")
            self._levels.pop((i, loc), None)
            self._levels_by_item.get(i, {}).pop(loc, None)

    def seed_catalog(
        self, n_items: int, n_locations: int = 2, available: int = 10, sku_prefix: str = "SKU-", policy: str = "DENY"
    ) -> tuple[list[str], list[str]]:
        """Create ``n_locations`` locations and ``n_items`` items stocked everywhere."""
        if policy not in ("DENY", "CONTINUE"):
            raise ValueError(f"inventory policy is DENY or CONTINUE, not {policy!r}")
        with self._lock:
            locations = [self.add_location(f"Location {k + 1}") for k in range(n_locations)]
            loc_ids = [parse_gid(g, "Location")[1] for g in locations]
            items = []
            at = now_iso()
            for k in range(n_items):
                # Inlined add_item + stock: seeding 100,000 levels stays quick.
                item_id = self._next_item
                self._next_item += 1
                self._items[item_id] = _Item(item_id, f"{sku_prefix}{k + 1:05d}", True, policy, at)
                by_loc = self._levels_by_item.setdefault(item_id, {})
                for loc in loc_ids:
                    q = dict.fromkeys(QUANTITY_NAMES, 0)
                    q["available"] = q["on_hand"] = int(available)
                    level = self._levels[(item_id, loc)] = by_loc[loc] = _Level(item_id, loc, q, at, at)
                    del level
                items.append(item_gid(item_id))
            return items, locations

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Seed from JSON: ``{"reset": bool, "locations": [{"id"?, "name"?}],
        "items": [{"id"?, "sku", "mutable"?, "inventory_policy"?}], "levels":
        [{"inventory_item_id", "location_id", "available", "committed"?, ...}],
        "catalog": {"items": n, "locations": m, "available": k}}``. Ids may be numbers
        or GIDs."""
        if not isinstance(spec, dict):
            raise ValueError("seed body must be a JSON object")
        out: dict[str, Any] = {"locations": [], "items": [], "levels": 0}
        with self._lock:
            if spec.get("reset"):
                self.reset()
            for loc in spec.get("locations") or []:
                loc_id = None if loc.get("id") is None else self._ref(loc["id"], "Location")
                out["locations"].append(self.add_location(loc.get("name"), loc_id, bool(loc.get("active", True))))
            for it in spec.get("items") or []:
                if not isinstance(it.get("sku"), str):
                    raise ValueError("every item needs a string sku")
                item_id = None if it.get("id") is None else self._ref(it["id"], "InventoryItem")
                out["items"].append(
                    self.add_item(it["sku"], item_id, bool(it.get("mutable", True)), str(it.get("inventory_policy", "DENY")))
                )
            for lv in spec.get("levels") or []:
                extra = {k: v for k, v in lv.items() if k in ON_HAND_PARTS or k == "incoming"}
                self.stock(lv["inventory_item_id"], lv["location_id"], int(lv.get("available", 0)), **extra)
                out["levels"] += 1
            cat = spec.get("catalog")
            if cat:
                items, locs = self.seed_catalog(
                    int(cat.get("items", 10)),
                    int(cat.get("locations", 2)),
                    int(cat.get("available", 10)),
                    str(cat.get("sku_prefix", "SKU-")),
                    str(cat.get("inventory_policy", "DENY")),
                )
                out["items"] += items
                out["locations"] += locs
                out["levels"] += len(items) * len(locs)
        return out

    def available(self, item: int | str, location: int | str) -> int | None:
        """Current ``available`` of a level, None if the item is not stocked there."""
        return self.quantity(item, location, "available")

    def quantity(self, item: int | str, location: int | str, name: str) -> int | None:
        with self._lock:
            level = self._levels.get((self._ref(item, "InventoryItem"), self._ref(location, "Location")))
            return None if level is None else level.quantities[name]

    def levels(self) -> dict[tuple[str, str], int]:
        """``{(item_gid, location_gid): available}`` for every stocked level."""
        with self._lock:
            return {(item_gid(i), location_gid(loc)): lv.quantities["available"] for (i, loc), lv in self._levels.items()}

    def levels_detail(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "inventory_item_id": item_gid(i),
                    "location_id": location_gid(loc),
                    "sku": self._items[i].sku,
                    "location": self._locations[loc].name,
                    "updated_at": lv.updated_at,
                    **lv.quantities,
                }
                for (i, loc), lv in sorted(self._levels.items())
            ]

    def sku_of(self, item: int | str) -> str | None:
        with self._lock:
            it = self._items.get(self._ref(item, "InventoryItem"))
            return None if it is None else it.sku

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot copy of the counters."""
        with self._lock:
            return msgspec.structs.replace(self._stats)

    @property
    def history(self) -> list[SetRecord]:
        with self._lock:
            return list(self._history)

    def history_for(self, item: int | str, location: int | str) -> list[SetRecord]:
        gi = item_gid(self._ref(item, "InventoryItem"))
        gl = location_gid(self._ref(location, "Location"))
        return [r for r in self.history if r.inventory_item_id == gi and r.location_id == gl]

    def applications_by_key(self) -> dict[str, int]:
        """How many times each idempotency key's mutation was *applied* (must be <= 1)."""
        with self._lock:
            groups: dict[str, set[str]] = {}
            for r in self._history:
                if r.idempotency_key is not None and r.adjustment_group_id is not None:
                    groups.setdefault(r.idempotency_key, set()).add(r.adjustment_group_id)
            return {k: len(v) for k, v in groups.items()}

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change fault knobs at runtime; unknown names raise ``ValueError``."""
        with self._lock:
            unknown = set(changes) - set(FaultConfig.__struct_fields__)
            if unknown:
                raise ValueError(f"unknown fault knob(s): {sorted(unknown)}")
            merged = msgspec.to_builtins(self.faults) | changes
            # Round-trip through msgspec to type-check the values.
            self.faults = msgspec.convert(merged, FaultConfig)
            return msgspec.structs.replace(self.faults)

    def configure_webhook(self, url: str | None, secret: str | None = None) -> None:
        with self._lock:
            self.webhook_url = url
            if secret is not None:
                self.webhook_secret = secret

    def bucket_status(self, token: str | None = None) -> dict[str, Any]:
        with self._lock:
            return self._bucket(token or self.config.access_token).status()

    # ---- request-path helpers (called from the app) --------------------------------

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        candidates = [self.config.access_token, *self.config.extra_access_tokens]
        return any(hmac.compare_digest(token.encode(), c.encode()) for c in candidates)

    def now(self) -> float:
        return self._clock()

    def _bucket(self, token: str, at: float | None = None) -> LeakyBucket:
        now = self._clock() if at is None else at
        b = self._buckets.get(token)
        if b is None:
            b = self._buckets[token] = LeakyBucket(self.limits.bucket_size, self.limits.restore_rate, now)
        b.refill(now)
        return b

    def _observe_level(self, value: float) -> None:
        s = self._stats
        s.min_available = value if s.min_available is None else min(s.min_available, value)
        if value < 0:
            s.max_overdraw = max(s.max_overdraw, -value)

    def admit(self, token: str, cost: float, arrived: float | None = None) -> tuple[bool, dict[str, Any]]:
        """Reserve ``cost`` points or refuse (THROTTLED). Returns (admitted, throttleStatus).

        The bucket is judged as it stood when the request ``arrived``: Shopify works on
        requests in parallel, so the time this single process spends parsing a request
        must not refill the bucket for it."""
        with self._lock:
            b = self._bucket(token, arrived)
            forced = self.faults.throttle_all or self.faults.force_throttle > 0
            if self.faults.force_throttle > 0:
                self.faults.force_throttle -= 1
            if forced or cost > b.available:
                self._stats.throttled += 1
                return False, b.status()
            b.available -= cost
            self._observe_level(b.available)
            return True, b.status()

    def settle(self, token: str, requested: float, actual: float) -> dict[str, Any]:
        """Refund the unused part of a reservation; returns the throttleStatus to report."""
        with self._lock:
            b = self._bucket(token)
            b.available = min(b.capacity, b.available + max(0.0, requested - actual))
            self._stats.points_spent += actual
            return b.status()

    def count_call(self, authorized: bool) -> None:
        with self._lock:
            if authorized:
                self._stats.calls += 1
            else:
                self._stats.unauthorized += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)

    def draw_faults(self) -> tuple[int | None, bool, float]:
        """(5xx status to inject or None, hold-the-answer timeout?, processing latency s)."""
        with self._lock:
            f = self.faults
            error = None
            if f.error_rate > 0 and self._rng.random() < f.error_rate and f.error_statuses:
                error = self._rng.choice(f.error_statuses)
            if f.force_error > 0 and f.error_statuses:
                f.force_error -= 1
                error = f.error_statuses[0]
            timeout = f.timeout_rate > 0 and self._rng.random() < f.timeout_rate
            latency = max(0.0, f.latency_ms + (self._rng.uniform(-1, 1) * f.latency_jitter_ms)) / 1000.0
            return error, timeout, latency

    def random_draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def rng_uniform(self, a: float, b: float) -> float:
        with self._lock:
            return self._rng.uniform(a, b)

    # ---- idempotency ------------------------------------------------------------------

    def _expire_keys(self, now: float) -> None:
        ttl = self.config.idempotency_ttl_s
        if len(self._idem) > 1000 and self._rng.random() < 0.01:
            for k in [k for k, r in self._idem.items() if now - r.created > ttl]:
                del self._idem[k]

    def idempotency_begin(
        self, key: str, input_hash: str, features: Features, payload_key: str = "inventoryAdjustmentGroup"
    ) -> dict[str, Any] | None:
        """Claim ``key`` for a new request, or return the payload to answer instead."""
        with self._lock:
            now = self._clock()
            self._expire_keys(now)
            rec = self._idem.get(key)
            if rec is not None and now - rec.created > self.config.idempotency_ttl_s:
                rec = None
            if rec is not None and rec.state == "failed" and not features.previous_attempt_failed:
                # This version has no code to say so: the failed attempt did nothing,
                # so the key is simply claimed again (sim choice, see versions.py).
                rec = None
            if rec is None:
                self._idem[key] = _IdempotencyRecord(input_hash, "in_flight", now)
                return None
            if rec.input_hash != input_hash:
                code, msg = (
                    "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
                    "The same idempotency key cannot be used with different operation parameters.",
                )
            elif rec.state == "in_flight":
                code, msg = "IDEMPOTENCY_CONCURRENT_REQUEST", "This request is currently in progress, please try again."
            elif rec.state == "failed":
                code, msg = (
                    "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
                    "A previous request with this idempotency key failed. Retry with a new idempotency key.",
                )
            else:
                self._stats.replays += 1
                return rec.payload
            self._stats.idempotency_conflicts += 1
            return {payload_key: None, "userErrors": [user_error(code, None, msg)]}

    def idempotency_failed_attempt(self, key: str, input_hash: str) -> None:
        """An attempt that never claimed ``key`` failed (injected 5xx): remember it as
        failed only if nobody else holds or completed the key."""
        with self._lock:
            if key not in self._idem:
                self._idem[key] = _IdempotencyRecord(input_hash, "failed", self._clock())

    def idempotency_fail_claim(self, key: str, input_hash: str) -> None:
        """The request holding the in-flight claim on ``key`` failed."""
        with self._lock:
            rec = self._idem.get(key)
            if rec is not None and rec.state == "in_flight" and rec.input_hash == input_hash:
                rec.state = "failed"

    def idempotency_finish(self, key: str, input_hash: str, payload: dict[str, Any]) -> None:
        with self._lock:
            rec = self._idem.get(key)
            if rec is not None and rec.input_hash == input_hash:
                rec.state = "completed"
                rec.payload = payload

    # ---- inventory mutations -------------------------------------------------------------

    def _resolve_entry(
        self, q: dict[str, Any], path: list[str], errors: list[dict[str, Any]], seen: set[tuple[int, int]] | None
    ) -> _Level | None:
        """Item, location, duplicate, mutability and stocking checks of one entry."""
        item_id = loc_id = None
        try:
            item_id = parse_gid(q["inventoryItemId"], "InventoryItem")[1]
        except GidError:
            pass
        if item_id is None or item_id not in self._items:
            errors.append(user_error("INVALID_INVENTORY_ITEM", [*path, "inventoryItemId"], "The specified inventory item could not be found."))
            item_id = None
        try:
            loc_id = parse_gid(q["locationId"], "Location")[1]
        except GidError:
            pass
        if loc_id is None or loc_id not in self._locations:
            errors.append(user_error("INVALID_LOCATION", [*path, "locationId"], "The specified location could not be found."))
            loc_id = None
        if item_id is None or loc_id is None:
            return None
        if seen is not None:
            if (item_id, loc_id) in seen:
                errors.append(
                    user_error(
                        "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
                        [*path, "locationId"],
                        "The combination of inventoryItemId and locationId must be unique.",
                    )
                )
                return None
            seen.add((item_id, loc_id))
        if not self._items[item_id].mutable:
            errors.append(
                user_error("NON_MUTABLE_INVENTORY_ITEM", [*path, "inventoryItemId"], "The specified inventory item is not allowed to be adjusted via API.")
            )
            return None
        level = self._levels.get((item_id, loc_id))
        if level is None:
            errors.append(
                user_error("ITEM_NOT_STOCKED_AT_LOCATION", [*path, "locationId"], "The specified inventory item is not stocked at the location.")
            )
        return level

    def _check_header(self, inp: dict[str, Any], errors: list[dict[str, Any]], name_code: str) -> None:
        if inp["name"] not in SETTABLE_NAMES:
            errors.append(user_error(name_code, ["input", "name"], "The quantity name must be either 'available' or 'on_hand'."))
        if inp["reason"] not in ALLOWED_REASONS:
            errors.append(user_error("INVALID_REASON", ["input", "reason"], "The specified reason is invalid."))
        ref = inp.get("referenceDocumentUri")
        if ref is not None and not URI_RE.match(ref):
            errors.append(user_error("INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"], "The specified reference document is invalid."))

    def _change_from_check(
        self, q: dict[str, Any], path: list[str], current: int, features: Features, errors: list[dict[str, Any]], ignore_compare: bool
    ) -> bool:
        """Compare-and-set of one entry per the API version's rule; False if it failed."""
        if "changeFromQuantity" in q:
            expected = q["changeFromQuantity"]
            if expected is not None and expected != current:
                errors.append(
                    user_error("CHANGE_FROM_QUANTITY_STALE", [*path, "changeFromQuantity"], "The changeFromQuantity value does not match persisted value.")
                )
                return False
            return True
        if features.change_from_required:
            errors.append(
                user_error(
                    "CHANGE_FROM_QUANTITY_REQUIRED",
                    [*path, "changeFromQuantity"],
                    "changeFromQuantity must be given for each quantity (null to skip the check).",
                )
            )
            return False
        if ignore_compare:
            return True
        expected = q.get("compareQuantity")
        if expected is None:
            errors.append(
                user_error(
                    "COMPARE_QUANTITY_REQUIRED",
                    [*path, "compareQuantity"],
                    "The compareQuantity argument must be given to each quantity or ignored using ignoreCompareQuantity.",
                )
            )
            return False
        if expected != current:
            errors.append(user_error("COMPARE_QUANTITY_STALE", [*path, "compareQuantity"], "The compareQuantity value does not match persisted value."))
            return False
        return True

    def _apply(
        self, plan: list[tuple[_Level, int]], name: str, reason: str, ref: str | None, source: str, idem_key: str | None
    ) -> tuple[dict[str, Any] | None, list[Event]]:
        """Apply (level, new value) pairs as one adjustment group (lock held)."""
        group_id = gid("InventoryAdjustmentGroup", self._next_group)
        self._next_group += 1
        changes: list[dict[str, Any]] = []
        events: list[Event] = []
        at = now_iso()
        for level, target in plan:
            before = level.quantities[name]
            delta = level.set(name, target)
            self._stats.quantities_applied += 1
            self._history.append(
                SetRecord(
                    seq=len(self._history) + 1,
                    at=at,
                    source=source,
                    inventory_item_id=item_gid(level.item_id),
                    location_id=location_gid(level.location_id),
                    name=name,
                    before=before,
                    after=target,
                    delta=delta,
                    idempotency_key=idem_key,
                    adjustment_group_id=group_id,
                )
            )
            if delta:
                events.append(self._level_event(level))
                ref_item, ref_loc = {"id": item_gid(level.item_id)}, {"id": location_gid(level.location_id)}
                # Both names move by the same delta; Shopify lists both.
                for n in (name, "on_hand" if name == "available" else "available"):
                    changes.append(
                        {"name": n, "delta": delta, "quantityAfterChange": level.quantities[n], "item": ref_item, "location": ref_loc}
                    )
        if not changes:
            return None, events
        return {"id": group_id, "createdAt": at, "reason": reason, "referenceDocumentUri": ref, "changes": changes}, events

    def execute_set(self, inp: dict[str, Any], features: Features, idem_key: str | None) -> tuple[dict[str, Any], list[Event]]:
        """Validate and apply ``inventorySetQuantities``: all entries or none.

        Returns the payload and the ``inventory_levels/update`` events of the change."""
        with self._lock:
            self._stats.mutations += 1
            errors: list[dict[str, Any]] = []
            name = inp["name"]
            self._check_header(inp, errors, "INVALID_NAME")
            ignore_compare = bool(inp.get("ignoreCompareQuantity"))
            seen: set[tuple[int, int]] = set()
            plan: list[tuple[_Level, int]] = []
            for i, q in enumerate(inp["quantities"]):
                path = ["input", "quantities", str(i)]
                quantity = q["quantity"]
                if quantity < -MAX_QUANTITY:
                    errors.append(user_error("INVALID_QUANTITY_TOO_LOW", [*path, "quantity"], "The total quantity can't be lower than -1,000,000,000."))
                elif quantity < 0:
                    errors.append(user_error("INVALID_QUANTITY_NEGATIVE", [*path, "quantity"], "The quantity can't be negative."))
                elif quantity > MAX_QUANTITY:
                    errors.append(user_error("INVALID_QUANTITY_TOO_HIGH", [*path, "quantity"], "The total quantity can't be higher than 1,000,000,000."))
                level = self._resolve_entry(q, path, errors, seen)
                if level is None or name not in SETTABLE_NAMES:
                    continue
                if self._change_from_check(q, path, level.quantities[name], features, errors, ignore_compare):
                    plan.append((level, quantity))
            if errors:
                self._stats.mutations_rejected += 1
                return {"inventoryAdjustmentGroup": None, "userErrors": errors}, []
            group, events = self._apply(plan, name, inp["reason"], inp.get("referenceDocumentUri"), "api", idem_key)
            return {"inventoryAdjustmentGroup": group, "userErrors": []}, events

    def execute_adjust(self, inp: dict[str, Any], features: Features, idem_key: str | None) -> tuple[dict[str, Any], list[Event]]:
        """``inventoryAdjustQuantities``: deltas, all or none. Only ``available`` and
        ``on_hand`` are adjustable here (sim subset of Shopify's names)."""
        with self._lock:
            self._stats.mutations += 1
            errors: list[dict[str, Any]] = []
            name = inp["name"]
            self._check_header(inp, errors, "INVALID_QUANTITY_NAME")
            plan: list[tuple[_Level, int]] = []
            for i, c in enumerate(inp["changes"]):
                path = ["input", "changes", str(i)]
                level = self._resolve_entry(c, path, errors, None)
                if level is None or name not in SETTABLE_NAMES:
                    continue
                current = level.quantities[name]
                # Adjustments have no compareQuantity: only changeFromQuantity can check.
                if not self._change_from_check(c, path, current, features, errors, True):
                    continue
                target = current + c["delta"]
                if target > MAX_QUANTITY:
                    errors.append(user_error("INVALID_QUANTITY_TOO_HIGH", [*path, "delta"], "The total quantity can't be higher than 1,000,000,000."))
                elif target < -MAX_QUANTITY:
                    errors.append(user_error("INVALID_QUANTITY_TOO_LOW", [*path, "delta"], "The total quantity can't be lower than -1,000,000,000."))
                else:
                    plan.append((level, target))
            if errors:
                self._stats.mutations_rejected += 1
                return {"inventoryAdjustmentGroup": None, "userErrors": errors}, []
            group, events = self._apply(plan, name, inp["reason"], inp.get("referenceDocumentUri"), "api", idem_key)
            return {"inventoryAdjustmentGroup": group, "userErrors": []}, events

    # ---- reads (called by the GraphQL resolvers and the bulk runner) ----------------------

    def item_node(self, item_id: int) -> dict[str, Any] | None:
        with self._lock:
            it = self._items.get(item_id)
            if it is None:
                return None
            return {
                "__typename": "InventoryItem",
                "id": item_gid(item_id),
                "sku": it.sku,
                "tracked": True,
                "createdAt": it.created_at,
                "updatedAt": it.created_at,
                "_item": item_id,
            }

    def variant_node(self, item_id: int) -> dict[str, Any] | None:
        # The simulator has one variant per inventory item with the same number.
        with self._lock:
            it = self._items.get(item_id)
            if it is None:
                return None
            return {"__typename": "ProductVariant", "id": gid("ProductVariant", item_id), "sku": it.sku, "inventoryPolicy": it.policy, "_item": item_id}

    def location_node(self, loc_id: int) -> dict[str, Any] | None:
        with self._lock:
            loc = self._locations.get(loc_id)
            if loc is None:
                return None
            return {"__typename": "Location", "id": location_gid(loc_id), "name": loc.name, "isActive": loc.active, "_loc": loc_id}

    def _level_node(self, lv: _Level) -> dict[str, Any]:
        return {
            "__typename": "InventoryLevel",
            "id": inventory_level_gid(lv.location_id, lv.item_id),
            "updatedAt": lv.updated_at,
            "createdAt": lv.created_at,
            "_item": lv.item_id,
            "_loc": lv.location_id,
            "_q": dict(lv.quantities),
        }

    def level_node(self, item_id: int, loc_id: int) -> dict[str, Any] | None:
        with self._lock:
            lv = self._levels.get((item_id, loc_id))
            return None if lv is None else self._level_node(lv)

    def item_levels(self, item_id: int) -> list[tuple[int, dict[str, Any]]]:
        """(location id, level node) of one item, by location id."""
        with self._lock:
            by_loc = self._levels_by_item.get(item_id, {})
            return [(loc, self._level_node(lv)) for loc, lv in sorted(by_loc.items())]

    def location_levels(self, loc_id: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(i, self._level_node(lv)) for (i, loc), lv in sorted(self._levels.items()) if loc == loc_id]

    def item_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._items)

    def location_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._locations)

    def order_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._orders)

    def item_id_by_sku(self, sku: str) -> int | None:
        with self._lock:
            for i, it in self._items.items():
                if it.sku == sku:
                    return i
            return None

    # ---- external writer -------------------------------------------------------------------

    def external_change(
        self,
        item: int | str | None = None,
        location: int | str | None = None,
        available: int | None = None,
        delta: int | None = None,
    ) -> tuple[int, int] | None:
        """Change ``available`` of a level as someone else would (admin, another app).

        Picks a random stocked level when item/location are not given and a random
        non-zero delta (within ``external_writer_max_delta``, never below 0) when neither
        ``available`` nor ``delta`` is. Returns the (item, location) changed, or None if
        there is no stocked level. The change's webhook body is :meth:`level_webhook_body`.
        """
        with self._lock:
            if item is not None and location is not None:
                key = (self._ref(item, "InventoryItem"), self._ref(location, "Location"))
                if key not in self._levels:
                    raise KeyError("that item is not stocked at that location")
            else:
                candidates = sorted(
                    k
                    for k in self._levels
                    if (item is None or k[0] == self._ref(item, "InventoryItem"))
                    and (location is None or k[1] == self._ref(location, "Location"))
                )
                if not candidates:
                    return None
                key = self._rng.choice(candidates)
            level = self._levels[key]
            before = level.quantities["available"]
            if available is None:
                if delta is None:
                    span = max(1, self.faults.external_writer_max_delta)
                    delta = 0
                    while delta == 0 or before + delta < 0:
                        delta = self._rng.randint(-span, span)
                        if before == 0 and delta < 0:
                            delta = -delta
                available = max(0, before + delta)
            available = int(available)
            if available < 0:
                raise ValueError("available cannot be negative")
            d = level.set("available", available)
            self._stats.external_changes += 1
            self._record(level, "available", before, available, d, "external")
            return key

    def _record(self, level: _Level, name: str, before: int, after: int, delta: int, source: str) -> None:
        self._history.append(
            SetRecord(
                seq=len(self._history) + 1,
                at=now_iso(),
                source=source,
                inventory_item_id=item_gid(level.item_id),
                location_id=location_gid(level.location_id),
                name=name,
                before=before,
                after=after,
                delta=delta,
            )
        )

    def _level_event(self, level: _Level) -> Event:
        return (
            "inventory_levels/update",
            {
                "inventory_item_id": level.item_id,
                "location_id": level.location_id,
                "available": level.quantities["available"],
                "updated_at": level.updated_at,
                "admin_graphql_api_id": inventory_level_gid(level.location_id, level.item_id),
            },
        )

    def level_webhook_body(self, item_id: int, location_id: int) -> dict[str, Any] | None:
        with self._lock:
            level = self._levels.get((item_id, location_id))
            return None if level is None else self._level_event(level)[1]

    def record_delivery(self, d: WebhookDelivery) -> None:
        with self._lock:
            self.webhook_deliveries.append(d)
            if d.ok:
                self._stats.webhooks_sent += 1
            else:
                self._stats.webhooks_failed += 1
