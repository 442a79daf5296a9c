"""Async client for the Shopify GraphQL Admin API, as the inventory publisher uses it.

It works unchanged against real Shopify and against :mod:`adapters.shopify.simulator`.

What it does
------------
* :meth:`ShopifyAdminClient.set_available` sends ``inventorySetQuantities`` (name
  ``available``) with compare-and-set per entry, spelled for the configured API version
  as Shopify defines them: ``changeFromQuantity`` (number, or ``null`` to skip the check)
  from 2026-01, ``compareQuantity`` + ``ignoreCompareQuantity`` before; the
  ``@idempotent(key:)`` directive from 2026-01 (the version that introduced it; it is
  mandatory for inventory mutations from 2026-04). Before 2026-01 there is no directive:
  the key still names the call in ``referenceDocumentUri``, and a retried call that was
  applied is caught by compare-and-set instead (it comes back stale, the read-back shows
  our own value). At most 250 entries per call (``ValueError`` above).
* :meth:`ShopifyAdminClient.read_levels` reads ``available`` per (item, location) for many
  items: ``nodes(ids:)`` with each item's first page of ``inventoryLevels`` (batches sized
  so the requested cost stays under the 1,000-point cap), then ``inventoryItem(id:)`` for
  items with more levels than one page.
* :meth:`list_locations` and :meth:`find_inventory_items` map names/SKUs to GIDs.

Outcomes
--------
Every answer's ``extensions.cost`` is parsed into :class:`QueryCost` (with
:class:`ThrottleStatus`) and kept as ``client.last_cost``; an optional ``on_cost``
callback sees each one (metrics). Failures are typed so the caller can decide:

* :class:`ShopifyThrottled` - THROTTLED answer (HTTP 200 or 429); carries the throttle
  status and how long until the requested cost is available. Subclass of
  :class:`ShopifyTransientError`, so "retry later" handling catches both.
* :class:`ShopifyTransientError` - 5xx, 429 without a throttle body, timeouts, connection
  errors, unparseable answers, GraphQL ``INTERNAL_SERVER_ERROR``. Whether a timed-out
  mutation was applied is unknown: retry with the *same* idempotency key.
* :class:`ShopifyAuthError` - 401/403: wrong token or missing scope. Not retryable.
* :class:`ShopifyRequestError` - the request itself is wrong (GraphQL errors such as
  ``MAX_COST_EXCEEDED``, bad variables, unknown API version). Not retryable as is.
* User errors of the mutation are *results*, not exceptions: :class:`SetResult` lists them
  (code, field, message) with the indexes of stale entries in ``stale_indexes``, parsed
  from ``field`` such as ``["input", "quantities", "3", "changeFromQuantity"]``. Shopify
  applies nothing when any user error occurs.

Pacing
------
:class:`ThrottleGovernor` keeps the client from hitting the wall rather than backing off
after it: before each call it waits until the leaky bucket, as last reported by
``throttleStatus`` and refilled at ``restoreRate`` since, holds the call's estimated
cost plus a reserve margin. :func:`pacing_delay` is the pure arithmetic.

A mutation's estimated cost follows what the shop reports: :class:`MutationCostEstimate`
starts at the documented flat 10 points and, from each answer's ``requestedQueryCost``
(also present on THROTTLED answers), learns a base and a per-entry price. Shopify does not
publish the price of a many-entry ``inventorySetQuantities``; a shop that charges per entry
would otherwise be under-estimated and paced into its wall.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx
import msgspec

from adapters.shopify.gid import GidError, item_gid, location_gid, parse_gid

__all__ = [
    "DEFAULT_API_VERSION",
    "MAX_ENTRIES_PER_CALL",
    "ClientStats",
    "GraphQLResponse",
    "LevelsReadResult",
    "MutationCostEstimate",
    "QuantityChange",
    "QueryCost",
    "SetQuantity",
    "SetResult",
    "ShopifyAdminClient",
    "ShopifyAuthError",
    "ShopifyError",
    "ShopifyInventoryItem",
    "ShopifyLocation",
    "ShopifyRequestError",
    "ShopifyThrottled",
    "ShopifyTransientError",
    "ThrottleGovernor",
    "ThrottleStatus",
    "UserError",
    "estimate_available",
    "item_gid",
    "location_gid",
    "pacing_delay",
    "parse_gid",
]

DEFAULT_API_VERSION = "2026-04"
MAX_ENTRIES_PER_CALL = 250
MAX_QUERY_COST = 1000
MUTATION_COST = 10.0
# Client-side cost estimate of one inventory level node (level + location + quantities);
# the same model the simulator documents. Only used to size batches and to pace.
LEVEL_NODE_COST = 3
STALE_CODES = frozenset({"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"})
_CHANGE_FROM_SINCE = (2026, 1)
#: the @idempotent directive exists from this version (mandatory for inventory mutations from 2026-04)
_IDEMPOTENT_SINCE = (2026, 1)
_KEY_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,255}$")
_VERSION_RE = re.compile(r"^(?:\d{4}-\d{2}|unstable)$")


def _version_key(version: str) -> tuple[int, int]:
    if version == "unstable":
        return (9999, 99)
    year, month = version.split("-")
    return (int(year), int(month))


# ----------------------------------------------------------------------------- results


class ThrottleStatus(msgspec.Struct, frozen=True):
    """``extensions.cost.throttleStatus``: the bucket as Shopify saw it."""

    maximum_available: float
    currently_available: float
    restore_rate: float


class QueryCost(msgspec.Struct, frozen=True):
    """``extensions.cost``; ``actual`` is None for throttled or rejected queries."""

    requested: float | None = None
    actual: float | None = None
    throttle_status: ThrottleStatus | None = None


class GraphQLResponse(msgspec.Struct, frozen=True):
    data: dict[str, Any]
    cost: QueryCost


class SetQuantity(msgspec.Struct, frozen=True):
    """One entry of a set: the absolute ``quantity`` to set and the value we believe is
    there now (``compare_quantity``; None = skip the check)."""

    inventory_item_id: str
    location_id: str
    quantity: int
    compare_quantity: int | None = None


class UserError(msgspec.Struct, frozen=True):
    code: str | None
    field: list[str] | None
    message: str

    @property
    def entry_index(self) -> int | None:
        """Index into the ``quantities`` sent, when the error names one entry."""
        f = self.field
        if f and len(f) >= 3 and f[0] == "input" and f[1] == "quantities" and str(f[2]).isdigit():
            return int(f[2])
        return None


class QuantityChange(msgspec.Struct, frozen=True):
    name: str
    delta: int
    quantity_after_change: int | None
    inventory_item_id: str | None
    location_id: str | None


class SetResult(msgspec.Struct, frozen=True):
    """Outcome of one ``inventorySetQuantities`` call that Shopify answered.

    ``ok`` is True when there are no user errors (then everything was applied; an
    ``adjustment_group_id`` of None means nothing needed to change). When ``ok`` is False
    nothing was applied; ``stale_indexes`` names the entries whose compare value was
    stale, so the caller can re-read those and retry the rest.
    """

    idempotency_key: str
    ok: bool
    adjustment_group_id: str | None
    changes: list[QuantityChange]
    user_errors: list[UserError]
    stale_indexes: list[int]
    cost: QueryCost

    @property
    def codes(self) -> set[str]:
        return {e.code for e in self.user_errors if e.code}

    @property
    def retry_with_new_key(self) -> bool:
        """Shopify says the earlier attempt under this key failed: use a new key."""
        return "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" in self.codes

    @property
    def in_progress(self) -> bool:
        """The same key is still being processed: retry the same key a little later."""
        return "IDEMPOTENCY_CONCURRENT_REQUEST" in self.codes


class LevelsReadResult(msgspec.Struct, frozen=True):
    #: ``available`` per (item GID, location GID)
    levels: dict[tuple[str, str], int]
    missing_items: list[str]
    calls: int
    points: float
    #: ``committed`` per (item GID, location GID): units of unfulfilled orders, which
    #: tells Shopify's own sales from other drops of ``available`` (flows/inventory/sales.py)
    committed: dict[tuple[str, str], int] = {}


class ShopifyLocation(msgspec.Struct, frozen=True):
    id: str
    name: str
    is_active: bool = True


class ShopifyInventoryItem(msgspec.Struct, frozen=True):
    id: str
    sku: str | None


class ClientStats(msgspec.Struct, kw_only=True):
    calls: int = 0
    throttled: int = 0
    transient_errors: int = 0
    auth_errors: int = 0
    request_errors: int = 0
    points_requested: float = 0.0
    points_actual: float = 0.0
    paced_seconds: float = 0.0


# -------------------------------------------------------------------------- exceptions


class ShopifyError(Exception):
    """Base of the client's errors; ``cost`` is set when Shopify reported one."""

    def __init__(self, message: str, *, status: int | None = None, cost: QueryCost | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.cost = cost


class ShopifyAuthError(ShopifyError):
    """401/403: the access token is wrong or lacks a scope."""


class ShopifyTransientError(ShopifyError):
    """Worth retrying later: 5xx, 429, timeouts, connection errors."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        cost: QueryCost | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, cost=cost)
        self.retry_after = retry_after


class ShopifyThrottled(ShopifyTransientError):
    """THROTTLED: the requested cost exceeded the points available; nothing was run."""

    def __init__(self, message: str, *, status: int | None, cost: QueryCost) -> None:
        ts = cost.throttle_status
        retry_after = None
        if ts is not None and cost.requested is not None and ts.restore_rate > 0:
            retry_after = max(0.0, (cost.requested - ts.currently_available) / ts.restore_rate)
        super().__init__(message, status=status, cost=cost, retry_after=retry_after)
        self.throttle_status = ts
        self.requested_cost = cost.requested


class ShopifyRequestError(ShopifyError):
    """The request is wrong as sent (GraphQL errors, bad version, ...)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        cost: QueryCost | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, status=status, cost=cost)
        self.errors = errors or []

    @property
    def codes(self) -> set[str]:
        out = set()
        for e in self.errors:
            ext = e.get("extensions") if isinstance(e, dict) else None
            if isinstance(ext, dict) and isinstance(ext.get("code"), str):
                out.add(ext["code"])
        return out


# ------------------------------------------------------------------------------ pacing


def estimate_available(status: ThrottleStatus, elapsed: float) -> float:
    """Points in the bucket ``elapsed`` seconds after ``status`` was reported."""
    return min(status.maximum_available, status.currently_available + status.restore_rate * max(0.0, elapsed))


def pacing_delay(
    status: ThrottleStatus,
    cost: float,
    elapsed: float = 0.0,
    reserve_margin: float = 0.0,
    in_flight: float = 0.0,
) -> float:
    """Seconds to wait before sending a call of ``cost`` so the bucket never runs dry.

    ``status`` was reported ``elapsed`` seconds ago; ``in_flight`` points are held by calls
    sent since then (not yet reflected in ``status``); ``reserve_margin`` points are kept
    back for other clients of the same app and for estimate error. The need is capped at
    the bucket size, else a call larger than the bucket minus the margin would wait
    forever.

    ``wait = max(0, (cost + margin - (available + rate x elapsed - in_flight)) / rate)``
    """
    if status.restore_rate <= 0:
        return 0.0
    have = estimate_available(status, elapsed) - in_flight
    need = min(cost + reserve_margin, status.maximum_available)
    if have >= need:
        return 0.0
    return (need - have) / status.restore_rate


class ThrottleGovernor:
    """Paces calls from the last ``throttleStatus`` so Shopify (almost) never throttles.

    Use: ``waited = await gov.acquire(cost)`` before a call, then
    ``gov.release(cost, status)`` with the status from the answer (None if there was
    none). Callers are served in FIFO order. Until the first status is seen only one call
    is let through, so a cold start cannot fire a burst at an unknown bucket (pass
    ``initial_status`` to skip that probe).

    With concurrent calls the estimate errs on the side of waiting: a reported status may
    already include calls still counted here as in flight.
    """

    def __init__(
        self,
        reserve_margin: float = 0.0,
        initial_status: ThrottleStatus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if reserve_margin < 0:
            raise ValueError("reserve_margin must be >= 0")
        self.reserve_margin = reserve_margin
        self._clock = clock
        self._status = initial_status
        self._observed_at = clock()
        self._in_flight = 0.0
        self._lock: asyncio.Lock | None = None

    @property
    def status(self) -> ThrottleStatus | None:
        return self._status

    @property
    def in_flight(self) -> float:
        return self._in_flight

    def observe(self, status: ThrottleStatus, at: float | None = None) -> None:
        self._status = status
        self._observed_at = self._clock() if at is None else at

    def available_estimate(self, now: float | None = None) -> float | None:
        if self._status is None:
            return None
        now = self._clock() if now is None else now
        return estimate_available(self._status, now - self._observed_at) - self._in_flight

    def delay_for(self, cost: float, now: float | None = None) -> float:
        """Seconds to wait before a call of ``cost`` (0 if unknown bucket)."""
        if self._status is None:
            return 0.0
        now = self._clock() if now is None else now
        return pacing_delay(self._status, cost, now - self._observed_at, self.reserve_margin, self._in_flight)

    async def acquire(self, cost: float) -> float:
        """Wait until a call of ``cost`` fits, then count it in flight. Returns seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        start = self._clock()
        async with self._lock:
            while True:
                if self._status is None:
                    if self._in_flight <= 0:
                        break
                    await asyncio.sleep(0.005)  # first answer not in yet: probe with one call
                    continue
                delay = self.delay_for(cost)
                if delay <= 0:
                    break
                # Sleep at most 1 s at a time so a fresher status can shorten the wait.
                await asyncio.sleep(min(delay, 1.0))
            self._in_flight += cost
        return self._clock() - start

    def release(self, cost: float, status: ThrottleStatus | None = None, at: float | None = None) -> None:
        """A call acquired with ``cost`` is over; ``status`` is what its answer reported."""
        self._in_flight = max(0.0, self._in_flight - cost)
        now = self._clock() if at is None else at
        if status is not None:
            self.observe(status, now)
        elif self._status is not None:
            # No answer (timeout, connection error): assume the points were spent.
            have = estimate_available(self._status, now - self._observed_at) - cost
            self._status = msgspec.structs.replace(self._status, currently_available=have)
            self._observed_at = now


class MutationCostEstimate:
    """Cost of an ``inventorySetQuantities`` call of ``n`` entries, learnt from the shop.

    ``base + per_entry x n``, starting from the documented flat charge (10, nothing per
    entry). Every reported requested cost (THROTTLED answers report it too) is remembered
    for its entry count; the line goes through the answers for the smallest and the
    largest count seen. With one count seen, what exceeds the documented 10 is put on the
    entries (the cautious reading: larger calls are then not under-estimated). Requested,
    not actual, cost is what the bucket must hold when a call is admitted.
    """

    def __init__(self, base: float = MUTATION_COST, per_entry: float = 0.0) -> None:
        self.base = base
        self.per_entry = per_entry
        self._seen: dict[int, float] = {}  # entries -> last requested cost

    def __call__(self, entries: int) -> float:
        return self.base + self.per_entry * entries

    def observe(self, entries: int, requested: float | None) -> None:
        if requested is None or entries <= 0:
            return
        self._seen[entries] = requested
        low, high = min(self._seen), max(self._seen)
        if low == high:
            self.base = min(requested, MUTATION_COST)
            self.per_entry = (requested - self.base) / entries
        else:
            self.per_entry = max(0.0, (self._seen[high] - self._seen[low]) / (high - low))
            self.base = max(0.0, self._seen[low] - self.per_entry * low)


# ----------------------------------------------------------------------------- queries

_SET_MUTATION = """mutation AvailabilitySetQuantities($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input)%s {
    inventoryAdjustmentGroup {
      id
      reason
      referenceDocumentUri
      changes { name delta quantityAfterChange item { id } location { id } }
    }
    userErrors { code field message }
  }
}"""

_LEVELS_SELECTION = """inventoryLevels(first: $first, after: $after) {
        edges { cursor node { location { id } quantities(names: ["available", "committed"]) { name quantity } } }
        pageInfo { hasNextPage endCursor }
      }"""

_NODES_LEVELS_QUERY = (
    """query AvailabilityReadLevels($ids: [ID!]!, $first: Int!, $after: String) {
  nodes(ids: $ids) {
    ... on InventoryItem {
      id
      %s
    }
  }
}"""
    % _LEVELS_SELECTION
)

_ITEM_LEVELS_QUERY = (
    """query AvailabilityItemLevels($id: ID!, $first: Int!, $after: String) {
  inventoryItem(id: $id) {
    id
    %s
  }
}"""
    % _LEVELS_SELECTION
)

_LOCATIONS_QUERY = """query AvailabilityLocations($first: Int!, $after: String) {
  locations(first: $first, after: $after) {
    edges { cursor node { id name isActive } }
    pageInfo { hasNextPage endCursor }
  }
}"""

_ITEMS_QUERY = """query AvailabilityInventoryItems($first: Int!, $after: String, $query: String) {
  inventoryItems(first: $first, after: $after, query: $query) {
    edges { cursor node { id sku } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def _parse_cost(body: Any) -> QueryCost | None:
    try:
        c = body["extensions"]["cost"]
    except (KeyError, TypeError):
        return None
    if not isinstance(c, dict):
        return None
    ts = c.get("throttleStatus")
    status = None
    if isinstance(ts, dict):
        try:
            status = ThrottleStatus(
                maximum_available=float(ts["maximumAvailable"]),
                currently_available=float(ts["currentlyAvailable"]),
                restore_rate=float(ts["restoreRate"]),
            )
        except (KeyError, TypeError, ValueError):
            status = None

    def num(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return QueryCost(requested=num(c.get("requestedQueryCost")), actual=num(c.get("actualQueryCost")), throttle_status=status)


def _chunks(seq: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


# ------------------------------------------------------------------------------ client


class ShopifyAdminClient:
    """Async GraphQL Admin API client (one shop, one token).

    ``base_url`` is the shop's origin (``https://{shop}.myshopify.com``) or the
    simulator's base URL; requests go to ``{base_url}/admin/api/{api_version}/graphql.json``.
    Pass a :class:`ThrottleGovernor` to pace calls; share one governor between every
    client of the same app and shop since they share one bucket.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 10.0,
        *,
        governor: ThrottleGovernor | None = None,
        http_client: httpx.AsyncClient | None = None,
        on_cost: Callable[[QueryCost], None] | None = None,
        levels_page_size: int = 10,
        max_query_cost: int = MAX_QUERY_COST,
        user_agent: str = "availability-shopify-client/0.1",
    ) -> None:
        if not _VERSION_RE.match(api_version):
            raise ValueError(f"API version must look like 2026-04 or 'unstable', got {api_version!r}")
        if not 1 <= levels_page_size <= 250:
            raise ValueError("levels_page_size must be 1..250")
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.endpoint = f"{self.base_url}/admin/api/{api_version}/graphql.json"
        self.governor = governor
        self.on_cost = on_cost
        self.levels_page_size = levels_page_size
        self.max_query_cost = max_query_cost
        self.last_cost: QueryCost | None = None
        self.mutation_cost = MutationCostEstimate()  # learnt from the shop's answers
        self.stats = ClientStats()
        self._headers = {
            "X-Shopify-Access-Token": access_token,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout

    @property
    def uses_change_from_quantity(self) -> bool:
        """True if this API version spells compare-and-set as ``changeFromQuantity``."""
        return _version_key(self.api_version) >= _CHANGE_FROM_SINCE

    @property
    def uses_idempotent_directive(self) -> bool:
        """True if this API version has the ``@idempotent(key:)`` directive (2026-01 and later)."""
        return _version_key(self.api_version) >= _IDEMPOTENT_SINCE

    def set_mutation(self, idempotency_key: str) -> str:
        """The inventorySetQuantities document for this API version and key."""
        directive = f" @idempotent(key: {msgspec.json.encode(idempotency_key).decode()})"
        return _SET_MUTATION % (directive if self.uses_idempotent_directive else "")

    @property
    def last_throttle_status(self) -> ThrottleStatus | None:
        return self.last_cost.throttle_status if self.last_cost else None

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> ShopifyAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- transport --------------------------------------------------------------------

    async def execute(
        self, query: str, variables: dict[str, Any] | None = None, *, estimated_cost: float = 1.0
    ) -> GraphQLResponse:
        """POST one GraphQL document; return ``data`` and cost or raise a typed error."""
        gov = self.governor
        if gov is not None:
            self.stats.paced_seconds += await gov.acquire(estimated_cost)
        observed: ThrottleStatus | None = None
        try:
            result = await self._execute(query, variables)
            observed = result.cost.throttle_status
            return result
        except ShopifyError as exc:
            observed = exc.cost.throttle_status if exc.cost else None
            raise
        finally:
            if gov is not None:
                gov.release(estimated_cost, observed)

    def _record_cost(self, cost: QueryCost | None) -> None:
        if cost is None:
            return
        self.last_cost = cost
        self.stats.points_requested += cost.requested or 0.0
        self.stats.points_actual += cost.actual or 0.0
        if self.on_cost is not None:
            self.on_cost(cost)

    async def _execute(self, query: str, variables: dict[str, Any] | None) -> GraphQLResponse:
        self.stats.calls += 1
        payload = msgspec.json.encode({"query": query, "variables": variables or {}})
        try:
            resp = await self._http.post(self.endpoint, content=payload, headers=self._headers, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            self.stats.transient_errors += 1
            raise ShopifyTransientError(f"Shopify did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            self.stats.transient_errors += 1
            raise ShopifyTransientError(f"cannot reach Shopify: {type(exc).__name__}: {exc}") from exc

        status = resp.status_code
        try:
            body = msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            body = None
        cost = _parse_cost(body)
        self._record_cost(cost)

        if status in (401, 403):
            self.stats.auth_errors += 1
            detail = body.get("errors") if isinstance(body, dict) else None
            raise ShopifyAuthError(f"Shopify refused the credentials (HTTP {status}): {detail}", status=status)
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and any(
            isinstance(e, dict) and (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors
        ):
            self.stats.throttled += 1
            raise ShopifyThrottled("Throttled", status=status, cost=cost or QueryCost())
        if status == 429 or status >= 500:
            self.stats.transient_errors += 1
            retry_after = None
            with contextlib.suppress(ValueError):
                retry_after = float(resp.headers.get("Retry-After", ""))
            raise ShopifyTransientError(
                f"Shopify answered HTTP {status}", status=status, cost=cost, retry_after=retry_after
            )
        if not isinstance(body, dict):
            if 200 <= status < 300:
                # A truncated or proxy-mangled answer: the call may or may not have run.
                self.stats.transient_errors += 1
                raise ShopifyTransientError(f"unparseable answer (HTTP {status})", status=status)
            self.stats.request_errors += 1
            raise ShopifyRequestError(f"Shopify answered HTTP {status}", status=status)
        if status >= 400:
            self.stats.request_errors += 1
            raise ShopifyRequestError(
                f"Shopify answered HTTP {status}: {errors}",
                status=status,
                cost=cost,
                errors=errors if isinstance(errors, list) else [{"message": str(errors)}],
            )
        if errors:
            errs = errors if isinstance(errors, list) else [{"message": str(errors)}]
            codes = {(e.get("extensions") or {}).get("code") for e in errs if isinstance(e, dict)}
            if "INTERNAL_SERVER_ERROR" in codes:
                self.stats.transient_errors += 1
                raise ShopifyTransientError(f"Shopify internal error: {errs}", status=status, cost=cost)
            self.stats.request_errors += 1
            message = "; ".join(str(e.get("message")) for e in errs if isinstance(e, dict)) or str(errs)
            raise ShopifyRequestError(f"GraphQL error: {message}", status=status, cost=cost, errors=errs)
        data = body.get("data")
        if not isinstance(data, dict):
            self.stats.request_errors += 1
            raise ShopifyRequestError("answer without data", status=status, cost=cost)
        return GraphQLResponse(data=data, cost=cost or QueryCost())

    # ---- inventorySetQuantities --------------------------------------------------------

    def build_set_input(
        self,
        entries: Sequence[SetQuantity],
        name: str = "available",
        reason: str = "correction",
        reference_document_uri: str | None = None,
    ) -> dict[str, Any]:
        """The ``InventorySetQuantitiesInput`` for this client's API version."""
        if not entries:
            raise ValueError("nothing to set: entries is empty")
        if len(entries) > MAX_ENTRIES_PER_CALL:
            raise ValueError(f"at most {MAX_ENTRIES_PER_CALL} entries per call, got {len(entries)}")
        quantities: list[dict[str, Any]] = []
        inp: dict[str, Any] = {"name": name, "reason": reason, "quantities": quantities}
        if reference_document_uri is not None:
            inp["referenceDocumentUri"] = reference_document_uri
        if self.uses_change_from_quantity:
            for e in entries:
                quantities.append(
                    {
                        "inventoryItemId": e.inventory_item_id,
                        "locationId": e.location_id,
                        "quantity": e.quantity,
                        # Always present: explicit null opts out of the check (2026-04 rule).
                        "changeFromQuantity": e.compare_quantity,
                    }
                )
        else:
            checked = [e.compare_quantity is not None for e in entries]
            if any(checked) and not all(checked):
                # ignoreCompareQuantity is per call, not per entry, before 2026-01.
                raise ValueError(
                    f"API {self.api_version} cannot mix checked and unchecked entries in one call; split them"
                )
            if not any(checked):
                inp["ignoreCompareQuantity"] = True
            for e in entries:
                q = {"inventoryItemId": e.inventory_item_id, "locationId": e.location_id, "quantity": e.quantity}
                if e.compare_quantity is not None:
                    q["compareQuantity"] = e.compare_quantity
                quantities.append(q)
        return inp

    async def set_available(
        self,
        entries: Sequence[SetQuantity],
        idempotency_key: str,
        reason: str = "correction",
        reference_document_uri: str | None = None,
    ) -> SetResult:
        """Set ``available`` for up to 250 (item, location) entries, compare-and-set.

        ``idempotency_key`` must be reused verbatim when retrying the same entries after a
        transient error, and must be new for a different set of entries.
        ``reference_document_uri`` defaults to ``gid://availability/Push/<key>``.
        """
        return await self.set_quantities("available", entries, idempotency_key, reason, reference_document_uri)

    async def set_quantities(
        self,
        name: str,
        entries: Sequence[SetQuantity],
        idempotency_key: str,
        reason: str = "correction",
        reference_document_uri: str | None = None,
    ) -> SetResult:
        if not _KEY_RE.match(idempotency_key):
            raise ValueError("idempotency keys are 1-255 characters of A-Z a-z 0-9 . _ : - (use a UUID)")
        if reference_document_uri is None:
            reference_document_uri = f"gid://availability/Push/{idempotency_key}"
        inp = self.build_set_input(entries, name, reason, reference_document_uri)
        query = self.set_mutation(idempotency_key)
        estimate = self.mutation_cost
        try:
            resp = await self.execute(query, {"input": inp}, estimated_cost=estimate(len(entries)))
        except ShopifyError as exc:
            estimate.observe(len(entries), exc.cost.requested if exc.cost else None)
            raise
        estimate.observe(len(entries), resp.cost.requested)
        payload = resp.data.get("inventorySetQuantities")
        if not isinstance(payload, dict):
            raise ShopifyRequestError("inventorySetQuantities answered without a payload", cost=resp.cost)
        user_errors = [
            UserError(
                code=e.get("code"),
                field=[str(f) for f in e["field"]] if isinstance(e.get("field"), list) else None,
                message=str(e.get("message", "")),
            )
            for e in payload.get("userErrors") or []
            if isinstance(e, dict)
        ]
        group = payload.get("inventoryAdjustmentGroup")
        changes = []
        if isinstance(group, dict):
            for c in group.get("changes") or []:
                changes.append(
                    QuantityChange(
                        name=c.get("name"),
                        delta=int(c.get("delta") or 0),
                        quantity_after_change=c.get("quantityAfterChange"),
                        inventory_item_id=(c.get("item") or {}).get("id"),
                        location_id=(c.get("location") or {}).get("id"),
                    )
                )
        stale = sorted(
            {e.entry_index for e in user_errors if e.code in STALE_CODES and e.entry_index is not None}
        )
        return SetResult(
            idempotency_key=idempotency_key,
            ok=not user_errors,
            adjustment_group_id=group.get("id") if isinstance(group, dict) else None,
            changes=changes,
            user_errors=user_errors,
            stale_indexes=stale,
            cost=resp.cost,
        )

    # ---- reading levels ----------------------------------------------------------------

    def _levels_cost(self, first: int) -> int:
        return 1 + 2 + first * LEVEL_NODE_COST

    async def read_levels(self, item_gids: Sequence[str]) -> dict[tuple[str, str], int]:
        """``available`` per (item GID, location GID) for every location the items are
        stocked at. Items Shopify does not know are absent (see
        :meth:`read_levels_detailed` for the list)."""
        return (await self.read_levels_detailed(item_gids)).levels

    async def read_levels_detailed(self, item_gids: Sequence[str]) -> LevelsReadResult:
        ids = list(dict.fromkeys(item_gids))  # de-duplicate, keep order
        for g in ids:
            try:
                parse_gid(g, "InventoryItem")
            except GidError as exc:
                raise ValueError(str(exc)) from None
        levels: dict[tuple[str, str], int] = {}
        missing: list[str] = []
        counters: dict[str, Any] = {"calls": 0, "points": 0.0, "committed": {}}
        per_item = self._levels_cost(self.levels_page_size)
        batch = max(1, min(MAX_ENTRIES_PER_CALL, self.max_query_cost // per_item))
        for chunk in _chunks(ids, batch):
            await self._read_chunk(list(chunk), levels, missing, counters)
        return LevelsReadResult(
            levels=levels,
            missing_items=missing,
            calls=counters["calls"],
            points=counters["points"],
            committed=counters["committed"],
        )

    async def _read_chunk(
        self,
        chunk: list[str],
        levels: dict[tuple[str, str], int],
        missing: list[str],
        counters: dict[str, Any],
    ) -> None:
        first = self.levels_page_size
        try:
            resp = await self.execute(
                _NODES_LEVELS_QUERY,
                {"ids": chunk, "first": first, "after": None},
                estimated_cost=len(chunk) * self._levels_cost(first),
            )
        except ShopifyRequestError as exc:
            # The server's cost model may differ from our estimate: halve and retry.
            if "MAX_COST_EXCEEDED" in exc.codes and len(chunk) > 1:
                mid = len(chunk) // 2
                await self._read_chunk(chunk[:mid], levels, missing, counters)
                await self._read_chunk(chunk[mid:], levels, missing, counters)
                return
            raise
        counters["calls"] += 1
        counters["points"] += resp.cost.actual or 0.0
        nodes = resp.data.get("nodes")
        if not isinstance(nodes, list) or len(nodes) != len(chunk):
            raise ShopifyRequestError("nodes answer does not match the ids sent", cost=resp.cost)
        for gid, node in zip(chunk, nodes, strict=True):
            if not isinstance(node, dict) or "inventoryLevels" not in node:
                missing.append(gid)
                continue
            conn = node["inventoryLevels"]
            self._collect_levels(gid, conn, levels, counters["committed"])
            page = conn.get("pageInfo") or {}
            after = page.get("endCursor")
            while page.get("hasNextPage") and after:
                more_first = max(1, min(250, (self.max_query_cost - 3) // LEVEL_NODE_COST, 100))
                r = await self.execute(
                    _ITEM_LEVELS_QUERY,
                    {"id": gid, "first": more_first, "after": after},
                    estimated_cost=self._levels_cost(more_first),
                )
                counters["calls"] += 1
                counters["points"] += r.cost.actual or 0.0
                item = r.data.get("inventoryItem")
                if not isinstance(item, dict):
                    break  # deleted between the two reads
                conn = item["inventoryLevels"]
                self._collect_levels(gid, conn, levels, counters["committed"])
                page = conn.get("pageInfo") or {}
                after = page.get("endCursor")

    @staticmethod
    def _collect_levels(
        gid: str, conn: dict[str, Any], out: dict[tuple[str, str], int], committed: dict[tuple[str, str], int]
    ) -> None:
        for edge in conn.get("edges") or []:
            node = edge.get("node") or {}
            loc = (node.get("location") or {}).get("id")
            if loc is None:
                continue
            for q in node.get("quantities") or []:
                if q.get("name") == "available":
                    out[(gid, loc)] = int(q.get("quantity") or 0)
                elif q.get("name") == "committed":
                    committed[(gid, loc)] = int(q.get("quantity") or 0)

    # ---- catalogue lookups ---------------------------------------------------------------

    async def list_locations(self) -> list[ShopifyLocation]:
        out: list[ShopifyLocation] = []
        after = None
        while True:
            r = await self.execute(_LOCATIONS_QUERY, {"first": 250, "after": after}, estimated_cost=252)
            conn = r.data.get("locations") or {}
            for e in conn.get("edges") or []:
                n = e["node"]
                out.append(ShopifyLocation(id=n["id"], name=n.get("name") or "", is_active=n.get("isActive", True)))
            page = conn.get("pageInfo") or {}
            if not page.get("hasNextPage"):
                return out
            after = page.get("endCursor")

    async def find_inventory_items(self, skus: Sequence[str] | None = None) -> list[ShopifyInventoryItem]:
        """Inventory items, all of them or those with the given SKUs (``sku:`` search)."""
        out: list[ShopifyInventoryItem] = []
        queries: list[str | None]
        if skus is None:
            queries = [None]
        else:
            wanted = list(dict.fromkeys(skus))
            queries = [" OR ".join(f'sku:"{s}"' for s in chunk) for chunk in _chunks(wanted, 50)]
        for q in queries:
            after = None
            while True:
                r = await self.execute(
                    _ITEMS_QUERY, {"first": 250, "after": after, "query": q}, estimated_cost=252
                )
                conn = r.data.get("inventoryItems") or {}
                for e in conn.get("edges") or []:
                    n = e["node"]
                    out.append(ShopifyInventoryItem(id=n["id"], sku=n.get("sku")))
                page = conn.get("pageInfo") or {}
                if not page.get("hasNextPage"):
                    break
                after = page.get("endCursor")
        return out

