"""Shopify refunds and returns, as their webhooks carry them, to what they become: an ERP
credit note and the ledger's stock events. Pure: no I/O.

Money (a refund's credit note, **shop currency**; presentment kept apart):
    goods      each refund line item: its `subtotal` (after the line's discounts) for its
               quantity, on the SKU's product, crediting the sale's line of that SKU
    tax        Σ refund line `total_tax` + Σ order adjustment `tax_amount` sign-flipped
    shipping   Σ order adjustments of kind `shipping_refund`, sign-flipped (Shopify
               records a shipping refund as a negative adjustment)
    misc       any other adjustment (`refund_discrepancy`: the refund was less or more
               than calculated), sign-flipped
Each amount is read from its `*_set.shop_money` when the payload has it (multi-currency
shops), else the plain field (then shop and presentment are one currency). The note's
total must equal the refund's successful `refund` transactions in shop money; when it
does not the refund is an `amount_mismatch` exception rather than a wrong credit note.

Stock (only where stock physically comes back; docs/flows.md):
    refund line restock_type return    `return` at the line's location (on_hand +q)
    refund line restock_type cancel    `release` of the order's hold (never left)
    refund line no_restock             nothing
    disposition RESTOCKED              `return` at its location
    disposition NOT_RESTOCKED          `return` + `adjustment damaged` (unsellable +q)
    disposition PROCESSING_REQUIRED    `return` + `adjustment quality_hold`
    disposition MISSING                nothing
Refund lines go through the same mapping as the webhook route's
(`adapters.shopify.webhooks.map_webhook`), so their event ids are the route's and a refund
seen by both is applied once; dispositions get ids derived from Shopify's disposition ids.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, Mapping

from adapters.erp.port import CreditLine, CreditNoteDraft
from adapters.shopify.webhooks import SOURCE, map_webhook
from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, validate_event

REFUND_TOPICS = ("refunds/create",)
RETURN_TOPICS = ("returns/request", "returns/approve", "returns/decline", "returns/cancel", "returns/close",
                 "returns/reopen", "returns/update", "reverse_fulfillment_orders/dispose")
#: Shopify's return status (REST payloads lower-case it) -> the return document's state
RETURN_STATUS = {"requested": "requested", "open": "open", "declined": "declined", "canceled": "cancelled",
                 "cancelled": "cancelled", "closed": "closed"}
DISPOSITIONS = ("restocked", "not_restocked", "processing_required", "missing")
_HOLD_REASON = {"not_restocked": "damaged", "processing_required": "quality_hold"}
_CENT = Decimal("0.0001")


class InvalidRefund(ValueError):
    """The payload is not a refund or return the flow can book (no id, a bad amount, ...)."""

    reason = "invalid_refund"


class AmountMismatch(ValueError):
    """The refund's lines and adjustments do not add up to the money refunded."""

    reason = "amount_mismatch"


def _money(value: Any, what: str) -> Decimal:
    try:
        amount = Decimal(str(value if value not in (None, "") else "0"))
    except InvalidOperation as exc:
        raise InvalidRefund(f"{what} is not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidRefund(f"{what} is not an amount: {value!r}")
    return amount


def _shop_and_presentment(item: Mapping[str, Any], name: str, what: str) -> tuple[Decimal, Decimal, str | None]:
    """(shop amount, presentment amount, presentment currency) of field `name`."""
    money_set = item.get(f"{name}_set") or {}
    plain = _money(item.get(name), what)
    shop = money_set.get("shop_money") or {}
    presentment = money_set.get("presentment_money") or {}
    shop_amount = _money(shop["amount"], what) if "amount" in shop else plain
    presentment_amount = _money(presentment["amount"], what) if "amount" in presentment else shop_amount
    return shop_amount, presentment_amount, presentment.get("currency_code")


def refund_key(shop: str, refund_id: Any) -> str:
    """The credit note's reference in the ERP: the shop and the refund id."""
    return f"{shop}#refund-{refund_id}"


def return_key(shop: str, return_id: Any) -> str:
    return f"{shop}#return-{return_id}"


def refund_ids(payload: Any) -> tuple[str, str]:
    if not isinstance(payload, dict):
        raise InvalidRefund("the payload is not a JSON object")
    if payload.get("id") in (None, "") or payload.get("order_id") in (None, ""):
        raise InvalidRefund("a refund needs its id and order_id")
    return str(payload["id"]), str(payload["order_id"])


def refund_created(payload: dict) -> dt.datetime:
    raw = payload.get("processed_at") or payload.get("created_at")
    try:
        moment = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRefund(f"the refund's created_at is not a time: {raw!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def refunded_money(payload: dict) -> tuple[Decimal, Decimal, str | None]:
    """Σ successful refund transactions: (shop, presentment, presentment currency)."""
    shop = presentment = Decimal("0")
    currency = None
    for tx in payload.get("transactions") or []:
        if str(tx.get("kind", "refund")).lower() != "refund" or str(tx.get("status", "success")).lower() != "success":
            continue
        s, p, c = _shop_and_presentment(tx, "amount", f"transaction {tx.get('id')} amount")
        if "amount_set" not in tx and tx.get("currency"):
            c = tx.get("currency")
        shop += s
        presentment += p
        currency = currency or c
    return shop, presentment, currency


def _unit_split(quantity: int, subtotal: Decimal) -> list[tuple[int, Decimal]]:
    """(quantity, unit price) pairs that add up to `subtotal` exactly (a 3-for-10.00 line
    becomes 2 x 3.3333 + 1 x 3.3334 rather than a total off by a cent)."""
    unit = (subtotal / quantity).quantize(_CENT, rounding=ROUND_DOWN)
    rest = subtotal - unit * quantity
    if rest == 0 or quantity == 1:
        return [(quantity, subtotal / quantity if quantity == 1 else unit)]
    return [(quantity - 1, unit), (1, unit + rest)]


def credit_note(shop: str, payload: dict, sale_reference: str, currency: str) -> CreditNoteDraft:
    """The credit note of one refund (raises InvalidRefund / AmountMismatch)."""
    refund_id, _ = refund_ids(payload)
    lines: list[CreditLine] = []
    tax = Decimal("0")
    for item in payload.get("refund_line_items") or []:
        quantity = item.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            raise InvalidRefund(f"refund line {item.get('id')}: quantity {quantity!r}")
        subtotal, _, _ = _shop_and_presentment(item, "subtotal", f"refund line {item.get('id')} subtotal")
        line_tax, _, _ = _shop_and_presentment(item, "total_tax", f"refund line {item.get('id')} tax")
        tax += line_tax
        if quantity == 0 and subtotal == 0:
            continue
        line_item = item.get("line_item") or {}
        sku = (line_item.get("sku") or "").strip() or None
        name = line_item.get("title") or line_item.get("name") or sku or "line"
        if sku is None:
            lines.append(CreditLine("misc", f"refund: {name}", Decimal(1), subtotal))
            continue
        for qty, unit in _unit_split(max(quantity, 1), subtotal):
            lines.append(CreditLine("goods", f"refund: {name}", Decimal(qty), unit, sku=sku))
    shipping = Decimal("0")
    other = Decimal("0")
    for adjustment in payload.get("order_adjustments") or []:
        amount, _, _ = _shop_and_presentment(adjustment, "amount", f"adjustment {adjustment.get('id')} amount")
        adj_tax, _, _ = _shop_and_presentment(adjustment, "tax_amount", f"adjustment {adjustment.get('id')} tax")
        tax -= adj_tax
        if adjustment.get("kind") == "shipping_refund":
            shipping -= amount
        else:
            other -= amount
    if shipping:
        lines.append(CreditLine("shipping", "refund: shipping", Decimal(1), shipping))
    if other:
        lines.append(CreditLine("misc", "refund: adjustment (refund discrepancy)", Decimal(1), other))
    if tax:
        lines.append(CreditLine("tax", "refund: tax (as computed by the shop)", Decimal(1), tax))
    draft = CreditNoteDraft(reference=refund_key(shop, refund_id), sale_reference=sale_reference, currency=currency,
                            credit_date=refund_created(payload).date(), lines=tuple(lines),
                            description=f"Refund {refund_id} of {sale_reference}")
    refunded, _, _ = refunded_money(payload)
    if draft.total != refunded:
        raise AmountMismatch(f"refund {refund_id}: lines and adjustments total {draft.total}, "
                             f"refund transactions {refunded} (shop currency)")
    if not lines:
        raise InvalidRefund(f"refund {refund_id} refunds nothing")
    return draft


def refund_stock_events(payload: dict, location_map: Mapping[int | str, str], default_location: str) -> list[StockEvent]:
    """The ledger events of a refund's restocks (the webhook route's mapping, same ids)."""
    try:
        return list(map_webhook("refunds/create", payload, location_map, default_location=default_location))
    except InvalidEvent as exc:
        raise InvalidRefund(exc.detail if hasattr(exc, "detail") else str(exc)) from None


def releases_waiting_for(payload: dict) -> dict[str, str]:
    """release event id -> the order's reserve event id it releases (the webhook route's
    ids). The ledger keeps an order released once a release arrives before its reserve
    (for a cancelled order that is right), so a partial CANCEL refund must not overtake
    the order: the flow sends it once the reserve is in (or after a bounded wait)."""
    refund_id, order_id = refund_ids(payload)
    out = {}
    for item in payload.get("refund_line_items") or []:
        if str(item.get("restock_type") or "").lower() == "cancel" and item.get("line_item_id") is not None:
            out[f"{SOURCE}:refunds/create:{refund_id}:{item.get('id')}"] = (
                f"{SOURCE}:orders/create:{order_id}:{item['line_item_id']}")
    return out


def return_ids(topic: str, payload: Any) -> tuple[str, str | None]:
    """(return id, order id) of a returns/* or reverse_fulfillment_orders/dispose payload."""
    if not isinstance(payload, dict):
        raise InvalidRefund("the payload is not a JSON object")
    return_id = payload.get("return_id") if topic == "reverse_fulfillment_orders/dispose" else payload.get("id")
    if return_id in (None, ""):
        raise InvalidRefund(f"{topic}: the payload names no return")
    order_id = payload.get("order_id")
    return str(return_id), (str(order_id) if order_id not in (None, "") else None)


def return_skus(payload: dict) -> dict[str, str]:
    """line item id -> SKU, from a return's line items or a disposition's line item."""
    out: dict[str, str] = {}

    def take(line_item: Any) -> None:
        if isinstance(line_item, dict) and line_item.get("id") is not None and line_item.get("sku"):
            out[str(line_item["id"])] = str(line_item["sku"]).strip()

    for item in payload.get("return_line_items") or []:
        take(((item or {}).get("fulfillment_line_item") or {}).get("line_item"))
    for disposition in payload.get("dispositions") or []:
        rfo_item = (disposition or {}).get("reverse_fulfillment_order_line_item") or {}
        take((rfo_item.get("fulfillment_line_item") or {}).get("line_item"))
    return out


def dispositions(payload: dict) -> dict[str, dict]:
    """disposition id -> {type, quantity, location_id, line_item_id, at} of a dispose payload."""
    out: dict[str, dict] = {}
    for n, disposition in enumerate(payload.get("dispositions") or []):
        if not isinstance(disposition, dict):
            raise InvalidRefund("a disposition is not an object")
        kind = str(disposition.get("type") or "").lower()
        if kind not in DISPOSITIONS:
            raise InvalidRefund(f"disposition type {disposition.get('type')!r} (known: {', '.join(DISPOSITIONS)})")
        quantity = disposition.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            raise InvalidRefund(f"disposition quantity {quantity!r}")
        rfo_item = disposition.get("reverse_fulfillment_order_line_item") or {}
        line_item = (rfo_item.get("fulfillment_line_item") or {}).get("line_item") or {}
        ident = disposition.get("id")
        if ident in (None, ""):
            ident = f"{payload.get('id')}:{rfo_item.get('id')}:{n}"
        location = disposition.get("location") or {}
        out[str(ident)] = {
            "type": kind, "quantity": quantity,
            "location_id": location.get("id") if isinstance(location, dict) else location,
            "line_item_id": str(line_item["id"]) if line_item.get("id") is not None else None,
            "at": disposition.get("created_at") or payload.get("updated_at") or payload.get("created_at"),
        }
    return out


def disposition_events(return_id: str, disposed: Mapping[str, dict], skus: Mapping[str, str],
                       location_map: Mapping[int | str, str], default_location: str,
                       ) -> tuple[list[StockEvent], list[str]]:
    """The ledger events of a return's dispositions, and the dispositions still waiting for
    their line item's SKU (the returns/request carrying it has not arrived yet)."""
    events: list[StockEvent] = []
    waiting: list[str] = []
    for ident, d in sorted(disposed.items()):
        if d["type"] == "missing" or d["quantity"] == 0:
            continue  # lost in transit: nothing came back
        sku = skus.get(d["line_item_id"] or "")
        if not sku:
            waiting.append(ident)
            continue
        if d["type"] == "restocked" and d["location_id"] in (None, ""):
            raise InvalidRefund(f"disposition {ident}: RESTOCKED needs a location")
        location = _location(location_map, d["location_id"], default_location)
        at = _time(d["at"])
        base = f"{SOURCE}:reverse_fulfillment_orders/dispose:{ident}"
        # referenced by the return, not the order: an order hold the ledger has ended
        # (released, shipped) must not swallow a damaged unit's unsellable mark
        reference = f"return-{return_id}"
        events.append(_event(f"{base}:in", "return", sku, location, d["quantity"], at, reference))
        if d["type"] in _HOLD_REASON:
            events.append(_event(f"{base}:hold", "adjustment", sku, location, d["quantity"], at, reference,
                                 reason=_HOLD_REASON[d["type"]]))
    return events, waiting


def _location(location_map: Mapping[int | str, str], location_id: Any, default_location: str) -> str:
    if location_id in (None, ""):
        return default_location  # damaged / held goods without a location: where returns arrive
    text = str(location_id)
    for key in (location_id, text, text.rsplit("/", 1)[-1], int(text) if text.isdigit() else None):
        if key is not None and key in location_map:
            return location_map[key]
    raise InvalidRefund(f"location {location_id} is not in the location map")


def _time(raw: Any) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc) if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _event(event_id: str, type_: str, sku: str, location: str, quantity: int, at: dt.datetime, reference: str,
           reason: str | None = None) -> StockEvent:
    event = StockEvent(event_id=event_id, type=type_, source=SOURCE, occurred_at=at, sku=sku,  # type: ignore[arg-type]
                       location=location, quantity=quantity, reference=reference, reason=reason)  # type: ignore[arg-type]
    try:
        return validate_event(event)
    except InvalidEvent as exc:
        raise InvalidRefund(f"disposition event {event_id}: {exc}") from None
