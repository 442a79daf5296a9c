"""A Shopify order, as its webhooks carry it, to the ERP sale it becomes. Pure: no I/O.

Amounts are taken as Shopify computed them (its `price`, `discount_allocations`,
`shipping_lines`, `total_tax`), never recomputed, so the ERP sale's total is the order's
`total_price`: goods lines at their price, one discount line per discounted line item,
one shipping line per shipping line (less its discounts), one tax line for the order's
tax unless prices include tax. Quantities are `current_quantity` (what is left after
edits and removals) where Shopify sends it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.erp.port import PartyRef, SaleDraft, SaleLine, UnknownLocation

ORDER_TOPICS = ("orders/create", "orders/updated", "orders/paid", "orders/cancelled")
#: the party guests' orders go to when the order names nobody
GUEST_PARTY = "Shopify guest"


class InvalidOrder(ValueError):
    """The payload is not an order the flow can post (no number, bad amount, ...)."""

    reason = "invalid_order"


def _money(value: Any, what: str) -> Decimal:
    try:
        amount = Decimal(str(value if value not in (None, "") else "0"))
    except InvalidOperation as exc:
        raise InvalidOrder(f"{what} is not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidOrder(f"{what} is not an amount: {value!r}")
    return amount


def default_shop(erp_shop: str | None, shopify_url: str | None, shop_domain: str | None = None) -> str:
    """The shop's name in sale references when a document does not say (a 945, the CLI):
    AVAILABILITY_ERP_SHOP, else the shop's domain (what its webhooks name it), else the
    Shopify URL's host."""
    if erp_shop or shop_domain:
        return erp_shop or shop_domain or ""
    if shopify_url:
        from urllib.parse import urlparse  # noqa: PLC0415

        return urlparse(shopify_url).netloc or "shopify"
    return "shopify"


def reference(shop: str, payload: dict) -> str:
    """The ERP sale's reference: the shop and its order number ("shop#1001")."""
    number = payload.get("order_number")
    if number in (None, ""):
        name = str(payload.get("name") or "").lstrip("#")
        number = name or None
    if number in (None, "") or not shop:
        raise InvalidOrder("the order has no order number (or the shop is unknown)")
    return f"{shop}#{number}"


def is_paid(payload: dict) -> bool:
    return payload.get("financial_status") in ("paid", "partially_refunded", "refunded")


def is_cancelled(payload: dict) -> bool:
    return bool(payload.get("cancelled_at"))


def party(payload: dict) -> PartyRef:
    customer = payload.get("customer") or {}
    billing = payload.get("billing_address") or payload.get("shipping_address") or {}
    email = customer.get("email") or payload.get("email") or payload.get("contact_email")
    phone = customer.get("phone") or payload.get("phone") or billing.get("phone")
    name = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p).strip()
    name = name or (billing.get("name") or "").strip() or (email or "") or GUEST_PARTY
    return PartyRef(name=name, email=email or None, phone=phone or None)


def sale_date(payload: dict) -> dt.date:
    raw = payload.get("processed_at") or payload.get("created_at")
    if not raw:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.datetime.fromisoformat(str(raw)).date()
    except ValueError as exc:
        raise InvalidOrder(f"created_at is not a timestamp: {raw!r}") from exc


def warehouse(payload: dict, warehouses: dict[str, str] | None) -> str | None:
    """The ERP warehouse of the order's Shopify location (a POS sale's store; an online
    order has none). With no mapping configured every order uses the ERP's default
    warehouse; with one, a location it does not name is an `unknown_location` exception."""
    location = payload.get("location_id")
    if not warehouses or location in (None, ""):
        return None
    code = warehouses.get(str(location))
    if not code:
        raise UnknownLocation(f"Shopify location {location} has no ERP warehouse (AVAILABILITY_ERP_WAREHOUSES)")
    return code


def to_sale(shop: str, payload: dict, warehouses: dict[str, str] | None = None) -> SaleDraft:
    ref = reference(shop, payload)
    lines: list[SaleLine] = []
    items = payload.get("line_items")
    if not isinstance(items, list) or not items:
        raise InvalidOrder("the order has no line items")
    for item in items:
        qty_raw = item.get("current_quantity", item.get("quantity"))
        try:
            quantity = Decimal(int(qty_raw))
        except (TypeError, ValueError) as exc:
            raise InvalidOrder(f"line item {item.get('id')} has no whole quantity: {qty_raw!r}") from exc
        if quantity <= 0:
            continue  # removed by an edit
        sku = (item.get("sku") or "").strip() or None
        title = item.get("name") or item.get("title") or (sku or "item")
        price = _money(item.get("price"), f"line item {item.get('id')} price")
        lines.append(SaleLine(kind="goods" if sku else "misc", description=title, quantity=quantity,
                              unit_price=price, sku=sku))
        discount = sum((_money(a.get("amount"), "discount") for a in item.get("discount_allocations") or []),
                       Decimal("0"))
        if discount:
            lines.append(SaleLine(kind="discount", description=f"Discount on {title}", quantity=Decimal(1),
                                  unit_price=-discount))
    for ship in payload.get("shipping_lines") or []:
        price = _money(ship.get("discounted_price", ship.get("price")), "shipping price")
        if price:
            lines.append(SaleLine(kind="shipping", description=ship.get("title") or "Shipping",
                                  quantity=Decimal(1), unit_price=price))
    if not payload.get("taxes_included"):
        tax = payload.get("total_tax")
        if tax in (None, ""):
            tax = sum((_money(t.get("price"), "tax") for item in items for t in item.get("tax_lines") or []),
                      Decimal("0"))
        tax = _money(tax, "total_tax")
        if tax:
            lines.append(SaleLine(kind="tax", description="Tax", quantity=Decimal(1), unit_price=tax))
    if not lines:
        raise InvalidOrder("every line item was removed")
    currency = str(payload.get("currency") or "USD")
    name = payload.get("name") or ref
    return SaleDraft(reference=ref, party=party(payload), currency=currency, sale_date=sale_date(payload),
                     lines=tuple(lines), description=f"Shopify order {name} ({payload.get('source_name') or 'web'})",
                     warehouse=warehouse(payload, warehouses))


def expected_total(payload: dict) -> Decimal | None:
    """Shopify's own total of the order as it stands (for reconciliation)."""
    for key in ("current_total_price", "total_price"):
        if payload.get(key) not in (None, ""):
            return _money(payload[key], key)
    return None
