"""Request and response bodies of the HTTP API that are not domain types already.

Availability answers, explanations, reservations, rules, locations and channels are the
domain's own msgspec structs (availability/domain); this module adds what only the API
needs: batch envelopes, write bodies with an audit `reason`, preview and event reports.
Bounds are declared here (msgspec `Meta`) so oversized input is refused while decoding
and documented in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from availability.domain.ats import ChannelAvailability
from availability.domain.reservations import (
    MAX_LINES,
    MAX_TTL_SECONDS,
    NO_EXPIRY,
    ReservationLine,
    ReservationRequest,
)
from availability.domain.rules import Channel, Location, LocationType, Rule, RuleKind

#: what a SKU may hold: the ledger keys on it ({} would break the Redis Cluster hash tag, | is
#: the ledger's separator), so no braces, bars or control characters
SKU_PATTERN = "^[^{}|\\x00-\\x1f\\x7f]+$"
#: location codes, as domain.events.is_location_code has them
LOCATION_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,63}$"

#: RFC 3339 exactly as msgspec reads it (a missing offset is taken as UTC by the ledger): real
#: calendar dates only (years 0001-9999, Feb 29 in leap years), 00-23:00-59:00-59 (no leap
#: second), any number of fractional digits, offsets up to +-23:59 with or without the colon.
_YEAR = r"(?:000[1-9]|00[1-9]\d|0[1-9]\d{2}|[1-9]\d{3})"
_LEAP_YEAR = r"(?:\d{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01]\d|2[0-3]):?[0-5]\d)"
DATETIME_PATTERN = rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)[Tt ]{_TIME}{_OFFSET}?$"
#: what Python's str.isspace() calls whitespace, spelled out: `\s` means less in ECMA regexes
#: (OpenAPI clients, schemathesis) than in Python's, so neither is used
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: master-data keys (channel names, location groups): not empty, no surrounding whitespace, no
#: control characters (the rule store's _check_key, plus what a path segment can carry)
NAME_PATTERN = rf"^[^{_SPACE}\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^{_SPACE}\x00-\x1f\x7f])?$"
#: an If-Match naming a rule version (its ETag, "3", W/"3") or `*`
IF_MATCH_PATTERN = r'^[ \t]*((W/)?"?[1-9][0-9]{0,14}"?|\*)[ \t]*$'
#: reservation ids: any text but the ledger's separator "|"
RESERVATION_ID_PATTERN = "^[^|]+$"
MAX_BATCH_SKUS = 500

Code = Annotated[str, Meta(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Sku = Annotated[str, Meta(min_length=1, max_length=128, pattern=SKU_PATTERN)]
LocationCode = Annotated[str, Meta(min_length=1, max_length=64, pattern=LOCATION_PATTERN)]
Text = Annotated[str, Meta(max_length=2000)]
Units = Annotated[int, Meta(ge=0, le=1_000_000_000)]
Percent = Annotated[float, Meta(ge=0, le=100)]
Priority = Annotated[int, Meta(ge=-1_000_000_000, le=1_000_000_000)]
Version = Annotated[int, Meta(ge=1, le=2**53)]


# --- availability -------------------------------------------------------------------------------


class BatchRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    #: at most 500 (Settings.batch_max_skus may lower it)
    skus: Annotated[list[Sku], Meta(min_length=1, max_length=MAX_BATCH_SKUS)]
    channel: Code = "online"
    location: Code | None = None
    location_group: Code | None = None


class ReservationLineBody(Struct, forbid_unknown_fields=True):
    sku: Sku
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    #: reserve at this location only; without it the channel's locations are tried by priority
    location: LocationCode | None = None


class ReservationBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """A checkout's request to hold stock: every line or none (domain ReservationRequest)."""

    reservation_id: Annotated[str, Meta(min_length=1, max_length=200, pattern=RESERVATION_ID_PATTERN)]
    channel: Code
    lines: Annotated[list[ReservationLineBody], Meta(min_length=1, max_length=MAX_LINES)]
    #: release the hold automatically after this long unless committed or released; absent =
    #: the service's default TTL (AVAILABILITY_RESERVATION_DEFAULT_TTL_SECONDS), null = never
    ttl_seconds: Annotated[int, Meta(ge=1, le=MAX_TTL_SECONDS)] | None | UnsetType = UNSET

    def to_request(self) -> ReservationRequest:
        return ReservationRequest(
            self.reservation_id,
            self.channel,
            [ReservationLine(line.sku, line.quantity, line.location) for line in self.lines],
            None if self.ttl_seconds is UNSET else NO_EXPIRY if self.ttl_seconds is None else self.ttl_seconds,
        )


class BatchAvailability(Struct, kw_only=True):
    channel: str
    rules_version: int
    items: list[ChannelAvailability]


class Constant(Struct):
    """The benchmark's baseline answer (`/bench/constant`): same framework, no Redis, no rules."""

    sku: str
    channel: str
    ats: int


# --- rules --------------------------------------------------------------------------------------


class RuleBody(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Fields of a rule to create, or the fields to change in an update (others are kept).

    A selector set to "" or null is cleared. `expected_version` (or `version`, or an
    If-Match header) makes an update compare-and-set: a stale one gets 409.
    """

    kind: RuleKind | UnsetType = UNSET
    units: Units | UnsetType = UNSET
    percent: Percent | UnsetType = UNSET
    sku: Annotated[str, Meta(max_length=128)] | None | UnsetType = UNSET
    category: Annotated[str, Meta(max_length=128)] | None | UnsetType = UNSET
    location: Annotated[str, Meta(max_length=128)] | None | UnsetType = UNSET
    location_group: Annotated[str, Meta(max_length=128)] | None | UnsetType = UNSET
    channel: Annotated[str, Meta(max_length=128)] | None | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    note: Text | UnsetType = UNSET
    version: Version | UnsetType = UNSET
    expected_version: Version | UnsetType = UNSET
    #: why (recorded in the rule's history); the X-Change-Reason header is the alternative
    reason: Text | UnsetType = UNSET

    def rule_fields(self) -> dict[str, Any]:
        out = {}
        for name in RULE_FIELD_NAMES:
            value = getattr(self, name, UNSET)
            if value is not UNSET:
                out[name] = value
        return out


class RuleView(Struct, kw_only=True):
    """A rule as the API shows it: every field, defaults included (the domain struct omits them)."""

    id: int
    kind: RuleKind
    units: int
    percent: float
    sku: str | None
    category: str | None
    location: str | None
    location_group: str | None
    channel: str | None
    priority: int
    version: int
    note: str

    @classmethod
    def of(cls, rule: Rule) -> "RuleView":
        return cls(**msgspec.structs.asdict(rule))


RULE_FIELD_NAMES = tuple(f for f in Rule.__struct_fields__ if f not in ("id", "version"))


class RollbackBody(Struct, forbid_unknown_fields=True, kw_only=True):
    to_version: Version
    expected_version: Version | None = None
    reason: Text | None = None


class ProposedChange(Struct, forbid_unknown_fields=True, kw_only=True):
    """One change of a what-if: `create` (with `rule`), `update` (`id` and the fields in `rule`), `delete` (`id`)."""

    op: Literal["create", "update", "delete"]
    id: Annotated[int, Meta(ge=1, le=2**53)] | None = None
    rule: RuleBody | None = None


class PreviewRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    changes: Annotated[list[ProposedChange], Meta(min_length=1, max_length=100)]
    #: scan at most this many SKUs (default Settings.preview_default_limit); `complete` says if all were seen
    limit: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    #: how many changed values to list in `sample`
    sample: Annotated[int, Meta(ge=0, le=1000)] = 20


class ChannelExposure(Struct, kw_only=True):
    channel: str
    units_before: int
    units_after: int
    delta: int


class ChangedValue(Struct, kw_only=True):
    sku: str
    location: str
    channel: str
    before: int
    after: int


class SkuToZero(Struct, kw_only=True):
    sku: str
    channel: str
    before: int


class PreviewReport(Struct, kw_only=True):
    rules_version: int
    #: "skus" when the change names SKUs or categories (only those were read), "all" otherwise
    scope: Literal["skus", "all"]
    #: every SKU in scope was compared (false when `limit` stopped the scan)
    complete: bool
    skus_scanned: int
    pairs_scanned: int
    values_compared: int
    values_changed: int
    channels: list[ChannelExposure]
    skus_to_zero_count: int
    skus_to_zero: list[SkuToZero]
    sample: list[ChangedValue]
    proposed: list[RuleView]
    deleted: list[int]
    #: (SKU, location, channel) values that drop below their threshold only under the new rules
    thresholds_crossed: int = 0


# --- master data --------------------------------------------------------------------------------


class LocationBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """A location, replacing the stored one. `code` may be left out (the path names it)."""

    code: Code | None = None
    name: Annotated[str, Meta(max_length=200)] = ""
    type: LocationType = "warehouse"
    priority: Priority = 100
    ships: bool = True
    pickup: bool = False
    sells_in_store: bool = False
    groups: Annotated[list[Code], Meta(max_length=100)] = []
    active: bool = True
    reason: Text | None = None

    def to_location(self, code: str) -> dict[str, Any]:
        data = msgspec.to_builtins(self)
        data.pop("reason", None)
        data["code"] = code
        return data


class ChannelBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """A channel, replacing the stored one. `locations` null = every active location."""

    name: Code | None = None
    priority: Priority = 100
    locations: Annotated[list[LocationCode], Meta(max_length=10_000)] | None = None
    location_groups: Annotated[list[Code], Meta(max_length=100)] = []
    description: Text = ""
    reason: Text | None = None

    def to_channel(self, name: str) -> dict[str, Any]:
        data = msgspec.to_builtins(self)
        data.pop("reason", None)
        data["name"] = name
        return data


# --- events -------------------------------------------------------------------------------------


class EventOutcome(Struct):
    event_id: str
    status: str


class EventsAccepted(Struct, kw_only=True, omit_defaults=True):
    #: "direct": applied to the ledger in this request; "stream": queued for the consumer
    mode: Literal["direct", "stream"]
    received: int
    #: direct mode: each event's ledger status (applied, duplicate, stale_count, ...)
    results: list[EventOutcome] | None = None
    #: direct mode: events per status
    counts: dict[str, int] | None = None


# --- errors -------------------------------------------------------------------------------------


class Problem(Struct, kw_only=True):
    """RFC 9457 problem details; some problems add members (`short_lines`, `errors`, ...)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


# --- operations ---------------------------------------------------------------------------------


class Health(Struct, kw_only=True):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


__all__ = [
    "BatchRequest",
    "BatchAvailability",
    "Constant",
    "RuleBody",
    "RollbackBody",
    "ProposedChange",
    "PreviewRequest",
    "PreviewReport",
    "LocationBody",
    "ChannelBody",
    "EventsAccepted",
    "Health",
    "Problem",
    "Location",
    "Channel",
]
