"""Canonical stock events: the one shape every source system's message is turned into.

Adapters (POS, WMS, ERP, OMS, Shopify webhooks) translate their own formats into
`StockEvent`; the ledger applies nothing else. The wire shape (streams and
`POST /v1/events`) is a JSON object with these field names; see docs/events.md.

Quantities are always non-negative: the event *type* (and for adjustments the
*reason*) says in which direction a bucket moves, so a negative number on the wire
is an impossible quantity, not a decrement.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Literal

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.jsonlimits import check_depth

EventType = Literal[
    # POS (store tills; may arrive late when a till was offline)
    "pos_sale",
    "pos_return",
    "pos_void",
    # WMS / 3PL
    "receipt",
    "adjustment",
    "pick",
    "ship",
    "cycle_count",
    # ERP
    "snapshot",
    "purchase_order",
    "transfer_out",
    "transfer_in",
    # Orders / OMS / Shopify
    "reserve",
    "release",
    "allocate",
    "fulfil",
    "return",
]

EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

#: Absolute counts: `quantity` replaces on_hand as of `occurred_at`.
ABSOLUTE_TYPES = frozenset({"cycle_count", "snapshot"})

AdjustmentReason = Literal[
    "found",  # on_hand +q
    "lost",  # on_hand -q (shrinkage, theft)
    "damaged",  # unsellable +q (still physically on hand)
    "quality_hold",  # unsellable +q
    "quality_release",  # unsellable -q
    "write_off",  # on_hand -q and unsellable -q (damaged stock disposed of)
]
ADJUSTMENT_REASONS: tuple[str, ...] = AdjustmentReason.__args__  # type: ignore[attr-defined]

Source = Literal["pos", "wms", "erp", "oms", "shopify", "api", "sim"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]

#: One byte per source in the ledger's delta log (a late count needs to know whose delta a
#: record is, to honour `seen_through`); any other source name shares code 0.
SOURCE_CODES: dict[str, int] = {name: code for code, name in enumerate(SOURCES, 1)}


def source_code(source: str) -> int:
    return SOURCE_CODES.get(source, 0)


def event_digest(event_id: str) -> bytes:
    """The 8-byte idempotency record of an event id (BLAKE2b-64; never all zero, which
    marks an empty slot in the ledger's tables).

    Two different ids share a digest with probability 2^-64: with n records of one SKU
    inside the window, a new event is mistaken for a duplicate with probability about
    n / 2^64 (5e-14 at a million records), and any collision among them at all has
    probability about n^2 / 2^65 (3e-8 at a million).
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return digest if digest != b"\0" * 8 else b"\0" * 7 + b"\1"

#: Shopify caps quantities at 1,000,000,000; nothing we hold is larger.
MAX_QUANTITY = 1_000_000_000

#: Reference-bearing types: the reference names the reservation / order the event belongs to.
RESERVATION_TYPES = frozenset({"reserve", "release", "allocate", "fulfil"})


class StockEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fact about stock at one (SKU, location), from one source system."""

    event_id: str
    type: EventType
    source: str
    occurred_at: datetime
    sku: str
    location: str
    quantity: int
    #: order, PO, transfer or POS transaction this event belongs to
    reference: str | None = None
    #: adjustment reason (required for `adjustment`), free text otherwise
    reason: str | None = None
    correlation_id: str | None = None
    #: expected arrival of incoming supply (`purchase_order`, `transfer_out` to us)
    eta: datetime | None = None
    #: sales channel of an order event (informational; reservations by API carry their own)
    channel: str | None = None
    #: POS till that recorded the sale (informational, for audit)
    till_id: str | None = None
    #: counts only (`snapshot`, `cycle_count`): how far the counting system had seen each
    #: source's deltas, e.g. {"pos": "2026-11-20T09:45:00Z"} for an ERP snapshot as of 10:00
    #: whose POS postings lag. Deltas of that source after its time are not inside the
    #: count and stay on top of it. Sources not named are taken as seen up to `occurred_at`.
    seen_through: dict[str, datetime] | None = None

    @property
    def occurred_ms(self) -> int:
        return to_epoch_ms(self.occurred_at)


def to_epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        # Naive timestamps from sources are taken as UTC: every source we parse documents UTC.
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def validate_event(event: StockEvent) -> StockEvent:
    """Semantic checks that the type system cannot express. Raises `InvalidEvent`."""
    if not event.event_id or len(event.event_id) > 200:
        raise InvalidEvent("event_id must be 1..200 characters", event_id=event.event_id)
    if not event.sku or len(event.sku) > 128 or not _is_key_safe(event.sku):
        raise InvalidEvent("sku must be 1..128 printable characters without '{', '}' or '|'", event_id=event.event_id)
    if not is_location_code(event.location):
        raise InvalidEvent(
            f"location {event.location!r} must be 1..64 letters, digits or '-_.:'", event_id=event.event_id
        )
    if event.quantity < 0:
        raise InvalidEvent(
            f"quantity {event.quantity} is negative: the type gives the direction", event_id=event.event_id
        )
    if event.quantity > MAX_QUANTITY:
        raise InvalidEvent(f"quantity {event.quantity} exceeds {MAX_QUANTITY}", event_id=event.event_id)
    if event.type == "adjustment" and event.reason not in ADJUSTMENT_REASONS:
        raise InvalidEvent(
            f"adjustment reason {event.reason!r} is not one of {', '.join(ADJUSTMENT_REASONS)}",
            event_id=event.event_id,
        )
    if event.seen_through:
        if event.type not in ABSOLUTE_TYPES:
            raise InvalidEvent("seen_through belongs to counts (snapshot, cycle_count) only", event_id=event.event_id)
        if len(event.seen_through) > 16 or any(not s or len(s) > 32 for s in event.seen_through):
            raise InvalidEvent("seen_through names at most 16 sources of 1..32 characters", event_id=event.event_id)
    if event.type in RESERVATION_TYPES and not event.reference:
        raise InvalidEvent(f"{event.type} needs a reference (the order or reservation id)", event_id=event.event_id)
    return event


_LOCATION_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")


def is_location_code(value: str) -> bool:
    # Location codes are stored inside packed ledger values, so separators are not allowed.
    return bool(_LOCATION_CODE.fullmatch(value))


#: what a SKU may not hold: braces would break the Redis Cluster hash tag, '|' is our field
#: separator, control characters have no business in a key (the API's SKU_PATTERN and
#: api.queries.check_sku say exactly the same, so the OpenAPI document is the rule)
_NOT_IN_SKU = frozenset("{}|\x7f" + "".join(map(chr, range(32))))


def _is_key_safe(value: str) -> bool:
    return _NOT_IN_SKU.isdisjoint(value)


_event_decoder = msgspec.json.Decoder(StockEvent)
_events_decoder = msgspec.json.Decoder(StockEvent | list[StockEvent])
_encoder = msgspec.json.Encoder()


def decode_event(raw: bytes | str) -> StockEvent:
    """Parse and validate one wire event. Raises `InvalidEvent` with the reason."""
    # Stream entries can come from producers that never passed the API's check; a decoder
    # recurses per level (even skipping an unknown field), so refuse deep nesting first.
    check_depth(raw, what="the event")
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"invalid event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"unparseable event: {exc}") from None
    return validate_event(event)


def decode_events(raw: bytes | str) -> list[StockEvent]:
    """Parse one event or a JSON list of events, each validated."""
    try:
        parsed = _events_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"invalid event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"unparseable event: {exc}") from None
    events = parsed if isinstance(parsed, list) else [parsed]
    return [validate_event(e) for e in events]


def encode_event(event: StockEvent) -> bytes:
    return _encoder.encode(event)
