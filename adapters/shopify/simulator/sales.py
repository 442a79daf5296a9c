"""Shopify's own sales in the simulator: checkouts, orders and cancellations.

What Shopify does (shopify.md, "Orders, checkouts and Shopify's own stock moves"): at
checkout it moves the ordered units from ``available`` to ``committed`` at the location it
assigns (``on_hand`` is unchanged), before any webhook goes out; an item whose variant
is set to continue selling (``inventoryPolicy: CONTINUE``) can go below zero, one set to
``DENY`` cannot be bought beyond what is available. ``orders/create`` and
``inventory_levels/update`` then arrive in no guaranteed order. Cancelling an order with
restock returns the unfulfilled units from ``committed`` to ``available``.

The simulator's own choices:

* One location per order: the given one, else the first active location (by id) where
  every line is stocked and can be sold (enough available, or CONTINUE). Shopify's
  order routing can split an order across locations; the simulator never does.
* A refused checkout is all-or-nothing (no partial orders) and answered 409 with a
  code (``NOT_ENOUGH_STOCK``, ``ITEM_NOT_STOCKED_AT_LOCATION``) of the simulator's own.
* Every unit costs 10.00 USD; the variant and product ids are the inventory item id.
* Cancellation always restocks (Shopify's ``orderCancel(restock: true)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.shopify.gid import GidError, location_gid

from ._util import gid, now_iso

UNIT_PRICE = "10.00"
_CANCEL_REASONS = {"customer", "declined", "fraud", "inventory", "staff", "other"}


@dataclass
class _OrderLine:
    id: int
    item_id: int
    sku: str
    quantity: int
    current_quantity: int


@dataclass
class _Order:
    id: int
    number: int
    location_id: int  # where Shopify committed the units
    source_name: str
    lines: list[_OrderLine]
    created_at: str
    updated_at: str
    cancelled_at: str | None = None
    cancel_reason: str | None = None
    customer_id: int | None = None  # the buyer (customers.py); None = a guest checkout


class CheckoutRefused(Exception):
    """A checkout Shopify would not complete (nothing available, unknown item, ...)."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class SalesMixin:
    """Checkout and cancellation on :class:`~.state.SimulatorState` (its lock and maps)."""

    _lock: Any
    _items: dict
    _locations: dict
    _levels: dict
    _levels_by_item: dict
    _orders: dict
    _stats: Any
    _rng: Any

    def _line_item_id(self, line: dict[str, Any]) -> int:
        if line.get("inventory_item_id") is not None:
            try:
                item_id = self._ref(line["inventory_item_id"], "InventoryItem")  # type: ignore[attr-defined]
            except (GidError, TypeError, ValueError):
                raise CheckoutRefused("INVALID_LINE", f"bad inventory_item_id {line['inventory_item_id']!r}", 400) from None
        elif isinstance(line.get("sku"), str):
            found = self.item_id_by_sku(line["sku"])  # type: ignore[attr-defined]
            if found is None:
                raise CheckoutRefused("INVALID_LINE", f"no item with sku {line['sku']!r}", 400)
            item_id = found
        else:
            raise CheckoutRefused("INVALID_LINE", "each line needs inventory_item_id or sku", 400)
        if item_id not in self._items:
            raise CheckoutRefused("INVALID_LINE", f"unknown inventory item {item_id}", 400)
        return item_id

    def _sellable_at(self, loc_id: int, wanted: dict[int, int]) -> bool:
        for item_id, qty in wanted.items():
            level = self._levels.get((item_id, loc_id))
            if level is None:
                return False
            if self._items[item_id].policy == "DENY" and level.quantities["available"] < qty:
                return False
        return True

    def checkout(
        self, lines: list[dict[str, Any]], location: int | str | None = None, source_name: str = "web",
        customer_id: int | None = None,
        backdate: str | None = None,
        presentment: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """Complete a checkout atomically or raise :class:`CheckoutRefused`.

        ``lines``: ``[{"inventory_item_id" | "sku", "quantity"}]``. Returns the
        ``orders/create`` payload and the webhook events, in the order they happened.
        The order is paid through Shopify Payments (a CHARGE, ``payments.py``);
        ``backdate`` (ISO time) dates the order and its charge (activity generator);
        ``presentment`` ``{"currency", "rate"}``: the buyer paid in another currency than the
        shop's (its amounts are the shop money times the rate; the books get the shop money)."""
        if not isinstance(lines, list) or not lines:
            raise CheckoutRefused("INVALID_LINE", "a checkout needs at least one line item", 400)
        if presentment is not None:
            try:
                rate = Decimal(str(presentment.get("rate", 1)))
            except (InvalidOperation, AttributeError):
                rate = Decimal(0)
            currency = presentment.get("currency") if isinstance(presentment, dict) else None
            if not rate.is_finite() or rate <= 0 or not isinstance(currency, str) or len(currency) != 3:
                raise CheckoutRefused("INVALID_PRESENTMENT", "presentment is {currency: ISO code, rate: > 0}", 400)
        if customer_id is not None and (not isinstance(customer_id, int) or self.customer_body(customer_id) is None):  # type: ignore[attr-defined]
            raise CheckoutRefused("INVALID_CUSTOMER", f"unknown customer {customer_id!r}", 400)
        with self._lock:
            wanted: dict[int, int] = {}
            for line in lines:
                if not isinstance(line, dict):
                    raise CheckoutRefused("INVALID_LINE", "line items are objects", 400)
                qty = line.get("quantity", 1)
                if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
                    raise CheckoutRefused("INVALID_LINE", f"quantity must be a positive integer, got {qty!r}", 400)
                item_id = self._line_item_id(line)
                wanted[item_id] = wanted.get(item_id, 0) + qty
            if location is not None:
                try:
                    loc_id = self._ref(location, "Location")  # type: ignore[attr-defined]
                except (GidError, TypeError, ValueError):
                    raise CheckoutRefused("INVALID_LOCATION", f"bad location {location!r}", 400) from None
                if loc_id not in self._locations:
                    raise CheckoutRefused("INVALID_LOCATION", f"unknown location {location!r}", 400)
                for item_id in wanted:
                    if (item_id, loc_id) not in self._levels:
                        self._stats.checkouts_refused += 1
                        raise CheckoutRefused("ITEM_NOT_STOCKED_AT_LOCATION", f"item {item_id} is not stocked at location {loc_id}")
                if not self._sellable_at(loc_id, wanted):
                    self._stats.checkouts_refused += 1
                    raise CheckoutRefused("NOT_ENOUGH_STOCK", "not enough inventory available at that location")
            else:
                candidates = [loc for loc in sorted(self._locations) if self._locations[loc].active and self._sellable_at(loc, wanted)]
                if not candidates:
                    self._stats.checkouts_refused += 1
                    raise CheckoutRefused("NOT_ENOUGH_STOCK", "not enough inventory available for this order")
                loc_id = candidates[0]

            events: list[tuple[str, dict[str, Any]]] = []
            order_lines = []
            for item_id, qty in wanted.items():
                level = self._levels[(item_id, loc_id)]
                before = level.quantities["available"]
                level.quantities["available"] -= qty
                level.quantities["committed"] += qty
                level.updated_at = now_iso()
                self._stats.units_sold += qty
                self._stats.oversold_units += qty - max(0, min(qty, before))
                self._record(level, "available", before, before - qty, -qty, "checkout")  # type: ignore[attr-defined]
                events.append(self._level_event(level))  # type: ignore[attr-defined]
                order_lines.append(_OrderLine(self._next_line, item_id, self._items[item_id].sku, qty, qty))
                self._next_line += 1
            at = backdate or now_iso()
            order = _Order(self._next_order, self._order_number, loc_id, source_name, order_lines, at, at,
                           customer_id=customer_id)
            self._next_order += 1
            self._order_number += 1
            self._orders[order.id] = order
            self._stats.checkouts += 1
            if presentment:
                self.refunds.set_money(order.id, currency=presentment.get("currency"),  # type: ignore[attr-defined]
                                       rate=presentment.get("rate"))
            body = self.order_webhook_body(order)
            self.payments.charge(order.id, body["name"], body["total_price"], at=at)  # type: ignore[attr-defined]
            # Shopify commits the stock before it announces anything; the order webhook and
            # the level webhooks are independent deliveries.
            return body, [("orders/create", body), *events]

    def random_checkout(self, max_quantity: int = 1) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]] | None:
        """One background shopper: a random stocked item, 1..max_quantity units."""
        with self._lock:
            items = sorted(self._levels_by_item)
            if not items:
                return None
            item_id = self._rng.choice(items)
            qty = self._rng.randint(1, max(1, max_quantity))
        try:
            return self.checkout([{"inventory_item_id": item_id, "quantity": qty}])
        except CheckoutRefused:
            return None

    def cancel_order(self, order_id: int | str, reason: str = "customer") -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """Cancel with restock: unfulfilled units go from committed back to available."""
        if reason not in _CANCEL_REASONS:
            raise CheckoutRefused("INVALID_REASON", f"cancel reason is one of {sorted(_CANCEL_REASONS)}", 400)
        with self._lock:
            try:
                oid = self._ref(order_id, "Order")  # type: ignore[attr-defined]
            except (GidError, TypeError, ValueError):
                raise CheckoutRefused("INVALID_ORDER", f"bad order id {order_id!r}", 400) from None
            order = self._orders.get(oid)
            if order is None:
                raise CheckoutRefused("INVALID_ORDER", f"no order {order_id!r}", 404)
            if order.cancelled_at is not None:
                raise CheckoutRefused("ORDER_ALREADY_CANCELLED", f"order {oid} is already cancelled")
            events: list[tuple[str, dict[str, Any]]] = []
            for line in order.lines:
                units = line.current_quantity
                level = self._levels.get((line.item_id, order.location_id))
                line.current_quantity = 0
                if not units or level is None:
                    continue
                before = level.quantities["available"]
                level.quantities["committed"] -= units
                level.quantities["available"] += units
                level.updated_at = now_iso()
                self._record(level, "available", before, before + units, units, "cancel")  # type: ignore[attr-defined]
                events.append(self._level_event(level))  # type: ignore[attr-defined]
            order.cancelled_at = order.updated_at = now_iso()
            order.cancel_reason = reason
            self._stats.cancellations += 1
            self.payments.refund_rest(order.id, at=order.cancelled_at)  # type: ignore[attr-defined]
            body = self.order_webhook_body(order)
            return body, [("orders/cancelled", body), *events]

    # ---- shapes --------------------------------------------------------------------------

    def order_webhook_body(self, order: _Order) -> dict[str, Any]:
        """REST-shaped order, as in adapters/samples/shopify_orders_create.json."""
        pos = order.source_name == "pos"
        cancelled = order.cancelled_at is not None
        lines = [
            {
                "id": ln.id,
                "admin_graphql_api_id": gid("LineItem", ln.id),
                "variant_id": ln.item_id,
                "product_id": ln.item_id,
                "sku": ln.sku,
                "title": ln.sku,
                "variant_title": None,
                "name": ln.sku,
                "quantity": ln.quantity,
                "current_quantity": ln.current_quantity,
                "fulfillable_quantity": ln.current_quantity,
                "fulfillment_service": "manual",
                "fulfillment_status": None,
                "requires_shipping": True,
                "gift_card": False,
                "taxable": True,
                "price": UNIT_PRICE,
                "price_set": self.refunds.money_set(order.id, UNIT_PRICE),  # type: ignore[attr-defined]
                "vendor": None,
            }
            for ln in order.lines
        ]
        total = sum(ln.quantity for ln in order.lines) * float(UNIT_PRICE)
        money = self.refunds.money_of(order.id)  # type: ignore[attr-defined]
        customer = self.customer_body(order.customer_id) if order.customer_id else None  # type: ignore[attr-defined]
        return {
            "id": order.id,
            "admin_graphql_api_id": gid("Order", order.id),
            "name": f"#{order.number}",
            "order_number": order.number,
            "email": (customer or {}).get("email"),
            "customer": customer,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "processed_at": order.created_at,
            "cancelled_at": order.cancelled_at,
            "cancel_reason": order.cancel_reason,
            "closed_at": None,
            "confirmed": True,
            "currency": self.config.currency,  # type: ignore[attr-defined]
            "presentment_currency": money.currency,
            "financial_status": "refunded" if cancelled else "paid",
            "fulfillment_status": None,
            "source_name": order.source_name,
            "location_id": order.location_id if pos else None,
            "device_id": None,
            "test": False,
            "total_price": f"{total:.2f}",
            "total_price_set": self.refunds.money_set(order.id, f"{total:.2f}"),  # type: ignore[attr-defined]
            "line_items": lines,
            "fulfillments": [],
            "refunds": [],
        }

    def order(self, order_id: int) -> _Order | None:
        """One order by id (``GET /_sim/orders`` renders each with :meth:`order_webhook_body`)."""
        with self._lock:
            return self._orders.get(order_id)

    def order_node(self, order_id: int) -> dict[str, Any] | None:
        """GraphQL ``Order`` (with its one fulfillment order at the committed location)."""
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                return None
            lines = [
                {
                    "__typename": "LineItem",
                    "id": gid("LineItem", ln.id),
                    "sku": ln.sku,
                    "name": ln.sku,
                    "quantity": ln.quantity,
                    "currentQuantity": ln.current_quantity,
                    "unfulfilledQuantity": ln.current_quantity,
                    "_item": ln.item_id,
                }
                for ln in order.lines
            ]
            loc = self.location_node(order.location_id)  # type: ignore[attr-defined]
            fo = {
                "__typename": "FulfillmentOrder",
                "id": gid("FulfillmentOrder", order.id),
                "status": "CLOSED" if order.cancelled_at else "OPEN",
                "assignedLocation": {"location": loc, "name": loc["name"] if loc else ""},
                "_lines": [
                    {
                        "__typename": "FulfillmentOrderLineItem",
                        "id": gid("FulfillmentOrderLineItem", li_id),
                        "lineItem": li,
                        "totalQuantity": li["quantity"],
                        "remainingQuantity": li["currentQuantity"],
                    }
                    for li_id, li in zip((ln.id for ln in order.lines), lines, strict=True)
                ],
            }
            return {
                "__typename": "Order",
                "id": gid("Order", order.id),
                "name": f"#{order.number}",
                "createdAt": order.created_at,
                "updatedAt": order.updated_at,
                "cancelledAt": order.cancelled_at,
                "cancelReason": order.cancel_reason.upper() if order.cancel_reason else None,
                "sourceName": order.source_name,
                "test": False,
                "retailLocation": loc if order.source_name == "pos" else None,
                "_lines": lines,
                "_fos": [fo],
                "_order": order.id,
            }

    def orders_committed_at(self) -> dict[tuple[str, str], int]:
        """Units still committed by open orders, per (item GID, location GID) (tests)."""
        with self._lock:
            out: dict[tuple[str, str], int] = {}
            for order in self._orders.values():
                for ln in order.lines:
                    if ln.current_quantity:
                        key = (gid("InventoryItem", ln.item_id), location_gid(order.location_id))
                        out[key] = out.get(key, 0) + ln.current_quantity
            return out
