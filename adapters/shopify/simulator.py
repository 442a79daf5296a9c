"""A faithful local simulator of the Shopify GraphQL Admin API, for inventory.

It is a real HTTP server (a Litestar app served by uvicorn) so that the client, the
publisher, tests and demos talk to a genuine HTTP peer with Shopify's wire behaviour:
authentication, API versions, cost-based rate limiting, idempotency, compare-and-set and
the user errors of ``inventorySetQuantities``, plus fault injection and
``inventory_levels/update`` webhooks for changes made "behind our back". The facts it
follows are in ``/work/shared/design/shopify.md``; where a detail is not documented by
Shopify the choice made here is stated below and marked *(sim choice)*.

Endpoints
---------
``POST /admin/api/{version}/graphql.json``
    The GraphQL endpoint. ``X-Shopify-Access-Token`` must be the configured token (or one
    of ``extra_access_tokens``), else HTTP 401 with Shopify's error JSON. ``version`` is
    ``YYYY-MM`` or ``unstable`` (anything else: 404). Body ``{"query", "variables"}``.

``/_sim/...`` (simulator only, never on real Shopify; no auth)
    ``POST /_sim/seed``  seed locations, items and levels (JSON, see :meth:`SimulatorState.seed`)
    ``GET  /_sim/levels`` every level with its quantities
    ``GET  /_sim/stats``  counters (calls, throttled, points spent, overdraw, ...)
    ``GET  /_sim/history`` every quantity set, in order (API and external writes)
    ``GET|POST /_sim/faults`` read / change the fault knobs (partial update)
    ``POST /_sim/webhook`` change the webhook target ``{"url", "secret"}``
    ``POST /_sim/external-change`` change one level behind the app's back and deliver the
    ``inventory_levels/update`` webhook; answers after the delivery attempt
    ``POST /_sim/reset`` drop all catalogue, levels, idempotency keys and counters

Operations recognised (no general GraphQL parser)
-------------------------------------------------
The document is not parsed as GraphQL. The simulator reads the operation type and the
*first root field* (aliases allowed), that field's arguments and directives, and the
arguments of the nested ``inventoryLevels(...)`` and ``quantities(names: ...)`` fields with
a tiny literal scanner; argument values may be literals or ``$variables``. Fragments
defined outside the operation and several root fields are not supported. The selection
set is not interpreted either: each operation answers a fixed superset of the fields
our client selects. Root fields:

* ``mutation { inventorySetQuantities(input: $input) @idempotent(key: "...") {...} }``
* ``inventoryItem(id:) { id sku inventoryLevels(first:, after:) {...} }``
* ``nodes(ids: [...])`` - bulk read for drift repair: one call returns many items with
  their first page of levels (``... on InventoryItem``); Location GIDs return locations
* ``inventoryItems(first:, after:, query: "sku:A OR sku:B")`` - catalogue listing
  (``sku:`` filters are honoured, other search terms are ignored, as Shopify ignores
  unknown search filters)
* ``locations(first:, after:)``

Anything else gets a GraphQL error answer (HTTP 200, ``errors[0].extensions.code`` =
``UNSUPPORTED_OPERATION``), never a 500.

inventorySetQuantities
----------------------
* Compare style depends on the API version in the URL. ``>= 2026-04``: every entry must
  carry ``changeFromQuantity`` (number, or ``null`` to skip the check); omitting it is a
  user error ``CHANGE_FROM_QUANTITY_REQUIRED`` *(sim choice: Shopify says "omitting
  returns an error" without naming the code; modelled on COMPARE_QUANTITY_REQUIRED)*; a
  mismatch is ``CHANGE_FROM_QUANTITY_STALE``; ``compareQuantity`` and
  ``ignoreCompareQuantity`` no longer exist (GraphQL variable error). ``< 2026-01``:
  ``compareQuantity`` per entry + ``ignoreCompareQuantity`` on the input; a missing
  compare without ignore is ``COMPARE_QUANTITY_REQUIRED``, a mismatch
  ``COMPARE_QUANTITY_STALE``; ``changeFromQuantity`` does not exist. In between, an entry
  with a ``changeFromQuantity`` key uses the new rule and one without uses the old rule.
* The comparison is against the current value of the quantity named by ``input.name``.
* **All or nothing** (Shopify's behaviour): if any entry has any user error, *no* entry is
  applied; ``inventoryAdjustmentGroup`` is ``null`` and every error found is listed (all
  entries are checked, not only up to the first failure).
* Only ``available`` and ``on_hand`` may be set (``INVALID_NAME``). Setting ``available``
  moves ``on_hand`` by the same delta and vice versa, keeping
  ``on_hand = available + committed + reserved + damaged + safety_stock + quality_control``.
  ``changes`` lists both names for every level whose value changed; entries whose value is
  unchanged are not listed and, if nothing changed at all, ``inventoryAdjustmentGroup`` is
  ``null`` with no user errors *(as Shopify does)*.
* Other user errors: ``INVALID_INVENTORY_ITEM``, ``INVALID_LOCATION``,
  ``ITEM_NOT_STOCKED_AT_LOCATION``, ``NON_MUTABLE_INVENTORY_ITEM`` (items seeded with
  ``mutable: false``, e.g. bundle parents), ``INVALID_QUANTITY_NEGATIVE``,
  ``INVALID_QUANTITY_TOO_HIGH`` (> 1,000,000,000), ``INVALID_REASON``,
  ``INVALID_REFERENCE_DOCUMENT`` (must be a URI with a scheme),
  ``NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR`` (same item and location twice; the error
  points at the later entry). ``field`` is the input path, e.g.
  ``["input", "quantities", "3", "changeFromQuantity"]``.
* More than 250 ``quantities`` -> top-level error ``MAX_INPUT_SIZE_EXCEEDED``, nothing
  applied, no points charged.

Idempotency (``@idempotent(key: "...")``)
-----------------------------------------
* Mandatory from ``2026-04`` (missing -> top-level error ``IDEMPOTENCY_KEY_REQUIRED``,
  *(sim choice of code)*); optional and honoured on older versions.
* Keys are per shop and remembered for ``idempotency_ttl_s`` (24 h by default). The
  "parameters" compared are the resolved ``input`` argument (canonical JSON).
* Same key, different input -> user error ``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``.
  Same key while the first request is still being processed -> user error
  ``IDEMPOTENCY_CONCURRENT_REQUEST`` (the processing window is the ``latency_ms`` fault).
  A completed key replays the original payload (including its user errors) without
  applying anything again. A key whose request hit an injected 5xx is remembered as
  failed -> ``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED`` (retry with a new key), unless the
  ``error_marks_key_failed`` knob is off.

Rate limiting: cost model *(sim choice, documented)*
------------------------------------------------------
A leaky bucket of points per access token. Plans: standard 100/s (bucket 2,000),
advanced 200/s (4,000), plus 1,000/s (20,000), enterprise 2,000/s (40,000);
``restore_rate`` / ``bucket_size`` override them (tests use tiny buckets).

* ``inventorySetQuantities``: 10 points, requested and actual (flat, whatever the number
  of entries; also charged for replays and for payloads with user errors).
* Queries: 1 point per object, 0 per scalar; a connection costs ``2 + first x node``
  when requested and ``2 + returned x node`` actually. An inventory level node costs 3
  (the level, its ``location``, its ``quantities`` list). So
  ``inventoryItem`` with ``inventoryLevels(first: 10)`` requests ``1 + 2 + 30 = 33``;
  ``nodes(ids: [30 ids])`` with ``inventoryLevels(first: 10)`` requests ``30 x 33 = 990``
  while its actual cost counts only the levels returned (an item stocked at 2
  locations actually costs ``1 + 2 + 6 = 9``); ``inventoryItems(first: n)`` requests
  ``2 + n`` (plus nested levels if selected); ``locations(first: n)`` requests
  ``2 + n``. Ids that resolve to nothing cost nothing actually.
* A requested cost above ``max_query_cost`` (1,000) -> ``MAX_COST_EXCEEDED``, nothing
  charged. ``first`` above 250 -> error.
* The requested cost is reserved when the request is admitted and the unused part is
  refunded when it completes. A request whose requested cost exceeds the points available
  is answered ``THROTTLED`` (HTTP 200 by default, ``throttle_http_status`` = 429 to
  mimic the other reported behaviour) with no ``data`` and ``actualQueryCost: null``.
  Every answer carries ``extensions.cost`` with ``requestedQueryCost``,
  ``actualQueryCost`` and ``throttleStatus {maximumAvailable, currentlyAvailable,
  restoreRate}``.
* Counters (``GET /_sim/stats`` / :attr:`SimulatorState.stats`): calls, throttled, points
  spent, the lowest bucket level ever observed and the overdraw (how far below 0 it ever
  went, which must stay 0), quantities applied, replays, faults, webhooks.

Fault knobs (config ``faults`` and ``POST /_sim/faults``)
---------------------------------------------------------
Drawn from one RNG seeded by ``seed`` so runs are repeatable.

* ``error_rate`` + ``error_statuses``: answer a random 5xx *before* doing anything (nothing
  applied; a keyed mutation's key is then remembered as failed, see above).
* ``latency_ms`` + ``latency_jitter_ms``: processing time of every admitted request
  (the window in which a key is "in flight" and reserved points are held).
* ``timeout_rate`` + ``timeout_s``: the request *is* processed (a mutation is applied and
  its key completed) but the answer is held back ``timeout_s`` - the lost-response case
  a client's timeout and same-key retry must handle.
* ``force_throttle`` (answer the next N GraphQL requests THROTTLED) and ``throttle_all``.
* ``external_writer_interval_s`` (+ ``external_writer_max_delta``): every interval, change
  the ``available`` of a random stocked level as if a merchant or another app did, and
  POST a signed ``inventory_levels/update`` webhook to ``webhook_url``.
* ``webhook_duplicate_rate``: deliver a webhook twice with the same
  ``X-Shopify-Webhook-Id`` (Shopify does not promise exactly-once).

Webhooks carry ``X-Shopify-Topic``, ``X-Shopify-Hmac-Sha256`` (base64 HMAC-SHA256 of the
raw body with ``webhook_secret``), ``X-Shopify-Shop-Domain``, ``X-Shopify-API-Version``,
``X-Shopify-Webhook-Id``, ``X-Shopify-Event-Id`` and ``X-Shopify-Triggered-At``. A failed
delivery (non-2xx or no answer in ``webhook_timeout_s``) is retried with the same webhook
id up to ``webhook_max_attempts`` times. Like real Shopify, changes made through the API
are also announced (``echo_api_writes``, on by default), so consumers must expect their
own writes to come back.

Running it
----------
``python -m adapters.shopify.simulator --port 8765 --plan standard --seed-items 100``;
:func:`run_simulator` for embedding; :class:`SimulatorServer` starts it on a free port in a
background thread for tests (``with SimulatorServer(cfg) as sim: sim.base_url``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from adapters.shopify.gid import (
    GidError,
    inventory_level_gid,
    item_gid,
    location_gid,
    parse_gid,
)

__all__ = [
    "ALLOWED_REASONS",
    "MAX_INPUT_ARRAY",
    "MAX_QUANTITY",
    "PLANS",
    "FaultConfig",
    "PlanLimits",
    "SetRecord",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorState",
    "SimulatorStats",
    "WebhookDelivery",
    "create_app",
    "main",
    "run_simulator",
]

log = logging.getLogger("adapters.shopify.simulator")

# --------------------------------------------------------------------------- constants


class PlanLimits(msgspec.Struct, frozen=True):
    restore_rate: float
    bucket_size: float


PLANS: dict[str, PlanLimits] = {
    "standard": PlanLimits(100.0, 2000.0),
    "advanced": PlanLimits(200.0, 4000.0),
    "plus": PlanLimits(1000.0, 20000.0),
    "enterprise": PlanLimits(2000.0, 40000.0),
}

MAX_INPUT_ARRAY = 250  # Shopify caps every array input (and connection page) at 250
MAX_QUANTITY = 1_000_000_000
MUTATION_COST = 10
LEVEL_NODE_COST = 3  # InventoryLevel + location + quantities list
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
_ON_HAND_PARTS = ("committed", "reserved", "damaged", "safety_stock", "quality_control")
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
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
_VERSION_RE = re.compile(r"^(?:\d{4}-\d{2}|unstable)$")
_AUTH_ERROR = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
_CHANGE_FROM_SINCE = "2026-01"  # changeFromQuantity accepted from here
_CHANGE_FROM_REQUIRED_SINCE = "2026-04"  # ... and mandatory (compareQuantity gone) from here
_IDEMPOTENCY_REQUIRED_SINCE = "2026-04"


def _version_key(version: str) -> tuple[int, int]:
    if version == "unstable":
        return (9999, 99)
    year, month = version.split("-")
    return (int(year), int(month))


def _version_at_least(version: str, since: str) -> bool:
    return _version_key(version) >= _version_key(since)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------ configuration


class FaultConfig(msgspec.Struct, kw_only=True):
    """Fault knobs; all off by default. Changeable at runtime (``POST /_sim/faults``)."""

    error_rate: float = 0.0
    error_statuses: list[int] = msgspec.field(default_factory=lambda: [500, 502, 503])
    error_marks_key_failed: bool = True
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 30.0
    force_throttle: int = 0
    throttle_all: bool = False
    external_writer_interval_s: float = 0.0
    external_writer_max_delta: int = 5
    webhook_duplicate_rate: float = 0.0


class SimulatorConfig(msgspec.Struct, kw_only=True):
    """Everything the simulator needs; every field has a usable default."""

    access_token: str = "shpat_simulator"
    extra_access_tokens: list[str] = []
    plan: str = "standard"
    restore_rate: float | None = None  # overrides the plan
    bucket_size: float | None = None  # overrides the plan
    max_query_cost: int = 1000
    throttle_http_status: int = 200
    shop_domain: str = "availability-sim.myshopify.com"
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
    faults: FaultConfig = msgspec.field(default_factory=FaultConfig)

    def limits(self) -> PlanLimits:
        try:
            base = PLANS[self.plan]
        except KeyError:
            raise ValueError(f"unknown plan {self.plan!r}; one of {sorted(PLANS)}") from None
        return PlanLimits(
            restore_rate=float(self.restore_rate if self.restore_rate is not None else base.restore_rate),
            bucket_size=float(self.bucket_size if self.bucket_size is not None else base.bucket_size),
        )


# --------------------------------------------------------------------------- state model


@dataclass
class _Item:
    id: int
    sku: str
    mutable: bool = True


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
    updated_at: str = field(default_factory=_now_iso)

    def set(self, name: str, value: int) -> int:
        """Set ``available`` or ``on_hand``; keep the on_hand identity. Returns the delta."""
        delta = value - self.quantities[name]
        if delta:
            self.quantities["available"] += delta
            self.quantities["on_hand"] += delta
            self.updated_at = _now_iso()
        return delta


class SetRecord(msgspec.Struct, kw_only=True):
    """One applied quantity set, for "never applied twice" style assertions."""

    seq: int
    at: str
    source: str  # "api" | "external" | "seed"
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


class SimulatorStats(msgspec.Struct, kw_only=True):
    calls: int = 0  # GraphQL requests received with a valid token
    unauthorized: int = 0
    throttled: int = 0
    points_spent: float = 0.0  # sum of actualQueryCost
    min_available: float | None = None  # lowest bucket level ever observed
    max_overdraw: float = 0.0  # how far below 0 any bucket ever went (must stay 0)
    mutations: int = 0  # inventorySetQuantities executed (not replays)
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


@dataclass
class _IdempotencyRecord:
    input_hash: str
    state: str  # "in_flight" | "completed" | "failed"
    created: float
    payload: dict[str, Any] | None = None


class _LeakyBucket:
    """Points bucket that refills continuously at ``restore_rate`` up to ``capacity``."""

    def __init__(self, capacity: float, restore_rate: float, now: float) -> None:
        self.capacity = capacity
        self.restore_rate = restore_rate
        self.available = capacity
        self._at = now

    def refill(self, now: float) -> None:
        if now > self._at:
            self.available = min(self.capacity, self.available + (now - self._at) * self.restore_rate)
            self._at = now

    def status(self) -> dict[str, Any]:
        return {
            "maximumAvailable": float(self.capacity),
            "currentlyAvailable": int(math.floor(self.available)),
            "restoreRate": float(self.restore_rate),
        }


class _QueryError(Exception):
    """A top-level GraphQL error (answered with ``errors``, no ``data``)."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extensions = extensions

    def to_error(self) -> dict[str, Any]:
        return {"message": self.message, "extensions": {"code": self.code, **self.extensions}}


def _user_error(code: str, field_path: list[str] | None, message: str) -> dict[str, Any]:
    return {"code": code, "field": field_path, "message": message}


# ------------------------------------------------------------------ tiny query scanning
#
# Not a GraphQL parser: just enough lexing to find the operation type, the first root
# field with its arguments and directives, and the arguments of a few nested fields.

_NAME_RE = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _strip_comments(text: str) -> str:
    out: list[str] = []
    i, n, in_str = 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


class _Scanner:
    def __init__(self, text: str, pos: int, variables: dict[str, Any]) -> None:
        self.text = text
        self.pos = pos
        self.variables = variables

    def _fail(self, what: str) -> _QueryError:
        return _QueryError(f"Parse error: {what} at offset {self.pos}", "PARSE_ERROR")

    def ws(self) -> None:
        n = len(self.text)
        while self.pos < n and (self.text[self.pos].isspace() or self.text[self.pos] == ","):
            self.pos += 1

    def peek(self) -> str:
        self.ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self._fail(f"expected {ch!r}")
        self.pos += 1

    def name(self) -> str:
        self.ws()
        m = _NAME_RE.match(self.text, self.pos)
        if not m:
            raise self._fail("expected a name")
        self.pos = m.end()
        return m.group(0)

    def value(self) -> Any:
        c = self.peek()
        if c == "$":
            self.pos += 1
            return self.variables.get(self.name())  # an unset variable reads as null
        if c == '"':
            return self._string()
        if c == "[":
            self.pos += 1
            items = []
            while self.peek() != "]":
                if not self.peek():
                    raise self._fail("unterminated list")
                items.append(self.value())
            self.pos += 1
            return items
        if c == "{":
            self.pos += 1
            obj = {}
            while self.peek() != "}":
                if not self.peek():
                    raise self._fail("unterminated object")
                key = self.name()
                self.expect(":")
                obj[key] = self.value()
            self.pos += 1
            return obj
        m = _NUMBER_RE.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            s = m.group(0)
            return float(s) if any(ch in s for ch in ".eE") else int(s)
        word = self.name()
        return {"true": True, "false": False, "null": None}.get(word, word)

    def _string(self) -> str:
        t = self.text
        if t.startswith('"""', self.pos):
            end = t.find('"""', self.pos + 3)
            if end < 0:
                raise self._fail("unterminated block string")
            s = t[self.pos + 3 : end]
            self.pos = end + 3
            return s
        i = self.pos + 1
        while i < len(t):
            if t[i] == "\\":
                i += 2
                continue
            if t[i] == '"':
                break
            i += 1
        else:
            raise self._fail("unterminated string")
        raw = t[self.pos : i + 1]
        self.pos = i + 1
        try:
            return json.loads(raw)
        except ValueError:
            raise self._fail("bad string literal") from None

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.peek() != "(":
            return args
        self.pos += 1
        while self.peek() != ")":
            if not self.peek():
                raise self._fail("unterminated arguments")
            key = self.name()
            self.expect(":")
            args[key] = self.value()
        self.pos += 1
        return args


@dataclass
class _RootField:
    op_type: str
    response_key: str
    name: str
    args: dict[str, Any]
    directives: dict[str, dict[str, Any]]


def _root_field(text: str, variables: dict[str, Any]) -> _RootField:
    brace = text.find("{")
    if brace < 0:
        raise _QueryError("Parse error: no selection set", "PARSE_ERROR")
    header = text[:brace].strip()
    head_word = _NAME_RE.match(header)
    op_type = head_word.group(0) if head_word else "query"
    if op_type not in ("query", "mutation"):
        raise _QueryError(
            f"Unsupported operation type {op_type!r}; the simulator answers queries and mutations",
            "UNSUPPORTED_OPERATION",
        )
    sc = _Scanner(text, brace + 1, variables)
    first = sc.name()
    if sc.peek() == ":":
        sc.pos += 1
        response_key, name = first, sc.name()
    else:
        response_key, name = first, first
    args = sc.arguments()
    directives: dict[str, dict[str, Any]] = {}
    while sc.peek() == "@":
        sc.pos += 1
        dname = sc.name()
        directives[dname] = sc.arguments()
    return _RootField(op_type, response_key, name, args, directives)


def _nested_args(text: str, field_name: str, variables: dict[str, Any]) -> dict[str, Any] | None:
    """Arguments of the first ``field_name`` in the document; None if the field is absent."""
    m = re.search(rf"\b{field_name}\b", text)
    if m is None:
        return None
    return _Scanner(text, m.end(), variables).arguments()


@dataclass
class _Operation:
    kind: str  # set | item | nodes | items | locations
    root: _RootField
    requested_cost: int
    version: str
    levels: dict[str, Any] | None = None  # nested inventoryLevels args (None = not selected)
    names: list[str] = field(default_factory=lambda: ["available"])
    idem_key: str | None = None
    input: dict[str, Any] | None = None
    input_hash: str | None = None


# ----------------------------------------------------------------- operation validation


def _int_arg(args: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
    value = args.get(key)
    if value is None:
        if required:
            raise _QueryError(f"you must provide `{key}` to paginate `{where}`", "BAD_REQUEST")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _QueryError(f"Argument '{key}' on '{where}' must be an Int", "BAD_REQUEST")
    if key == "first" and not 0 < value <= MAX_INPUT_ARRAY:
        raise _QueryError(
            f"The '{key}' argument on '{where}' must be between 1 and {MAX_INPUT_ARRAY}",
            "BAD_REQUEST",
        )
    return value


def _str_arg(args: dict[str, Any], key: str, where: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise _QueryError(f"Argument '{key}' on '{where}' must be a String", "BAD_REQUEST")
    return value


def _levels_request_cost(levels: dict[str, Any] | None) -> int:
    if levels is None:
        return 0
    return 2 + int(levels["first"]) * LEVEL_NODE_COST


def _variable_problem(path: list[Any], explanation: str, value: Any) -> _QueryError:
    # Shape of a GraphQL variable-coercion error as Shopify reports it.
    return _QueryError(
        "Variable $input of type InventorySetQuantitiesInput! was provided invalid value for "
        + ".".join(str(p) for p in path)
        + f" ({explanation})",
        "INVALID_VARIABLE",
        value=value,
        problems=[{"path": path, "explanation": explanation}],
    )


def _validate_set_input(raw: Any, version: str) -> dict[str, Any]:
    """GraphQL-level (schema) checks of the input; user-level checks come later."""
    if not isinstance(raw, dict):
        raise _QueryError(
            "Variable $input of type InventorySetQuantitiesInput! was provided invalid value",
            "INVALID_VARIABLE",
        )
    new_only = _version_at_least(version, _CHANGE_FROM_REQUIRED_SINCE)
    change_from_known = _version_at_least(version, _CHANGE_FROM_SINCE)
    allowed_input = {"name", "reason", "referenceDocumentUri", "quantities"}
    if not new_only:
        allowed_input.add("ignoreCompareQuantity")
    for key in raw:
        if key not in allowed_input:
            raise _variable_problem([key], "Field is not defined on InventorySetQuantitiesInput", raw)
    for key in ("name", "reason", "quantities"):
        if key not in raw or raw[key] is None:
            raise _variable_problem([key], "Expected value to not be null", raw)
    if not isinstance(raw["name"], str) or not isinstance(raw["reason"], str):
        raise _variable_problem(["name"], "Could not coerce value to String", raw)
    if raw.get("referenceDocumentUri") is not None and not isinstance(raw["referenceDocumentUri"], str):
        raise _variable_problem(["referenceDocumentUri"], "Could not coerce value to URL", raw)
    ignore = raw.get("ignoreCompareQuantity")
    if ignore is not None and not isinstance(ignore, bool):
        raise _variable_problem(["ignoreCompareQuantity"], "Could not coerce value to Boolean", raw)
    quantities = raw["quantities"]
    if not isinstance(quantities, list):
        raise _variable_problem(["quantities"], "Expected a list", raw)
    if len(quantities) > MAX_INPUT_ARRAY:
        raise _QueryError(
            f"The input array size of {len(quantities)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}.",
            "MAX_INPUT_SIZE_EXCEEDED",
            path=["inventorySetQuantities", "input", "quantities"],
        )
    allowed_entry = {"inventoryItemId", "locationId", "quantity"}
    if change_from_known:
        allowed_entry.add("changeFromQuantity")
    if not new_only:
        allowed_entry.add("compareQuantity")
    for i, q in enumerate(quantities):
        if not isinstance(q, dict):
            raise _variable_problem(["quantities", i], "Expected an InventoryQuantityInput object", raw)
        for key in q:
            if key not in allowed_entry:
                raise _variable_problem(["quantities", i, key], "Field is not defined on InventoryQuantityInput", raw)
        for key in ("inventoryItemId", "locationId", "quantity"):
            if q.get(key) is None:
                raise _variable_problem(["quantities", i, key], "Expected value to not be null", raw)
        if not isinstance(q["inventoryItemId"], str) or not isinstance(q["locationId"], str):
            raise _variable_problem(["quantities", i, "inventoryItemId"], "Could not coerce value to ID", raw)
        for key in ("quantity", "changeFromQuantity", "compareQuantity"):
            v = q.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise _variable_problem(["quantities", i, key], "Could not coerce value to Int", raw)
            if v is not None and abs(v) > 2**31 - 1:
                raise _variable_problem(["quantities", i, key], "Int out of 32-bit range", raw)
    return raw


def _canonical_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _parse_operation(query: str, variables: dict[str, Any], version: str) -> _Operation:
    text = _strip_comments(query)
    root = _root_field(text, variables)
    names_args = _nested_args(text, "quantities", variables)
    names = ["available"]
    if names_args is not None and "names" in names_args:
        names = names_args["names"]
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _QueryError("Argument 'names' on 'quantities' must be a list of strings", "BAD_REQUEST")
        bad = [n for n in names if n not in QUANTITY_NAMES]
        if bad:
            raise _QueryError(f"Invalid quantity name(s): {', '.join(bad)}", "BAD_REQUEST")

    levels_args = _nested_args(text, "inventoryLevels", variables)
    levels = None
    if levels_args is not None:
        _int_arg(levels_args, "first", "inventoryLevels")
        _str_arg(levels_args, "after", "inventoryLevels")
        levels = levels_args

    if root.op_type == "mutation":
        if root.name != "inventorySetQuantities":
            raise _QueryError(
                f"Field '{root.name}' doesn't exist on type 'Mutation' in this simulator "
                "(it answers inventorySetQuantities)",
                "UNSUPPORTED_OPERATION",
            )
        raw_input = _validate_set_input(root.args.get("input"), version)
        key = None
        if "idempotent" in root.directives:
            key = root.directives["idempotent"].get("key")
            if not isinstance(key, str) or not key.strip():
                raise _QueryError("The @idempotent directive needs a non-empty string key", "BAD_REQUEST")
            if len(key) > 255:
                raise _QueryError("Idempotency keys are at most 255 characters", "BAD_REQUEST")
        elif _version_at_least(version, _IDEMPOTENCY_REQUIRED_SINCE):
            raise _QueryError(
                "The @idempotent directive is required for inventorySetQuantities from API version "
                f"{_IDEMPOTENCY_REQUIRED_SINCE}",
                "IDEMPOTENCY_KEY_REQUIRED",
            )
        return _Operation(
            kind="set",
            root=root,
            requested_cost=MUTATION_COST,
            version=version,
            idem_key=key,
            input=raw_input,
            input_hash=_canonical_hash(raw_input),
        )

    per_item = 1 + _levels_request_cost(levels)
    if root.name == "inventoryItem":
        if not isinstance(root.args.get("id"), str):
            raise _QueryError("Argument 'id' on Field 'inventoryItem' is required (ID!)", "BAD_REQUEST")
        return _Operation("item", root, per_item, version, levels, names)
    if root.name == "nodes":
        ids = root.args.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _QueryError("Argument 'ids' on Field 'nodes' must be a list of IDs", "BAD_REQUEST")
        if len(ids) > MAX_INPUT_ARRAY:
            raise _QueryError(
                f"The input array size of {len(ids)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}.",
                "MAX_INPUT_SIZE_EXCEEDED",
                path=["nodes", "ids"],
            )
        return _Operation("nodes", root, len(ids) * per_item, version, levels, names)
    if root.name == "inventoryItems":
        first = _int_arg(root.args, "first", "inventoryItems")
        _str_arg(root.args, "after", "inventoryItems")
        _str_arg(root.args, "query", "inventoryItems")
        return _Operation("items", root, 2 + first * per_item, version, levels, names)
    if root.name == "locations":
        first = _int_arg(root.args, "first", "locations")
        _str_arg(root.args, "after", "locations")
        return _Operation("locations", root, 2 + first, version, levels, names)
    raise _QueryError(
        f"Field '{root.name}' is not supported by the simulator (it answers inventoryItem, nodes, "
        "inventoryItems, locations and the inventorySetQuantities mutation)",
        "UNSUPPORTED_OPERATION",
    )


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"last_id": last_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return int(json.loads(base64.urlsafe_b64decode(padded))["last_id"])
    except Exception:  # any malformed cursor is the caller's error, not ours
        raise _QueryError(f"Invalid cursor for pagination: {cursor!r}", "BAD_REQUEST") from None


# ------------------------------------------------------------------------------- state


class SimulatorState:
    """The simulated shop: catalogue, levels, buckets, idempotency keys, counters.

    Thread-safe: the server runs in its own thread (and event loop) while tests inspect
    and mutate the state from theirs, so every access goes through one lock. Critical
    sections never await.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.limits = self.config.limits()
        self.faults = msgspec.structs.replace(self.config.faults)  # runtime copy
        self.webhook_url = self.config.webhook_url
        self.webhook_secret = self.config.webhook_secret
        self._lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        self._clock = time.monotonic
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.reset()

    def _reset_unlocked(self) -> None:
        self._items: dict[int, _Item] = {}
        self._locations: dict[int, _Location] = {}
        self._levels: dict[tuple[int, int], _Level] = {}
        self._buckets: dict[str, _LeakyBucket] = {}
        self._idem: dict[str, _IdempotencyRecord] = {}
        self._history: list[SetRecord] = []
        self._stats = SimulatorStats()
        self._next_item = 40001
        self._next_location = 7001
        self._next_group = 1

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
            if self.config.catalog_items > 0:
                self.seed_catalog(
                    self.config.catalog_items, self.config.catalog_locations, self.config.catalog_available
                )

    def add_location(self, name: str | None = None, id: int | None = None, active: bool = True) -> str:
        with self._lock:
            loc_id = int(id) if id is not None else self._next_location
            self._next_location = max(self._next_location, loc_id + 1)
            self._locations[loc_id] = _Location(loc_id, name or f"Location {loc_id}", active)
            return location_gid(loc_id)

    def add_item(self, sku: str, id: int | None = None, mutable: bool = True) -> str:
        with self._lock:
            item_id = int(id) if id is not None else self._next_item
            self._next_item = max(self._next_item, item_id + 1)
            self._items[item_id] = _Item(item_id, sku, mutable)
            return item_gid(item_id)

    def stock(
        self,
        item: int | str,
        location: int | str,
        available: int = 0,
        **other_quantities: int,
    ) -> None:
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
            level.quantities["on_hand"] = int(available) + sum(level.quantities[p] for p in _ON_HAND_PARTS)
            self._levels[(i, loc)] = level

    def unstock(self, item: int | str, location: int | str) -> None:
        with self._lock:
            self._levels.pop((self._ref(item, "InventoryItem"), self._ref(location, "Location")), None)

    def seed_catalog(
        self,
        n_items: int,
        n_locations: int = 2,
        available: int = 10,
        sku_prefix: str = "SKU-",
    ) -> tuple[list[str], list[str]]:
        """Create ``n_locations`` locations and ``n_items`` items stocked everywhere."""
        locations = [self.add_location(f"Location {k + 1}") for k in range(n_locations)]
        items = []
        for k in range(n_items):
            gid = self.add_item(f"{sku_prefix}{k + 1:05d}")
            for loc in locations:
                self.stock(gid, loc, available)
            items.append(gid)
        return items, locations

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Seed from JSON: ``{"reset": bool, "locations": [{"id"?, "name"?}],
        "items": [{"id"?, "sku", "mutable"?}], "levels": [{"inventory_item_id",
        "location_id", "available", "committed"?, ...}], "catalog": {"items": n,
        "locations": m, "available": k}}``. Ids may be numbers or GIDs."""
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
                out["items"].append(self.add_item(it["sku"], item_id, bool(it.get("mutable", True))))
            for lv in spec.get("levels") or []:
                extra = {k: v for k, v in lv.items() if k in _ON_HAND_PARTS or k == "incoming"}
                self.stock(lv["inventory_item_id"], lv["location_id"], int(lv.get("available", 0)), **extra)
                out["levels"] += 1
            cat = spec.get("catalog")
            if cat:
                items, locs = self.seed_catalog(
                    int(cat.get("items", 10)),
                    int(cat.get("locations", 2)),
                    int(cat.get("available", 10)),
                    str(cat.get("sku_prefix", "SKU-")),
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
            known = set(FaultConfig.__struct_fields__)
            unknown = set(changes) - known
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

    def _bucket(self, token: str) -> _LeakyBucket:
        now = self._clock()
        b = self._buckets.get(token)
        if b is None:
            b = self._buckets[token] = _LeakyBucket(self.limits.bucket_size, self.limits.restore_rate, now)
        b.refill(now)
        return b

    def _observe_level(self, value: float) -> None:
        s = self._stats
        s.min_available = value if s.min_available is None else min(s.min_available, value)
        if value < 0:
            s.max_overdraw = max(s.max_overdraw, -value)

    def admit(self, token: str, cost: int) -> tuple[bool, dict[str, Any]]:
        """Reserve ``cost`` points or refuse (THROTTLED). Returns (admitted, throttleStatus)."""
        with self._lock:
            b = self._bucket(token)
            forced = self.faults.throttle_all or self.faults.force_throttle > 0
            if self.faults.force_throttle > 0:
                self.faults.force_throttle -= 1
            if forced or cost > b.available:
                self._stats.throttled += 1
                return False, b.status()
            b.available -= cost
            self._observe_level(b.available)
            return True, b.status()

    def settle(self, token: str, requested: int, actual: int) -> dict[str, Any]:
        """Refund the unused part of a reservation; returns the throttleStatus to report."""
        with self._lock:
            b = self._bucket(token)
            b.available = min(b.capacity, b.available + max(0, requested - actual))
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
            timeout = f.timeout_rate > 0 and self._rng.random() < f.timeout_rate
            latency = max(0.0, f.latency_ms + (self._rng.uniform(-1, 1) * f.latency_jitter_ms)) / 1000.0
            return error, timeout, latency

    # ---- idempotency ------------------------------------------------------------------

    def _expire_keys(self, now: float) -> None:
        ttl = self.config.idempotency_ttl_s
        if len(self._idem) > 1000 and self._rng.random() < 0.01:
            for k in [k for k, r in self._idem.items() if now - r.created > ttl]:
                del self._idem[k]

    def idempotency_begin(self, key: str, input_hash: str) -> dict[str, Any] | None:
        """Claim ``key`` for a new request, or return the payload to answer instead."""
        with self._lock:
            now = self._clock()
            self._expire_keys(now)
            rec = self._idem.get(key)
            if rec is not None and now - rec.created > self.config.idempotency_ttl_s:
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
            return {"inventoryAdjustmentGroup": None, "userErrors": [_user_error(code, None, msg)]}

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

    # ---- execution ---------------------------------------------------------------------

    def execute_set(self, op: _Operation) -> tuple[dict[str, Any], list[tuple[int, int]]]:
        """Validate and apply ``inventorySetQuantities``: all entries or none.

        Returns the payload and the changed (item, location) levels (for webhooks).
        """
        inp = op.input or {}
        version = op.version
        with self._lock:
            self._stats.mutations += 1
            errors: list[dict[str, Any]] = []
            name = inp["name"]
            if name not in SETTABLE_NAMES:
                errors.append(_user_error("INVALID_NAME", ["input", "name"], "The quantity name must be either 'available' or 'on_hand'."))
            if inp["reason"] not in ALLOWED_REASONS:
                errors.append(_user_error("INVALID_REASON", ["input", "reason"], "The specified reason is invalid."))
            ref = inp.get("referenceDocumentUri")
            if ref is not None and not _URI_RE.match(ref):
                errors.append(
                    _user_error(
                        "INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"], "The specified reference document is invalid."
                    )
                )
            ignore_compare = bool(inp.get("ignoreCompareQuantity"))
            new_required = _version_at_least(version, _CHANGE_FROM_REQUIRED_SINCE)
            seen: set[tuple[int, int]] = set()
            plan: list[tuple[int, _Level, int]] = []  # (index, level, target)
            for i, q in enumerate(inp["quantities"]):
                path = ["input", "quantities", str(i)]
                item_id = loc_id = None
                try:
                    item_id = parse_gid(q["inventoryItemId"], "InventoryItem")[1]
                except GidError:
                    pass
                if item_id is None or item_id not in self._items:
                    errors.append(_user_error("INVALID_INVENTORY_ITEM", [*path, "inventoryItemId"], "The specified inventory item could not be found."))
                    item_id = None
                try:
                    loc_id = parse_gid(q["locationId"], "Location")[1]
                except GidError:
                    pass
                if loc_id is None or loc_id not in self._locations:
                    errors.append(_user_error("INVALID_LOCATION", [*path, "locationId"], "The specified location could not be found."))
                    loc_id = None
                quantity = q["quantity"]
                if quantity < 0:
                    errors.append(_user_error("INVALID_QUANTITY_NEGATIVE", [*path, "quantity"], "The quantity can't be negative."))
                elif quantity > MAX_QUANTITY:
                    errors.append(
                        _user_error("INVALID_QUANTITY_TOO_HIGH", [*path, "quantity"], "The total quantity can't be higher than 1,000,000,000.")
                    )
                if item_id is None or loc_id is None:
                    continue
                if (item_id, loc_id) in seen:
                    errors.append(
                        _user_error(
                            "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
                            [*path, "locationId"],
                            "The combination of inventoryItemId and locationId must be unique.",
                        )
                    )
                    continue
                seen.add((item_id, loc_id))
                if not self._items[item_id].mutable:
                    errors.append(
                        _user_error(
                            "NON_MUTABLE_INVENTORY_ITEM",
                            [*path, "inventoryItemId"],
                            "The specified inventory item is not allowed to be adjusted via API.",
                        )
                    )
                    continue
                level = self._levels.get((item_id, loc_id))
                if level is None:
                    errors.append(
                        _user_error(
                            "ITEM_NOT_STOCKED_AT_LOCATION",
                            [*path, "locationId"],
                            "The specified inventory item is not stocked at the location.",
                        )
                    )
                    continue
                if name not in SETTABLE_NAMES:
                    continue
                current = level.quantities[name]
                if "changeFromQuantity" in q:
                    expected = q["changeFromQuantity"]
                    if expected is not None and expected != current:
                        errors.append(
                            _user_error(
                                "CHANGE_FROM_QUANTITY_STALE",
                                [*path, "changeFromQuantity"],
                                "The changeFromQuantity value does not match persisted value.",
                            )
                        )
                        continue
                elif new_required:
                    errors.append(
                        _user_error(
                            "CHANGE_FROM_QUANTITY_REQUIRED",
                            [*path, "changeFromQuantity"],
                            "changeFromQuantity must be given for each quantity (null to skip the check).",
                        )
                    )
                    continue
                elif not ignore_compare:
                    expected = q.get("compareQuantity")
                    if expected is None:
                        errors.append(
                            _user_error(
                                "COMPARE_QUANTITY_REQUIRED",
                                [*path, "compareQuantity"],
                                "The compareQuantity argument must be given to each quantity or ignored using ignoreCompareQuantity.",
                            )
                        )
                        continue
                    if expected != current:
                        errors.append(
                            _user_error(
                                "COMPARE_QUANTITY_STALE",
                                [*path, "compareQuantity"],
                                "The compareQuantity value does not match persisted value.",
                            )
                        )
                        continue
                plan.append((i, level, quantity))

            if errors:
                self._stats.mutations_rejected += 1
                return {"inventoryAdjustmentGroup": None, "userErrors": errors}, []

            group_id = f"gid://shopify/InventoryAdjustmentGroup/{self._next_group}"
            self._next_group += 1
            changes: list[dict[str, Any]] = []
            changed: list[tuple[int, int]] = []
            at = _now_iso()
            for _i, level, target in plan:
                before = level.quantities[name]
                delta = level.set(name, target)
                self._stats.quantities_applied += 1
                self._history.append(
                    SetRecord(
                        seq=len(self._history) + 1,
                        at=at,
                        source="api",
                        inventory_item_id=item_gid(level.item_id),
                        location_id=location_gid(level.location_id),
                        name=name,
                        before=before,
                        after=target,
                        delta=delta,
                        idempotency_key=op.idem_key,
                        adjustment_group_id=group_id,
                    )
                )
                if delta:
                    changed.append((level.item_id, level.location_id))
                    ref_item = {"id": item_gid(level.item_id)}
                    ref_loc = {"id": location_gid(level.location_id)}
                    # Both names move by the same delta; Shopify lists both.
                    for n in (name, "on_hand" if name == "available" else "available"):
                        changes.append(
                            {
                                "name": n,
                                "delta": delta,
                                "quantityAfterChange": level.quantities[n],
                                "item": ref_item,
                                "location": ref_loc,
                            }
                        )
            group = None
            if changes:
                group = {
                    "id": group_id,
                    "createdAt": at,
                    "reason": inp["reason"],
                    "referenceDocumentUri": ref,
                    "changes": changes,
                }
            return {"inventoryAdjustmentGroup": group, "userErrors": []}, changed

    def finish_set(self, op: _Operation, payload: dict[str, Any]) -> None:
        if op.idem_key is None:
            return
        with self._lock:
            rec = self._idem.get(op.idem_key)
            if rec is not None and rec.input_hash == op.input_hash:
                rec.state = "completed"
                rec.payload = payload

    def _levels_connection(self, item_id: int, levels: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], int]:
        first = int(levels["first"])
        after = _decode_cursor(levels.get("after"))
        rows = sorted(
            (loc, lv) for (i, loc), lv in self._levels.items() if i == item_id and loc > after
        )
        page, has_next = rows[:first], len(rows) > first
        edges = []
        for loc, lv in page:
            node = {
                "id": inventory_level_gid(loc, item_id),
                "location": {"id": location_gid(loc), "name": self._locations[loc].name},
                "quantities": [{"name": n, "quantity": lv.quantities[n]} for n in names],
                "updatedAt": lv.updated_at,
            }
            edges.append({"cursor": _cursor(loc), "node": node})
        conn = {
            "edges": edges,
            "nodes": [e["node"] for e in edges],
            "pageInfo": {
                "hasNextPage": has_next,
                "hasPreviousPage": after > 0,
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
            },
        }
        return conn, 2 + len(page) * LEVEL_NODE_COST

    def _item_node(self, item_id: int, op: _Operation) -> tuple[dict[str, Any] | None, int]:
        item = self._items.get(item_id)
        if item is None:
            return None, 0
        node: dict[str, Any] = {"__typename": "InventoryItem", "id": item_gid(item_id), "sku": item.sku, "tracked": True}
        cost = 1
        if op.levels is not None:
            node["inventoryLevels"], c = self._levels_connection(item_id, op.levels, op.names)
            cost += c
        return node, cost

    def execute_query(self, op: _Operation) -> tuple[dict[str, Any], int]:
        """Run a read operation; returns (data, actual cost)."""
        with self._lock:
            self._stats.queries += 1
            key = op.root.response_key
            args = op.root.args
            if op.kind == "item":
                try:
                    item_id = parse_gid(args["id"], "InventoryItem")[1]
                except GidError:
                    raise _QueryError(f"Invalid global id '{args['id']}'", "BAD_REQUEST") from None
                node, cost = self._item_node(item_id, op)
                return {key: node}, cost
            if op.kind == "nodes":
                out, total = [], 0
                for gid in args["ids"]:
                    try:
                        type_name, n = parse_gid(gid)
                    except GidError:
                        raise _QueryError(f"Invalid global id '{gid}'", "BAD_REQUEST") from None
                    if type_name == "InventoryItem":
                        node, cost = self._item_node(n, op)
                    elif type_name == "Location" and n in self._locations:
                        loc = self._locations[n]
                        node, cost = {"__typename": "Location", "id": location_gid(n), "name": loc.name, "isActive": loc.active}, 1
                    else:
                        node, cost = None, 0
                    out.append(node)
                    total += cost
                return {key: out}, total
            if op.kind == "items":
                first = int(args["first"])
                after = _decode_cursor(args.get("after"))
                skus = set(re.findall(r"\bsku:\"?([^\s\"]+)\"?", args.get("query") or ""))
                rows = [
                    i for i in sorted(self._items) if i > after and (not skus or self._items[i].sku in skus)
                ]
                page, has_next = rows[:first], len(rows) > first
                edges, total = [], 2
                for i in page:
                    node, cost = self._item_node(i, op)
                    edges.append({"cursor": _cursor(i), "node": node})
                    total += cost
                return {key: self._connection(edges, has_next, after)}, total
            if op.kind == "locations":
                first = int(args["first"])
                after = _decode_cursor(args.get("after"))
                rows = [i for i in sorted(self._locations) if i > after]
                page, has_next = rows[:first], len(rows) > first
                edges = [
                    {
                        "cursor": _cursor(i),
                        "node": {"id": location_gid(i), "name": self._locations[i].name, "isActive": self._locations[i].active},
                    }
                    for i in page
                ]
                return {key: self._connection(edges, has_next, after)}, 2 + len(page)
            raise _QueryError(f"unsupported operation {op.kind}", "UNSUPPORTED_OPERATION")  # pragma: no cover

    @staticmethod
    def _connection(edges: list[dict[str, Any]], has_next: bool, after: int) -> dict[str, Any]:
        return {
            "edges": edges,
            "nodes": [e["node"] for e in edges],
            "pageInfo": {
                "hasNextPage": has_next,
                "hasPreviousPage": after > 0,
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
            },
        }

    # ---- external writer ---------------------------------------------------------------

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
        there is no stocked level.
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
            self._history.append(
                SetRecord(
                    seq=len(self._history) + 1,
                    at=_now_iso(),
                    source="external",
                    inventory_item_id=item_gid(key[0]),
                    location_id=location_gid(key[1]),
                    name="available",
                    before=before,
                    after=available,
                    delta=d,
                )
            )
            return key

    def level_webhook_body(self, item_id: int, location_id: int) -> dict[str, Any] | None:
        with self._lock:
            level = self._levels.get((item_id, location_id))
            if level is None:
                return None
            return {
                "inventory_item_id": item_id,
                "location_id": location_id,
                "available": level.quantities["available"],
                "updated_at": level.updated_at,
                "admin_graphql_api_id": inventory_level_gid(location_id, item_id),
            }

    def _record_delivery(self, d: WebhookDelivery) -> None:
        with self._lock:
            self.webhook_deliveries.append(d)
            if d.ok:
                self._stats.webhooks_sent += 1
            else:
                self._stats.webhooks_failed += 1

    def random_draw(self) -> float:
        with self._lock:
            return self._rng.random()


# ------------------------------------------------------------------------------ webhooks


def sign_webhook(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256(secret, raw body)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class _WebhookSender:
    """Delivers webhooks from the simulator's event loop (one shared httpx client)."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.state.config.webhook_timeout_s)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def spawn(self, coro: Any) -> None:
        # Keep a reference: the loop only holds weak references to tasks.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def level_update(self, item_id: int, location_id: int) -> WebhookDelivery | None:
        body = self.state.level_webhook_body(item_id, location_id)
        url = self.state.webhook_url
        if body is None or not url:
            return None
        delivery = await self.deliver("inventory_levels/update", body)
        if self.state.faults.webhook_duplicate_rate > 0 and self.state.random_draw() < self.state.faults.webhook_duplicate_rate:
            await self.deliver("inventory_levels/update", body, webhook_id=delivery.webhook_id if delivery else None)
        return delivery

    async def deliver(self, topic: str, body: dict[str, Any], webhook_id: str | None = None) -> WebhookDelivery | None:
        url, secret = self.state.webhook_url, self.state.webhook_secret
        if not url:
            return None
        if self._client is None:  # app used without lifespan (e.g. a bare TestClient)
            await self.start()
        assert self._client is not None
        raw = json.dumps(body, separators=(",", ":")).encode()
        webhook_id = webhook_id or str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sign_webhook(secret, raw),
            "X-Shopify-Shop-Domain": self.state.config.shop_domain,
            "X-Shopify-API-Version": self.state.config.api_version,
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": _now_iso(),
        }
        status: int | None = None
        error: str | None = None
        attempts = 0
        max_attempts = max(1, self.state.config.webhook_max_attempts)
        while attempts < max_attempts:
            attempts += 1
            try:
                resp = await self._client.post(url, content=raw, headers=headers)
                status, error = resp.status_code, None
                if 200 <= status < 300:
                    break
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempts < max_attempts:
                await asyncio.sleep(self.state.config.webhook_retry_backoff_s * 2 ** (attempts - 1))
        ok = status is not None and 200 <= status < 300
        delivery = WebhookDelivery(
            webhook_id=webhook_id, topic=topic, url=url, attempts=attempts, status=status, ok=ok, body=body, error=error
        )
        self.state._record_delivery(delivery)
        if not ok:
            log.warning("webhook %s to %s failed after %d attempt(s): %s", topic, url, attempts, error or status)
        return delivery


# ----------------------------------------------------------------------------------- app


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers)


def _cost_ext(requested: int | None, actual: int | None, status: dict[str, Any]) -> dict[str, Any]:
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}}


def _sim(request: Request[Any, Any, Any]) -> SimulatorState:
    return request.app.state.sim


def _sender(request: Request[Any, Any, Any]) -> _WebhookSender:
    return request.app.state.webhooks


async def _read_json(request: Request[Any, Any, Any]) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    return msgspec.json.decode(raw)


@post("/admin/api/{version:str}/graphql.json", status_code=200)
async def graphql_endpoint(request: Request[Any, Any, Any], version: FromPath[str]) -> Response[bytes]:
    state, sender = _sim(request), _sender(request)
    token = request.headers.get("x-shopify-access-token")
    if not state.token_valid(token):
        state.count_call(authorized=False)
        return _json(_AUTH_ERROR, 401)
    assert token is not None
    if not _VERSION_RE.match(version):
        return _json({"errors": "Not Found"}, 404)
    try:
        payload = await _read_json(request)
    except msgspec.DecodeError:
        return _json({"errors": {"query": "Required parameter missing or invalid"}}, 400)
    query = payload.get("query") if isinstance(payload, dict) else None
    variables = payload.get("variables") if isinstance(payload, dict) else None
    if variables is None:
        variables = {}
    if not isinstance(query, str) or not query.strip() or not isinstance(variables, dict):
        return _json({"errors": {"query": "Required parameter missing or invalid"}}, 400)
    state.count_call(authorized=True)

    error_status, hold_answer, latency = state.draw_faults()
    try:
        op = _parse_operation(query, variables, version)
    except _QueryError as exc:
        state.count("graphql_errors")
        return _json({"errors": [exc.to_error()], "extensions": _cost_ext(0, 0, state.bucket_status(token))})

    if error_status is not None:
        state.count("injected_errors")
        if op.kind == "set" and op.idem_key and state.faults.error_marks_key_failed:
            state.idempotency_failed_attempt(op.idem_key, op.input_hash or "")
        text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        return _json({"errors": text.get(error_status, "Server Error")}, error_status)

    requested = op.requested_cost
    if requested > state.config.max_query_cost:
        state.count("max_cost_exceeded")
        err = {
            "message": f"Query cost is {requested}, which exceeds the single query max cost limit "
            f"({state.config.max_query_cost}).",
            "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": state.config.max_query_cost},
        }
        return _json({"errors": [err], "extensions": _cost_ext(requested, None, state.bucket_status(token))})

    admitted, throttle_status = state.admit(token, requested)
    if not admitted:
        body = {
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": _cost_ext(requested, None, throttle_status),
        }
        status_code = state.config.throttle_http_status
        headers = None
        if status_code == 429:
            wait = max(0.0, (requested - throttle_status["currentlyAvailable"]) / throttle_status["restoreRate"])
            headers = {"Retry-After": f"{max(1.0, math.ceil(wait)):.1f}"}
        return _json(body, status_code, headers)

    actual = 0
    try:
        if op.kind == "set":
            data, actual = await _run_set(state, sender, op, latency)
        else:
            if latency:
                await asyncio.sleep(latency)
            try:
                data, actual = state.execute_query(op)
            except _QueryError as exc:
                actual = 1
                state.count("graphql_errors")
                final = state.settle(token, requested, actual)
                return _json({"errors": [exc.to_error()], "extensions": _cost_ext(requested, actual, final)})
    except BaseException:
        state.settle(token, requested, 0)
        raise
    final_status = state.settle(token, requested, actual)
    body = {"data": data, "extensions": _cost_ext(requested, actual, final_status)}
    if hold_answer:
        # The work is done; only the answer is late (beyond the client's timeout).
        state.count("injected_timeouts")
        await asyncio.sleep(state.faults.timeout_s)
    return _json(body)


async def _run_set(
    state: SimulatorState, sender: _WebhookSender, op: _Operation, latency: float
) -> tuple[dict[str, Any], int]:
    key = op.root.response_key
    if op.idem_key is not None:
        earlier = state.idempotency_begin(op.idem_key, op.input_hash or "")
        if earlier is not None:
            return {key: earlier}, MUTATION_COST
    try:
        if latency:
            await asyncio.sleep(latency)  # the window in which the key is "in flight"
        payload, changed = state.execute_set(op)
    except BaseException:
        if op.idem_key is not None:
            state.idempotency_fail_claim(op.idem_key, op.input_hash or "")
        raise
    state.finish_set(op, payload)
    if changed and state.config.echo_api_writes and state.webhook_url:
        for item_id, loc_id in changed:
            sender.spawn(sender.level_update(item_id, loc_id))
    return {key: payload}, MUTATION_COST


# ---- sim-only admin endpoints ------------------------------------------------------------


@post("/_sim/seed", status_code=200)
async def sim_seed(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        spec = await _read_json(request)
        return _json(_sim(request).seed(spec))
    except (msgspec.DecodeError, ValueError, KeyError, TypeError, GidError) as exc:
        return _json({"error": f"bad seed: {exc}"}, 400)


@get("/_sim/levels")
async def sim_levels(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json({"levels": _sim(request).levels_detail()})


@get("/_sim/stats")
async def sim_stats(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = _sim(request)
    return _json({"stats": state.stats, "bucket": state.bucket_status(), "plan": state.limits})


@get("/_sim/history")
async def sim_history(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json({"history": _sim(request).history})


@get("/_sim/faults")
async def sim_faults_get(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json(_sim(request).faults)


@post("/_sim/faults", status_code=200)
async def sim_faults(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        changes = await _read_json(request)
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        return _json(_sim(request).set_faults(**changes))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return _json({"error": f"bad faults: {exc}"}, 400)


@post("/_sim/webhook", status_code=200)
async def sim_webhook(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        body = await _read_json(request)
        url, secret = body.get("url"), body.get("secret")
        if url is not None and not isinstance(url, str) or secret is not None and not isinstance(secret, str):
            raise ValueError("url and secret must be strings")
    except (msgspec.DecodeError, ValueError, AttributeError) as exc:
        return _json({"error": f"bad webhook config: {exc}"}, 400)
    _sim(request).configure_webhook(url, secret)
    return _json({"url": url})


@post("/_sim/external-change", status_code=200)
async def sim_external_change(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, sender = _sim(request), _sender(request)
    try:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        changed = state.external_change(
            body.get("inventory_item_id"), body.get("location_id"), body.get("available"), body.get("delta")
        )
    except (msgspec.DecodeError, ValueError, KeyError, TypeError, GidError) as exc:
        return _json({"error": f"bad external change: {exc}"}, 400)
    if changed is None:
        return _json({"error": "no stocked level to change"}, 409)
    delivery = await sender.level_update(*changed)
    return _json({"change": state.level_webhook_body(*changed), "webhook": delivery})


@post("/_sim/reset", status_code=200)
async def sim_reset(request: Request[Any, Any, Any]) -> Response[bytes]:
    _sim(request).reset()
    return _json({"reset": True})


async def _external_writer_loop(state: SimulatorState, sender: _WebhookSender) -> None:
    """Background "someone else edits stock" process, driven by the fault knob."""
    while True:
        interval = state.faults.external_writer_interval_s
        if interval <= 0:
            await asyncio.sleep(0.2)  # knob off: poll for it to be switched on
            continue
        await asyncio.sleep(interval)
        if state.faults.external_writer_interval_s <= 0:
            continue  # switched off while we slept: no last change after "off"
        try:
            changed = state.external_change()
            if changed is not None:
                await sender.level_update(*changed)
        except Exception:  # keep the writer alive whatever one change does
            log.exception("external writer change failed")


def create_app(config: SimulatorConfig | None = None, state: SimulatorState | None = None) -> Litestar:
    """Build the simulator app. The state is at ``app.state.sim`` (a :class:`SimulatorState`)."""
    config = config or (state.config if state else SimulatorConfig())
    sim_state = state or SimulatorState(config)
    sender = _WebhookSender(sim_state)
    background: list[asyncio.Task[Any]] = []

    async def on_startup() -> None:
        await sender.start()
        background.append(asyncio.get_running_loop().create_task(_external_writer_loop(sim_state, sender)))

    async def on_shutdown() -> None:
        for t in background:
            t.cancel()
        for t in background:
            with contextlib.suppress(BaseException):
                await t
        background.clear()
        await sender.stop()

    return Litestar(
        route_handlers=[
            graphql_endpoint,
            sim_seed,
            sim_levels,
            sim_stats,
            sim_history,
            sim_faults_get,
            sim_faults,
            sim_webhook,
            sim_external_change,
            sim_reset,
        ],
        state=State({"sim": sim_state, "webhooks": sender}),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        openapi_config=None,
        logging_config=None,  # leave the host process's logging alone
        debug=False,
    )


# ------------------------------------------------------------------------------ serving


def run_simulator(host: str, port: int, config: SimulatorConfig) -> None:
    """Serve the simulator with uvicorn until interrupted (blocking)."""
    app = create_app(config)
    limits = config.limits()
    log.warning(
        "Shopify simulator on http://%s:%d/admin/api/%s/graphql.json (token %s, plan %s: %.0f pts/s, bucket %.0f)",
        host,
        port,
        config.api_version,
        config.access_token,
        config.plan,
        limits.restore_rate,
        limits.bucket_size,
    )
    if config.catalog_items:
        log.warning(
            "seeded %d items x %d locations (available %d)",
            config.catalog_items,
            config.catalog_locations,
            config.catalog_available,
        )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


class SimulatorServer:
    """Run the simulator in a background thread on a free port (for tests and demos).

    ``with SimulatorServer(config) as sim:`` starts it and yields the server, which
    exposes ``base_url`` (e.g. ``http://127.0.0.1:54321``), ``state``
    (:class:`SimulatorState`) and ``graphql_url(version)``. ``start()`` returns the base
    URL for callers that do not use the context manager.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state: SimulatorState | None = None,
    ) -> None:
        self.config = config or (state.config if state else SimulatorConfig())
        self.state = state or SimulatorState(self.config)
        self.host = host
        self.port = port
        self.app = create_app(self.config, self.state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            return self.base_url
        uv = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(uv)
        thread = threading.Thread(target=server.run, name="shopify-simulator", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("Shopify simulator failed to start")
            time.sleep(0.01)
        sock = server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._server, self._thread = server, thread
        return self.base_url

    def graphql_url(self, version: str | None = None) -> str:
        return f"{self.base_url}/admin/api/{version or self.config.api_version}/graphql.json"

    def request_stop(self) -> None:
        """Ask the server to shut down without waiting (see :meth:`stop`)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down and wait for the server thread to end."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(min(timeout, 2.0))
        if self._thread.is_alive():
            # Requests may still be sleeping in a timeout fault: stop waiting for them.
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- CLI


def _build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adapters.shopify.simulator",
        description="Local simulator of the Shopify GraphQL Admin API (inventory).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--plan", choices=sorted(PLANS), default="standard")
    p.add_argument("--restore-rate", type=float, default=None, help="points/s (overrides --plan)")
    p.add_argument("--bucket-size", type=float, default=None, help="bucket size (overrides --plan)")
    p.add_argument("--token", default=SimulatorConfig().access_token, help="accepted X-Shopify-Access-Token")
    p.add_argument("--api-version", default="2026-04", help="version announced in webhooks")
    p.add_argument("--shop-domain", default=SimulatorConfig().shop_domain)
    p.add_argument("--throttle-status", type=int, choices=[200, 429], default=200)
    p.add_argument("--webhook-url", default=None, help="where inventory_levels/update webhooks go")
    p.add_argument("--webhook-secret", default=SimulatorConfig().webhook_secret)
    p.add_argument("--no-echo-api-writes", action="store_true", help="do not announce the app's own writes")
    p.add_argument("--seed-items", type=int, default=0, help="seed N items stocked at every location")
    p.add_argument("--seed-locations", type=int, default=2)
    p.add_argument("--initial-available", type=int, default=10)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-jitter-ms", type=float, default=0.0)
    p.add_argument("--timeout-rate", type=float, default=0.0)
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.add_argument("--external-writer-interval", type=float, default=0.0, help="seconds between external changes")
    p.add_argument("--seed", type=int, default=0, help="RNG seed for faults")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        access_token=args.token,
        plan=args.plan,
        restore_rate=args.restore_rate,
        bucket_size=args.bucket_size,
        throttle_http_status=args.throttle_status,
        shop_domain=args.shop_domain,
        api_version=args.api_version,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        echo_api_writes=not args.no_echo_api_writes,
        seed=args.seed,
        catalog_items=args.seed_items,
        catalog_locations=args.seed_locations,
        catalog_available=args.initial_available,
        faults=FaultConfig(
            error_rate=args.error_rate,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            timeout_rate=args.timeout_rate,
            timeout_s=args.timeout_s,
            external_writer_interval_s=args.external_writer_interval,
        ),
    )


def main(argv: list[str] | None = None) -> None:
    args = _build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_simulator(args.host, args.port, config_from_args(args))


if __name__ == "__main__":
    main()
