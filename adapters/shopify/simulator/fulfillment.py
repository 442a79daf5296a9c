"""Fulfilments in the simulator: an order's fulfillment orders, ``fulfillmentCreate`` and
the ``fulfillments/create`` webhook.

What Shopify does (shopify.md; Admin GraphQL ``FulfillmentOrder``, ``fulfillmentCreate``):

* Every order gets fulfillment orders, one per location assigned to fulfil it, each with
  line items carrying ``totalQuantity`` and ``remainingQuantity``.
* ``fulfillmentCreate(fulfillment: {lineItemsByFulfillmentOrder, trackingInfo,
  notifyCustomer})`` fulfils some or all remaining units of one or more fulfillment
  orders of one order at one location; a line item left out of a listed fulfillment
  order's ``fulfillmentOrderLineItems`` is not fulfilled, and an empty list means "all
  that remains". Refusals are ``userErrors`` (the mutation itself answers 200).
* Status transitions: ``OPEN`` -> ``IN_PROGRESS`` when some but not all units are
  fulfilled -> ``CLOSED`` once none remain; a cancelled order's fulfillment orders are
  ``CLOSED`` and cannot be fulfilled; a ``CLOSED`` one refuses a fulfilment.
* The fulfilled units leave ``committed`` and ``on_hand`` at the location (``available``
  does not change), and ``fulfillments/create`` is sent (REST shape, as in
  adapters/samples/shopify_fulfillments_create.json).

The simulator's own choices: one fulfillment order per order (sales.py routes an order
to one location); an order with fulfilled units cannot be cancelled (409
``ORDER_HAS_FULFILLMENTS``: Shopify asks for the fulfilments to be cancelled first, which
is not simulated); ``fulfillmentCreate`` takes no idempotency key (Shopify's does not
either): a client that must not fulfil twice reads ``order.fulfillments`` first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.shopify.gid import GidError, parse_gid

from ._util import gid, now_iso

_FIRST_FULFILLMENT_ID = 9_100_001


@dataclass
class _Fulfillment:
    id: int
    order_id: int
    number: int  # the n in "#1001.n"
    location_id: int
    lines: list[tuple[int, int]]  # (line item id, quantity)
    tracking: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = ""
    notify_customer: bool = False


def _error(path: list[str] | None, message: str) -> dict[str, Any]:
    return {"field": path, "message": message}


class FulfillmentMixin:
    """Fulfilments on :class:`~.state.SimulatorState` (its lock, orders and levels)."""

    _lock: Any
    _orders: dict
    _levels: dict
    _stats: Any
    #: set by the app: schedules webhook deliveries (the server's loop)
    emit_webhooks: Any = None

    def _reset_fulfillments(self) -> None:
        self._fulfillments: dict[int, list[_Fulfillment]] = {}
        self._fulfilled: dict[int, int] = {}  # line item id -> units fulfilled
        self._next_fulfillment = _FIRST_FULFILLMENT_ID

    def _fulfilled_units(self, line_id: int) -> int:
        return self._fulfilled.get(line_id, 0)

    def fulfillment_order_status(self, order: Any) -> str:
        if order.cancelled_at is not None:
            return "CLOSED"
        remaining = sum(max(0, ln.current_quantity - self._fulfilled_units(ln.id)) for ln in order.lines)
        done = sum(self._fulfilled_units(ln.id) for ln in order.lines)
        if remaining == 0:
            return "CLOSED"
        return "IN_PROGRESS" if done else "OPEN"

    # ---- shapes (override sales.py's to show what has been fulfilled) ------------------

    def order_node(self, order_id: int) -> dict[str, Any] | None:
        node = super().order_node(order_id)  # type: ignore[misc]
        if node is None:
            return None
        with self._lock:
            order = self._orders[order_id]
            for li in node["_lines"]:
                line_id = parse_gid(li["id"], "LineItem")[1]
                li["unfulfilledQuantity"] = max(0, li["currentQuantity"] - self._fulfilled_units(line_id))
            for fo in node["_fos"]:
                fo["status"] = self.fulfillment_order_status(order)
                for fol in fo["_lines"]:
                    fol["remainingQuantity"] = 0 if order.cancelled_at else fol["lineItem"]["unfulfilledQuantity"]
            node["_fulfillments"] = [self.fulfillment_node(f) for f in self._fulfillments.get(order_id, [])]
        return node

    def fulfillment_node(self, f: _Fulfillment) -> dict[str, Any]:
        order = self._orders[f.order_id]
        by_id = {ln.id: ln for ln in order.lines}
        return {
            "__typename": "Fulfillment",
            "id": gid("Fulfillment", f.id),
            "name": f"#{order.number}.{f.number}",
            "status": "SUCCESS",
            "createdAt": f.created_at,
            "updatedAt": f.created_at,
            "location": self.location_node(f.location_id),  # type: ignore[attr-defined]
            "trackingInfo": [dict(t) for t in f.tracking],
            "_lines": [
                {
                    "__typename": "FulfillmentLineItem",
                    "id": gid("FulfillmentLineItem", f.id * 1000 + i),
                    "quantity": qty,
                    "lineItem": {"__typename": "LineItem", "id": gid("LineItem", line_id), "sku": by_id[line_id].sku,
                                 "name": by_id[line_id].sku, "quantity": by_id[line_id].quantity,
                                 "currentQuantity": by_id[line_id].current_quantity,
                                 "unfulfilledQuantity": max(0, by_id[line_id].current_quantity
                                                            - self._fulfilled_units(line_id)),
                                 "_item": by_id[line_id].item_id},
                }
                for i, (line_id, qty) in enumerate(f.lines, start=1)
            ],
        }

    def order_webhook_body(self, order: Any) -> dict[str, Any]:
        body = super().order_webhook_body(order)  # type: ignore[misc]
        fulfilled = total = 0
        for li in body["line_items"]:
            done = self._fulfilled_units(li["id"])
            li["fulfillable_quantity"] = max(0, li["current_quantity"] - done)
            li["fulfillment_status"] = None if not done else ("fulfilled" if li["fulfillable_quantity"] == 0
                                                              else "partial")
            fulfilled += done
            total += li["current_quantity"]
        if fulfilled:
            body["fulfillment_status"] = "fulfilled" if fulfilled >= total else "partial"
        body["fulfillments"] = [self.fulfillment_webhook_body(f) for f in self._fulfillments.get(order.id, [])]
        return body

    def fulfillment_webhook_body(self, f: _Fulfillment) -> dict[str, Any]:
        order = self._orders[f.order_id]
        by_id = {ln.id: ln for ln in order.lines}
        numbers = [t["number"] for t in f.tracking if t.get("number")]
        urls = [t["url"] for t in f.tracking if t.get("url")]
        return {
            "id": f.id,
            "admin_graphql_api_id": gid("Fulfillment", f.id),
            "order_id": f.order_id,
            "name": f"#{order.number}.{f.number}",
            "status": "success",
            "service": "manual",
            "shipment_status": None,
            "location_id": f.location_id,
            "created_at": f.created_at,
            "updated_at": f.created_at,
            "tracking_company": next((t.get("company") for t in f.tracking if t.get("company")), None),
            "tracking_number": numbers[0] if numbers else None,
            "tracking_numbers": numbers,
            "tracking_url": urls[0] if urls else None,
            "tracking_urls": urls,
            "line_items": [
                {
                    "id": line_id,
                    "admin_graphql_api_id": gid("LineItem", line_id),
                    "variant_id": by_id[line_id].item_id,
                    "sku": by_id[line_id].sku,
                    "title": by_id[line_id].sku,
                    "quantity": qty,
                    "fulfillable_quantity": max(0, by_id[line_id].current_quantity - self._fulfilled_units(line_id)),
                    "fulfillment_status": "fulfilled",
                    "requires_shipping": True,
                }
                for line_id, qty in f.lines
            ],
        }

    # ---- cancellation (sales.py) refuses an order with fulfilled units -----------------

    def cancel_order(self, order_id: int | str, reason: str = "customer"):
        from .sales import CheckoutRefused

        with self._lock:
            try:
                oid = self._ref(order_id, "Order")  # type: ignore[attr-defined]
            except (GidError, TypeError, ValueError):
                oid = None
            order = self._orders.get(oid) if oid is not None else None
            if order is not None and any(self._fulfilled_units(ln.id) for ln in order.lines):
                raise CheckoutRefused("ORDER_HAS_FULFILLMENTS",
                                      f"order {oid} has fulfilled items: cancel its fulfillments first")
            return super().cancel_order(order_id, reason)  # type: ignore[misc]

    # ---- fulfillmentCreate ------------------------------------------------------------

    def fulfillment_create(self, inp: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """Run ``fulfillmentCreate``; returns the payload and the webhook events."""
        groups = inp.get("lineItemsByFulfillmentOrder") or []
        base = ["fulfillment", "lineItemsByFulfillmentOrder"]
        if not groups:
            return {"fulfillment": None, "userErrors": [_error(base, "Line items by fulfillment order must not be empty.")]}, []
        with self._lock:
            order = None
            wanted: dict[int, int] = {}
            errors: list[dict[str, Any]] = []
            for gi, group in enumerate(groups):
                path = [*base, str(gi), "fulfillmentOrderId"]
                try:
                    fo_id = parse_gid(group.get("fulfillmentOrderId"), "FulfillmentOrder")[1]
                except (GidError, TypeError):
                    errors.append(_error(path, "Invalid fulfillment order id."))
                    continue
                # one fulfillment order per order, with the order's id (sales.py)
                fo_order = self._orders.get(fo_id)
                if fo_order is None:
                    errors.append(_error(path, "Fulfillment order does not exist."))
                    continue
                if order is not None and fo_order.id != order.id:
                    errors.append(_error(path, "All fulfillment orders must belong to the same order."))
                    continue
                order = fo_order
                status = self.fulfillment_order_status(order)
                if status == "CLOSED":
                    errors.append(_error(path, f"Fulfillment order {gid('FulfillmentOrder', fo_id)} has an "
                                               f"unfulfillable status= closed."))
                    continue
                by_id = {ln.id: ln for ln in order.lines}
                items = group.get("fulfillmentOrderLineItems")
                if not items:  # all that remains
                    for ln in order.lines:
                        left = ln.current_quantity - self._fulfilled_units(ln.id) - wanted.get(ln.id, 0)
                        if left > 0:
                            wanted[ln.id] = wanted.get(ln.id, 0) + left
                    continue
                for ii, item in enumerate(items):
                    ipath = [*base, str(gi), "fulfillmentOrderLineItems", str(ii)]
                    try:
                        line_id = parse_gid(item.get("id"), "FulfillmentOrderLineItem")[1]
                    except (GidError, TypeError):
                        errors.append(_error([*ipath, "id"], "Invalid fulfillment order line item id."))
                        continue
                    qty = item.get("quantity")
                    line = by_id.get(line_id)
                    if line is None:
                        errors.append(_error([*ipath, "id"], "Fulfillment order line item does not exist."))
                        continue
                    if not isinstance(qty, int) or qty <= 0:
                        errors.append(_error([*ipath, "quantity"], "Quantity must be greater than 0."))
                        continue
                    left = line.current_quantity - self._fulfilled_units(line_id) - wanted.get(line_id, 0)
                    if qty > left:
                        errors.append(_error([*ipath, "quantity"], "Invalid fulfillment order line item quantity "
                                                                   f"requested: {qty} asked, {max(0, left)} remaining."))
                        continue
                    wanted[line_id] = wanted.get(line_id, 0) + qty
            if not errors and (order is None or not wanted):
                errors.append(_error(base, "Nothing to fulfil: no units remain on these fulfillment orders."))
            if errors:
                self._stats_count("fulfillments_refused")
                return {"fulfillment": None, "userErrors": errors}, []
            assert order is not None
            tracking = _tracking(inp.get("trackingInfo"))
            fulfillments = self._fulfillments.setdefault(order.id, [])
            f = _Fulfillment(self._next_fulfillment, order.id, len(fulfillments) + 1, order.location_id,
                             sorted(wanted.items()), tracking, now_iso(), bool(inp.get("notifyCustomer")))
            self._next_fulfillment += 1
            fulfillments.append(f)
            by_id = {ln.id: ln for ln in order.lines}
            for line_id, qty in wanted.items():
                self._fulfilled[line_id] = self._fulfilled_units(line_id) + qty
                level = self._levels.get((by_id[line_id].item_id, order.location_id))
                if level is not None:  # the units leave the building: committed and on hand drop
                    level.quantities["committed"] -= qty
                    level.quantities["on_hand"] = level.quantities.get("on_hand", 0) - qty
                    level.updated_at = now_iso()
            order.updated_at = now_iso()
            self._stats_count("fulfillments")
            node = self.fulfillment_node(f)
            return {"fulfillment": node, "userErrors": []}, [("fulfillments/create", self.fulfillment_webhook_body(f))]

    def _stats_count(self, name: str) -> None:
        if hasattr(self._stats, name):
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    def fulfillments_of(self, order_id: int) -> list[dict[str, Any]]:
        """REST-shaped fulfilments of an order (tests, ``GET /_sim/orders``)."""
        with self._lock:
            return [self.fulfillment_webhook_body(f) for f in self._fulfillments.get(order_id, [])]


def _tracking(info: Any) -> list[dict[str, Any]]:
    if not isinstance(info, dict):
        return []
    numbers = list(info.get("numbers") or [])
    if info.get("number"):
        numbers.insert(0, info["number"])
    urls = list(info.get("urls") or [])
    if info.get("url"):
        urls.insert(0, info["url"])
    company = info.get("company")
    out = []
    for i, number in enumerate(dict.fromkeys(numbers)):
        out.append({"number": number, "company": company, "url": urls[i] if i < len(urls) else None})
    if not out and (company or urls):
        out.append({"number": None, "company": company, "url": urls[0] if urls else None})
    return out


# ---- GraphQL: resolvers and the mutation (bound by gql.py) ---------------------------


def _fulfillments(state: Any, parent: dict[str, Any], args: dict[str, Any]) -> list[dict[str, Any]]:
    rows = parent.get("_fulfillments") or []
    first = args.get("first")
    return rows[:first] if isinstance(first, int) else rows


def _fulfillment_lines(state: Any, parent: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    from .gql import _list_connection

    return _list_connection(parent["_lines"], args)


RESOLVERS = {
    ("Order", "fulfillments"): _fulfillments,
    ("Fulfillment", "fulfillmentLineItems"): _fulfillment_lines,
    ("Fulfillment", "trackingInfo"): lambda s, p, a: p["trackingInfo"][: a["first"]] if a.get("first") else p["trackingInfo"],
    ("FulfillmentLineItem", "lineItem"): lambda s, p, a: p["lineItem"],
}


async def _fulfillment_create(parent: Any, info: Any, fulfillment: dict[str, Any], message: str | None = None) -> dict[str, Any]:
    state = info.context.state
    payload, events = state.fulfillment_create(fulfillment)
    if events and state.emit_webhooks is not None:
        state.emit_webhooks(events)
    return payload


MUTATION_RESOLVERS = {"fulfillmentCreate": _fulfillment_create}

SDL = '''
type FulfillmentTrackingInfo {
  number: String
  company: String
  url: URL
}

enum FulfillmentStatus { SUCCESS CANCELLED ERROR FAILURE OPEN PENDING }

type FulfillmentLineItem implements Node {
  id: ID!
  quantity: Int
  lineItem: LineItem!
}
type FulfillmentLineItemEdge { cursor: String! node: FulfillmentLineItem! }
type FulfillmentLineItemConnection { edges: [FulfillmentLineItemEdge!]! nodes: [FulfillmentLineItem!]! pageInfo: PageInfo! }

type Fulfillment implements Node {
  id: ID!
  name: String!
  status: FulfillmentStatus!
  createdAt: DateTime!
  updatedAt: DateTime!
  location: Location
  trackingInfo(first: Int): [FulfillmentTrackingInfo!]!
  fulfillmentLineItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): FulfillmentLineItemConnection!
}

input FulfillmentOrderLineItemInput { id: ID! quantity: Int! }
input FulfillmentOrderLineItemsInput { fulfillmentOrderId: ID! fulfillmentOrderLineItems: [FulfillmentOrderLineItemInput!] }
input FulfillmentTrackingInput { number: String numbers: [String!] company: String url: URL urls: [URL!] }
input FulfillmentInput {
  lineItemsByFulfillmentOrder: [FulfillmentOrderLineItemsInput!]!
  trackingInfo: FulfillmentTrackingInput
  notifyCustomer: Boolean = false
}
type FulfillmentCreatePayload { fulfillment: Fulfillment userErrors: [UserError!]! }
'''
#: the Order field and the Mutation field this module adds (schema.py splices them in)
ORDER_FIELDS = "  fulfillments(first: Int): [Fulfillment!]!\n"
MUTATION_FIELDS = "  fulfillmentCreate(fulfillment: FulfillmentInput!, message: String): FulfillmentCreatePayload\n"
