"""Shopify webhooks in: signature check, delivery headers, and payload -> canonical events.

Verification
------------
``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(app client secret, raw request body)).
`verify_hmac` recomputes it over the raw bytes (before any JSON parsing), compares in
constant time, and accepts any of the configured secrets, so the old and the new secret
both verify while a secret is being rotated. A missing or malformed header is rejected.

Headers
-------
`ShopifyWebhook.from_headers` reads the delivery headers case-insensitively:
``X-Shopify-Topic``, ``X-Shopify-Webhook-Id`` (the same on every retry of one delivery),
``X-Shopify-Shop-Domain``, ``X-Shopify-API-Version``, ``X-Shopify-Triggered-At``,
``X-Shopify-Event-Id``, ``X-Shopify-Hmac-Sha256``.

Mapping (source = "shopify"), REST webhook payloads
---------------------------------------------------
=======================  =============================================  ==========  ======================================================
topic                    per                                            type        event_id / location / reference
=======================  =============================================  ==========  ======================================================
orders/create            line_items[]                                   reserve     shopify:orders/create:{order.id}:{line_item.id};
                                                                                    default_location; reference = order.id;
                                                                                    channel "online"
orders/create with       line_items[]                                   pos_sale    same id; location = order.location_id;
source_name "pos"                                                                   reference = order.id; channel "pos";
                                                                                    till_id = device_id
orders/cancelled         line_items[] (quantity not yet fulfilled)      release     shopify:orders/cancelled:{order.id}:{line_item.id};
                                                                                    default_location (where orders/create reserved);
                                                                                    nothing for a POS order
fulfillments/create      line_items[] of a fulfillment with status      fulfil      shopify:fulfillments/create:{fulfillment.id}:{line_item.id};
                         success                                                    location = fulfillment.location_id;
                                                                                    reference = order_id
refunds/create           refund_line_items[] with restock_type          return      shopify:refunds/create:{refund.id}:{refund_line_item.id};
                         "return" (or legacy_restock / restock: true                location = refund_line_item.location_id;
                         of a fulfilled line)                                       reference = order_id
refunds/create           refund_line_items[] with restock_type          release     same id; default_location (the reservation's);
                         "cancel" (or legacy_restock of an                          reference = order_id
                         unfulfilled line)
inventory_levels/update  the payload                                    (none)      returns an `InventoryLevelUpdate` for drift repair
=======================  =============================================  ==========  ======================================================

- ``occurred_at``: the order's created_at / cancelled_at, the fulfillment's created_at,
  the refund's processed_at (else created_at), in UTC.
- Locations: a Shopify ``location_id`` is looked up in `location_map` (keys may be the
  numeric id, as int or str, or the Location GID); a missing location_id falls back to
  `default_location`; an id missing from the map is refused (`InvalidEvent`) rather than
  booked somewhere wrong.
- A "cancel" restock returns units that never left: booking them as a `return` would add
  them to on hand a second time, so they release the reservation instead.
- Line items without a SKU (custom items, gift cards) are skipped and counted in
  `WebhookEvents.skipped_without_sku`; lines with quantity 0 produce nothing.
- ``correlation_id`` = X-Shopify-Event-Id (else the webhook id) when the delivery
  headers are passed as `webhook`.
- Ids come from Shopify's own ids, so the retries Shopify makes (8 over 4 hours, also
  after a slow 2xx) are deduplicated by the ledger. Topics we do not map
  (`IGNORED_TOPICS`, e.g. orders/fulfilled, which fulfillments/create already covers)
  give an empty result; any other topic is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, validate_event

from adapters.shopify.gid import location_gid

SOURCE = "shopify"

#: topics whose payloads become ledger events (or, for inventory_levels/update, a level)
MAPPED_TOPICS = (
    "orders/create",
    "orders/cancelled",
    "fulfillments/create",
    "refunds/create",
    "inventory_levels/update",
)
#: topics that are acknowledged but carry nothing the ledger needs
IGNORED_TOPICS = frozenset(
    {
        "orders/fulfilled",
        "orders/partially_fulfilled",
        "orders/updated",
        "orders/paid",
        "orders/edited",
        "fulfillments/update",
        "inventory_items/update",
        "app/uninstalled",
    }
)

HEADER_TOPIC = "x-shopify-topic"
HEADER_HMAC = "x-shopify-hmac-sha256"
HEADER_SHOP = "x-shopify-shop-domain"
HEADER_API_VERSION = "x-shopify-api-version"
HEADER_WEBHOOK_ID = "x-shopify-webhook-id"
HEADER_EVENT_ID = "x-shopify-event-id"
HEADER_TRIGGERED_AT = "x-shopify-triggered-at"


# --------------------------------------------------------------------------- signature


def compute_hmac(raw_body: bytes, secret: str) -> str:
    """The ``X-Shopify-Hmac-Sha256`` value Shopify would send for this body."""
    digest = hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_hmac(raw_body: bytes, header_value: str | None, secrets: Sequence[str]) -> bool:
    """True if `header_value` is the body's HMAC under any of `secrets` (current and, during
    a rotation, previous). Constant-time comparison; never raises on bad input."""
    if not header_value or not isinstance(raw_body, (bytes, bytearray, memoryview)):
        return False
    try:
        claimed = base64.b64decode(header_value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(claimed) != hashlib.sha256().digest_size:
        return False
    verified = False
    for secret in secrets:
        if not secret:
            continue
        digest = hmac.new(secret.encode("utf-8"), bytes(raw_body), hashlib.sha256).digest()
        # No early exit: every configured secret costs the same.
        verified |= hmac.compare_digest(digest, claimed)
    return verified


# --------------------------------------------------------------------------- shop


def shop_domain_of(headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]) -> str | None:
    """``X-Shopify-Shop-Domain`` (lower case), read before the signature is checked: it
    picks the shop whose secrets must verify the body. Never trusted on its own."""
    pairs = headers.items() if hasattr(headers, "items") else headers
    for name, value in pairs:
        key = (name.decode("latin-1") if isinstance(name, bytes) else name).strip().lower()
        if key == HEADER_SHOP:
            text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip().lower()
            return text or None
    return None


# --------------------------------------------------------------------------- headers


class ShopifyWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery's headers. `webhook_id` is the dedupe key of the delivery (the same on
    every retry); `event_id` names the underlying Shopify event."""

    topic: str
    webhook_id: str
    shop_domain: str
    api_version: str | None = None
    triggered_at: datetime | None = None
    event_id: str | None = None
    hmac_sha256: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]) -> ShopifyWebhook:
        """From a headers mapping or (name, value) pairs (str or bytes, as ASGI gives them),
        names matched case-insensitively. Raises `InvalidEvent` naming a missing header."""
        # Mappings and framework header objects (Litestar, Starlette) have items(); ASGI
        # scopes give a list of (bytes, bytes) pairs.
        pairs = headers.items() if hasattr(headers, "items") else headers
        found: dict[str, str] = {}
        for name, value in pairs:
            key = (name.decode("latin-1") if isinstance(name, bytes) else name).strip().lower()
            text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
            found.setdefault(key, text)

        def required(header: str, label: str) -> str:
            value = found.get(header)
            if not value:
                raise InvalidEvent(f"Shopify webhook without the {label} header")
            return value

        triggered_at = None
        if found.get(HEADER_TRIGGERED_AT):
            try:
                triggered_at = _utc(datetime.fromisoformat(found[HEADER_TRIGGERED_AT].replace("Z", "+00:00")))
            except ValueError:
                raise InvalidEvent(
                    f"X-Shopify-Triggered-At {found[HEADER_TRIGGERED_AT]!r} is not an RFC 3339 timestamp"
                ) from None
        return cls(
            topic=required(HEADER_TOPIC, "X-Shopify-Topic"),
            webhook_id=required(HEADER_WEBHOOK_ID, "X-Shopify-Webhook-Id"),
            shop_domain=required(HEADER_SHOP, "X-Shopify-Shop-Domain"),
            api_version=found.get(HEADER_API_VERSION) or None,
            triggered_at=triggered_at,
            event_id=found.get(HEADER_EVENT_ID) or None,
            hmac_sha256=found.get(HEADER_HMAC) or None,
        )


# --------------------------------------------------------------------------- payloads


class _LineItem(msgspec.Struct):
    id: int | str
    quantity: int
    sku: str | None = None
    variant_id: int | str | None = None
    fulfillment_status: str | None = None


class _Fulfillment(msgspec.Struct):
    id: int | str
    status: str | None = None
    order_id: int | str | None = None
    location_id: int | str | None = None
    created_at: datetime | None = None
    line_items: list[_LineItem] = []


class _Order(msgspec.Struct):
    id: int | str
    created_at: datetime
    line_items: list[_LineItem]
    name: str | None = None
    cancelled_at: datetime | None = None
    source_name: str | None = None
    location_id: int | str | None = None
    device_id: int | str | None = None
    fulfillments: list[_Fulfillment] = []


class _RefundLineItem(msgspec.Struct):
    id: int | str
    quantity: int
    line_item_id: int | str | None = None
    restock_type: str | None = None
    location_id: int | str | None = None
    line_item: _LineItem | None = None


class _Refund(msgspec.Struct):
    id: int | str
    order_id: int | str
    created_at: datetime
    processed_at: datetime | None = None
    restock: bool | None = None
    refund_line_items: list[_RefundLineItem] = []


class InventoryLevelUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """An ``inventory_levels/update`` webhook: Shopify's own view of one level, changed
    elsewhere (admin edit, another app). Input to drift repair, not a ledger event."""

    inventory_item_id: int
    location_id: int
    #: None when Shopify does not track the item's quantity
    available: int | None
    updated_at: datetime
    #: our location code for `location_id`, when the map knows it
    location: str | None = None


class _LevelPayload(msgspec.Struct):
    inventory_item_id: int
    location_id: int
    available: int | None
    updated_at: datetime


class WebhookEvents(list[StockEvent]):
    """The canonical events of one webhook (a plain list) plus what was left out."""

    def __init__(self, events: Iterable[StockEvent] = (), *, topic: str = "", skipped_without_sku: int = 0) -> None:
        super().__init__(events)
        self.topic = topic
        #: line items that carried no SKU and so could not be mapped
        self.skipped_without_sku = skipped_without_sku

    def __repr__(self) -> str:
        return f"WebhookEvents({list.__repr__(self)}, topic={self.topic!r}, skipped_without_sku={self.skipped_without_sku})"


class _Mapper:
    def __init__(
        self,
        topic: str,
        location_map: Mapping[int | str, str],
        default_location: str,
        webhook: ShopifyWebhook | None,
    ) -> None:
        self.topic = topic
        self.location_map = location_map
        self.default_location = default_location
        self.correlation_id = (webhook.event_id or webhook.webhook_id) if webhook else None
        self.result = WebhookEvents(topic=topic)
        self.channel = "online"

    def location(self, location_id: int | str | None) -> str:
        if location_id is None or location_id == "":
            return self.default_location
        return _lookup_location(self.location_map, location_id, self.topic)

    def add(
        self,
        *,
        ids: tuple[int | str, int | str],
        type: str,
        line: _LineItem | _RefundLineItem,
        sku: str | None,
        quantity: int,
        location: str,
        occurred_at: datetime,
        reference: str,
        channel: str | None = None,
        till_id: str | None = None,
    ) -> None:
        if not sku or not sku.strip():
            self.result.skipped_without_sku += 1
            return
        if quantity < 0:
            raise InvalidEvent(f"Shopify {self.topic}: line {line.id} has a negative quantity {quantity}")
        if quantity == 0:
            return
        event = StockEvent(
            event_id=f"{SOURCE}:{self.topic}:{ids[0]}:{ids[1]}",
            type=type,  # type: ignore[arg-type]
            source=SOURCE,
            occurred_at=_utc(occurred_at),
            sku=sku.strip(),
            location=location,
            quantity=quantity,
            reference=reference,
            correlation_id=self.correlation_id,
            channel=channel,
            till_id=till_id,
        )
        try:
            self.result.append(validate_event(event))
        except InvalidEvent as exc:
            raise InvalidEvent(f"Shopify {self.topic}: line {line.id}: {exc.detail}") from None


def map_webhook(
    topic: str,
    payload: Mapping[str, Any] | bytes | str,
    location_map: Mapping[int | str, str],
    *,
    default_location: str,
    webhook: ShopifyWebhook | None = None,
    channel: str = "online",
) -> WebhookEvents | InventoryLevelUpdate:
    """Map one webhook payload (decoded JSON, or the raw body) to canonical events; for
    ``inventory_levels/update`` return an `InventoryLevelUpdate`. Raises `InvalidEvent`
    for a payload that does not fit the topic, an unmapped location or an unknown topic.
    `channel`: the channel the shop sells as (online orders are booked under it)."""
    topic = topic.strip().lower()
    if topic in IGNORED_TOPICS:
        return WebhookEvents(topic=topic)
    if topic not in MAPPED_TOPICS:
        raise InvalidEvent(f"Shopify webhook topic {topic!r} is not handled (mapped: {', '.join(MAPPED_TOPICS)})")
    if topic == "inventory_levels/update":
        level = _convert(payload, _LevelPayload, topic)
        location = None
        try:
            location = _lookup_location(location_map, level.location_id, topic)
        except InvalidEvent:
            location = None  # a location we do not manage: drift repair decides what to do
        return InventoryLevelUpdate(
            inventory_item_id=level.inventory_item_id,
            location_id=level.location_id,
            available=level.available,
            updated_at=_utc(level.updated_at),
            location=location,
        )
    mapper = _Mapper(topic, location_map, default_location, webhook)
    mapper.channel = channel
    if topic == "orders/create":
        _orders_create(mapper, _convert(payload, _Order, topic))
    elif topic == "orders/cancelled":
        _orders_cancelled(mapper, _convert(payload, _Order, topic))
    elif topic == "fulfillments/create":
        _fulfillments_create(mapper, _convert(payload, _Fulfillment, topic))
    else:
        _refunds_create(mapper, _convert(payload, _Refund, topic))
    return mapper.result


def _orders_create(m: _Mapper, order: _Order) -> None:
    reference = str(order.id)
    is_pos = order.source_name == "pos"
    location = m.location(order.location_id) if is_pos else m.default_location
    for line in order.line_items:
        m.add(
            ids=(order.id, line.id),
            type="pos_sale" if is_pos else "reserve",
            line=line,
            sku=line.sku,
            quantity=line.quantity,
            location=location,
            occurred_at=order.created_at,
            reference=reference,
            channel="pos" if is_pos else m.channel,
            till_id=str(order.device_id) if is_pos and order.device_id is not None else None,
        )


def _orders_cancelled(m: _Mapper, order: _Order) -> None:
    if order.source_name == "pos":
        return  # a till sale held no reservation; its restock comes as refunds/create
    fulfilled: dict[str, int] = {}
    for fulfillment in order.fulfillments:
        if fulfillment.status in (None, "success"):
            for item in fulfillment.line_items:
                fulfilled[str(item.id)] = fulfilled.get(str(item.id), 0) + item.quantity
    occurred_at = order.cancelled_at or order.created_at
    for line in order.line_items:
        m.add(
            ids=(order.id, line.id),
            type="release",
            line=line,
            sku=line.sku,
            quantity=max(0, line.quantity - fulfilled.get(str(line.id), 0)),
            location=m.default_location,
            occurred_at=occurred_at,
            reference=str(order.id),
            channel=m.channel,
        )


def _fulfillments_create(m: _Mapper, fulfillment: _Fulfillment) -> None:
    if fulfillment.status not in (None, "success"):
        return  # pending / open / cancelled / failure: nothing has left the building
    if fulfillment.order_id is None:
        raise InvalidEvent("Shopify fulfillments/create: payload has no order_id")
    if fulfillment.created_at is None:
        raise InvalidEvent("Shopify fulfillments/create: payload has no created_at")
    location = m.location(fulfillment.location_id)
    for line in fulfillment.line_items:
        m.add(
            ids=(fulfillment.id, line.id),
            type="fulfil",
            line=line,
            sku=line.sku,
            quantity=line.quantity,
            location=location,
            occurred_at=fulfillment.created_at,
            reference=str(fulfillment.order_id),
        )


def _refunds_create(m: _Mapper, refund: _Refund) -> None:
    occurred_at = refund.processed_at or refund.created_at
    for item in refund.refund_line_items:
        restock_type = item.restock_type
        line = item.line_item
        if restock_type == "legacy_restock" or (restock_type is None and refund.restock):
            # The old API says only "restocked": it was a return if the line had shipped.
            shipped = line is not None and line.fulfillment_status in ("fulfilled", "partial")
            restock_type = "return" if shipped else "cancel"
        if restock_type == "return":
            event_type, location = "return", m.location(item.location_id)
        elif restock_type == "cancel":
            event_type, location = "release", m.default_location
        else:
            continue  # no_restock: money back, goods not back on the shelf
        m.add(
            ids=(refund.id, item.id),
            type=event_type,
            line=item,
            sku=line.sku if line is not None else None,
            quantity=item.quantity,
            location=location,
            occurred_at=occurred_at,
            reference=str(refund.order_id),
        )


def _lookup_location(location_map: Mapping[int | str, str], location_id: int | str, topic: str) -> str:
    candidates: list[int | str] = [location_id, str(location_id)]
    text = str(location_id)
    if text.isdigit():
        candidates += [int(text), location_gid(text)]
    for key in candidates:
        if key in location_map:
            return location_map[key]
    raise InvalidEvent(f"Shopify {topic}: location {location_id} is not in the location map")


def _convert(payload: Mapping[str, Any] | bytes | str, kind: type, topic: str) -> Any:
    try:
        if isinstance(payload, (bytes, str)):
            return msgspec.json.decode(payload, type=kind)
        return msgspec.convert(payload, kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidEvent(f"Shopify {topic} payload: {exc}") from None


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
