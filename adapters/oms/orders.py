"""Order management system (OMS) order messages, JSON, turned into canonical events.

Format
------
::

    {"action": "reserve" | "release" | "allocate" | "fulfil" | "return",
     "order_id": "ORD-1001",
     "occurred_at": "2026-11-20T10:15:00Z",
     "lines": [{"sku": "TEE-BLK-M", "quantity": 2, "location": "DC1"}, ...],
     "message_id": "oms-evt-7781",      # optional: the OMS's own id of this message
     "channel": "online",               # optional
     "correlation_id": "..."}           # optional

``fulfill`` is accepted for ``fulfil``. A line may carry ``line_id`` (the OMS's order line
id); otherwise lines are numbered from 1. A line without ``location`` takes the caller's
`default_location`, or is refused.

Mapping (source = "oms")
------------------------
``type`` = action (reserve / release / allocate / fulfil / return), ``reference`` =
order_id, ``location`` = the line's location (through `location_map`, identity when
None), ``occurred_at`` = occurred_at in UTC (no offset = UTC), ``channel`` and
``correlation_id`` as given. ``event_id``:

- ``oms:{message_id}:{line}`` when the message has a message_id;
- ``oms:{order_id}:{action}:{line}`` otherwise: one event per action per order line, so
  a re-sent message is deduplicated. An OMS that fulfils or returns one order line in
  several parts must send a message_id per message, or the later parts are taken for
  duplicates.

In the ledger, reserve / release / allocate / fulfil settle the order's hold by
reference and location, and return puts the units back on hand at the line's location.
Lines with quantity 0 produce nothing; a negative quantity is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, validate_event

SOURCE = "oms"
ACTIONS = ("reserve", "release", "allocate", "fulfil", "return")
ACTION_ALIASES = {"fulfill": "fulfil"}


class OmsLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    location: str | None = None
    line_id: str | int | None = None


class OmsMessage(msgspec.Struct, frozen=True, kw_only=True):
    action: str
    order_id: str | int
    occurred_at: datetime
    lines: list[OmsLine]
    message_id: str | None = None
    channel: str | None = None
    correlation_id: str | None = None


class RejectedMessage(NamedTuple):
    index: int
    reason: str
    document: Any


class OmsBatch(NamedTuple):
    events: list[StockEvent]
    rejected: list[RejectedMessage]


_decoder = msgspec.json.Decoder(OmsMessage)


def decode_oms_message(doc: bytes | str | Mapping[str, Any]) -> OmsMessage:
    try:
        if isinstance(doc, (bytes, str)):
            return _decoder.decode(doc)
        return msgspec.convert(doc, OmsMessage)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidEvent(f"OMS message{_order_hint(doc)}: {exc}") from None


def oms_message_events(
    message: OmsMessage,
    *,
    location_map: Mapping[str, str] | None = None,
    default_location: str | None = None,
) -> list[StockEvent]:
    """The canonical events of one decoded message. Raises `InvalidEvent`."""
    order_id = str(message.order_id).strip()

    def fail(reason: str) -> InvalidEvent:
        return InvalidEvent(f"OMS {message.action} for order {order_id or '?'}: {reason}")

    action = ACTION_ALIASES.get(message.action, message.action)
    if action not in ACTIONS:
        raise fail(f"action {message.action!r} is not one of {', '.join(ACTIONS)}")
    if not order_id:
        raise fail("order_id is blank")
    if not message.lines:
        raise fail("no lines")
    occurred_at = _utc(message.occurred_at)
    events: list[StockEvent] = []
    for n, line in enumerate(message.lines, start=1):
        line_key = str(line.line_id) if line.line_id is not None else str(n)
        if line.quantity < 0:
            raise fail(f"line {line_key}: quantity {line.quantity} is negative: the action gives the direction")
        if line.quantity == 0:
            continue
        location = line.location or default_location
        if not location:
            raise fail(f"line {line_key}: no location (and no default location)")
        if location_map is not None and line.location:
            try:
                location = location_map[line.location]
            except KeyError:
                raise fail(f"line {line_key}: location {line.location!r} is not in the location map") from None
        if message.message_id:
            event_id = _stable_id(SOURCE, message.message_id, line_key)
        else:
            event_id = _stable_id(SOURCE, order_id, action, line_key)
        event = StockEvent(
            event_id=event_id,
            type=action,  # type: ignore[arg-type]
            source=SOURCE,
            occurred_at=occurred_at,
            sku=line.sku,
            location=location,
            quantity=line.quantity,
            reference=order_id,
            correlation_id=message.correlation_id,
            channel=message.channel,
        )
        try:
            events.append(validate_event(event))
        except InvalidEvent as exc:
            raise fail(f"line {line_key}: {exc.detail}") from None
    return events


def parse_oms_message(
    doc: bytes | str | Mapping[str, Any],
    *,
    location_map: Mapping[str, str] | None = None,
    default_location: str | None = None,
) -> list[StockEvent]:
    """One OMS message (JSON text or decoded dict) -> events. Raises `InvalidEvent`."""
    return oms_message_events(
        decode_oms_message(doc), location_map=location_map, default_location=default_location
    )


def parse_oms_batch(
    data: bytes | str | list[Any],
    *,
    location_map: Mapping[str, str] | None = None,
    default_location: str | None = None,
) -> OmsBatch:
    """A JSON array or JSON Lines of messages (or a list of dicts); bad ones are returned
    in `rejected` with their reason, the others' events in `events`."""
    events: list[StockEvent] = []
    rejected: list[RejectedMessage] = []
    for index, doc in enumerate(_documents(data)):
        try:
            events.extend(parse_oms_message(doc, location_map=location_map, default_location=default_location))
        except InvalidEvent as exc:
            rejected.append(RejectedMessage(index, exc.detail, doc))
    return OmsBatch(events, rejected)


def _documents(data: bytes | str | list[Any]) -> list[Any]:
    if isinstance(data, list):
        return data
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if text.lstrip().startswith("["):
        try:
            return msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"OMS batch is not a JSON array: {exc}") from None
    return [line for line in text.splitlines() if line.strip()]


def _order_hint(doc: object) -> str:
    if isinstance(doc, Mapping):
        order = doc.get("order_id")
    else:
        try:
            decoded = msgspec.json.decode(doc)  # type: ignore[arg-type]
        except (msgspec.DecodeError, TypeError):
            return ""
        order = decoded.get("order_id") if isinstance(decoded, dict) else None
    return f" for order {order}" if isinstance(order, (str, int)) and str(order) else ""


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _stable_id(*parts: str) -> str:
    event_id = ":".join(parts)
    if len(event_id) <= 200:
        return event_id
    return f"{parts[0]}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"
