"""Refunds and returns in the simulator: ``refundCreate``, ``returnRequest`` /
``returnCreate`` / ``returnApprove`` / ``returnDecline`` / ``returnClose``,
``reverseFulfillmentOrderDispose``, and the ``refunds/create``, ``returns/*`` and
``reverse_fulfillment_orders/dispose`` webhooks they send.

What Shopify documents and the simulator keeps:

* A refund line refunds at most what was sold minus what earlier refunds took back.
  ``restockType``: ``CANCEL`` only for units not fulfilled yet (they go from committed
  back to available at the order's location), ``RETURN`` only for fulfilled units and
  with a ``locationId`` (available +q there), ``NO_RESTOCK`` for any (money only).
  ``LEGACY_RESTOCK`` is refused as deprecated. Errors are ``userErrors`` with ``field``
  paths, never a GraphQL error.
* Money is a ``MoneyBag``: ``shopMoney`` (the shop's currency, what the books get) and
  ``presentmentMoney`` (what the customer paid in). A refund's calculated amount is its
  lines at the order's unit price plus the shipping refunded; ``transactions`` say what
  really goes back (kind ``REFUND``, at most what was paid and not refunded yet); a
  difference between the two is an order adjustment ``refund_discrepancy``, a shipping
  refund an adjustment ``shipping_refund`` (both negative when money goes back, as
  Shopify records them), in the webhook payload since API 2024-10.
* A return names fulfillment line items (at most what was fulfilled and not already in a
  return); ``returnRequest`` leaves it ``REQUESTED`` until ``returnApprove`` opens it,
  ``returnCreate`` opens it at once. An open return has one reverse fulfillment order
  whose line items are disposed (``RESTOCKED`` with a location: available +q there;
  ``NOT_RESTOCKED``, ``PROCESSING_REQUIRED``, ``MISSING``: Shopify's stock does not
  change), each unit at most once.
* A POS return is a refund of a POS order (its units were fulfilled at the till) with
  ``RETURN`` at the store's location.

The simulator's own choices: no tax and no duties (orders have none); presentment money
is the shop money times a per-order rate set at checkout (``presentment``) or through
``/_sim/orders/{id}/money`` (1 by default, the shop's currency, ``SimulatorConfig.currency``); a shipping amount per order is set there too (the
simulator's checkouts charge none). Until the simulator has fulfillments
(``fulfillmentCreate``), units are marked fulfilled through
``/_sim/orders/{id}/fulfilled``; POS orders are fulfilled at creation. Fulfillment line
item ids are the line item ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from adapters.shopify.gid import GidError

from ._util import gid, now_iso

SDL = '''
enum CurrencyCode { USD EUR GBP CAD AUD JPY CHF SEK DKK NOK }
type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
type MoneyBag { shopMoney: MoneyV2! presentmentMoney: MoneyV2! }

enum RefundLineItemRestockType { CANCEL RETURN NO_RESTOCK LEGACY_RESTOCK }
enum OrderTransactionKind { AUTHORIZATION CAPTURE SALE REFUND VOID CHANGE EMV_AUTHORIZATION SUGGESTED_REFUND }
enum OrderTransactionStatus { AWAITING_RESPONSE ERROR FAILURE PENDING SUCCESS UNKNOWN }
enum OrderAdjustmentKind { SHIPPING_REFUND REFUND_DISCREPANCY }

type RefundLineItem {
  id: ID!
  lineItem: LineItem!
  quantity: Int!
  restockType: RefundLineItemRestockType!
  restocked: Boolean!
  location: Location
  subtotalSet: MoneyBag!
  totalTaxSet: MoneyBag!
}
type RefundLineItemEdge { cursor: String! node: RefundLineItem! }
type RefundLineItemConnection { edges: [RefundLineItemEdge!]! nodes: [RefundLineItem!]! pageInfo: PageInfo! }

type OrderTransaction implements Node {
  id: ID!
  kind: OrderTransactionKind!
  status: OrderTransactionStatus!
  gateway: String
  amountSet: MoneyBag!
  processedAt: DateTime
}
type OrderTransactionEdge { cursor: String! node: OrderTransaction! }
type OrderTransactionConnection { edges: [OrderTransactionEdge!]! nodes: [OrderTransaction!]! pageInfo: PageInfo! }

type OrderAdjustment {
  id: ID!
  reason: OrderAdjustmentKind
  amountSet: MoneyBag!
  taxAmountSet: MoneyBag!
}
type OrderAdjustmentEdge { cursor: String! node: OrderAdjustment! }
type OrderAdjustmentConnection { edges: [OrderAdjustmentEdge!]! nodes: [OrderAdjustment!]! pageInfo: PageInfo! }

type Refund implements Node {
  id: ID!
  createdAt: DateTime
  note: String
  order: Order!
  totalRefundedSet: MoneyBag!
  refundLineItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): RefundLineItemConnection!
  transactions(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): OrderTransactionConnection!
  orderAdjustments(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): OrderAdjustmentConnection!
}

input RefundLineItemInput { lineItemId: ID! quantity: Int! restockType: RefundLineItemRestockType = RETURN locationId: ID }
input ShippingRefundInput { amount: Decimal fullRefund: Boolean }
input OrderTransactionInput { amount: Decimal! gateway: String! kind: OrderTransactionKind! orderId: ID! parentId: ID }
input RefundInput {
  orderId: ID!
  note: String
  notify: Boolean
  currency: CurrencyCode
  shipping: ShippingRefundInput
  refundLineItems: [RefundLineItemInput!]
  transactions: [OrderTransactionInput!]
}
type RefundCreatePayload { refund: Refund order: Order userErrors: [UserError!]! }

enum ReturnStatus { CANCELED CLOSED DECLINED OPEN REQUESTED }
enum ReturnReason { COLOR DEFECTIVE NOT_AS_DESCRIBED OTHER SIZE_TOO_LARGE SIZE_TOO_SMALL STYLE UNKNOWN UNWANTED WRONG_ITEM }
enum ReverseFulfillmentOrderStatus { CANCELED CLOSED OPEN }
enum ReverseFulfillmentOrderDispositionType { MISSING NOT_RESTOCKED PROCESSING_REQUIRED RESTOCKED }
enum ReturnErrorCode { ALREADY_EXISTS BLANK CREATION_FAILED INVALID INVALID_STATE NOT_FOUND NOTIFICATION_FAILED TOO_BIG TOO_SHORT }

# FulfillmentLineItem: defined with fulfillments (fulfillment.py)

type ReturnLineItem implements Node {
  id: ID!
  fulfillmentLineItem: FulfillmentLineItem!
  quantity: Int!
  returnReason: ReturnReason!
  customerNote: String
}
type ReturnLineItemEdge { cursor: String! node: ReturnLineItem! }
type ReturnLineItemConnection { edges: [ReturnLineItemEdge!]! nodes: [ReturnLineItem!]! pageInfo: PageInfo! }

type ReverseFulfillmentOrderDisposition implements Node {
  id: ID!
  quantity: Int!
  type: ReverseFulfillmentOrderDispositionType!
  location: Location
}

type ReverseFulfillmentOrderLineItem implements Node {
  id: ID!
  totalQuantity: Int!
  fulfillmentLineItem: FulfillmentLineItem
  dispositions: [ReverseFulfillmentOrderDisposition!]!
}
type ReverseFulfillmentOrderLineItemEdge { cursor: String! node: ReverseFulfillmentOrderLineItem! }
type ReverseFulfillmentOrderLineItemConnection { edges: [ReverseFulfillmentOrderLineItemEdge!]! nodes: [ReverseFulfillmentOrderLineItem!]! pageInfo: PageInfo! }

type ReverseFulfillmentOrder implements Node {
  id: ID!
  status: ReverseFulfillmentOrderStatus!
  lineItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): ReverseFulfillmentOrderLineItemConnection!
}
type ReverseFulfillmentOrderEdge { cursor: String! node: ReverseFulfillmentOrder! }
type ReverseFulfillmentOrderConnection { edges: [ReverseFulfillmentOrderEdge!]! nodes: [ReverseFulfillmentOrder!]! pageInfo: PageInfo! }

type Return implements Node {
  id: ID!
  name: String!
  status: ReturnStatus!
  order: Order!
  returnLineItems(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): ReturnLineItemConnection!
  reverseFulfillmentOrders(first: Int, after: String, last: Int, before: String, reverse: Boolean = false): ReverseFulfillmentOrderConnection!
}

type ReturnUserError { code: ReturnErrorCode field: [String!] message: String! }

input ReturnLineItemInput { fulfillmentLineItemId: ID! quantity: Int! returnReason: ReturnReason! returnReasonNote: String }
input ReturnInput { orderId: ID! returnLineItems: [ReturnLineItemInput!]! notifyCustomer: Boolean = false requestedAt: DateTime }
input ReturnRequestLineItemInput { fulfillmentLineItemId: ID! quantity: Int! returnReason: ReturnReason! customerNote: String }
input ReturnRequestInput { orderId: ID! returnLineItems: [ReturnRequestLineItemInput!]! }
input ReturnApproveRequestInput { id: ID! notifyCustomer: Boolean = false }
input ReturnDeclineRequestInput { id: ID! declineReason: String declineNote: String notifyCustomer: Boolean = false }
input ReverseFulfillmentOrderDisposeInput {
  reverseFulfillmentOrderLineItemId: ID!
  quantity: Int!
  locationId: ID
  dispositionType: ReverseFulfillmentOrderDispositionType!
}

type ReturnCreatePayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnRequestPayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnApproveRequestPayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnDeclineRequestPayload { return: Return userErrors: [ReturnUserError!]! }
type ReturnClosePayload { return: Return userErrors: [ReturnUserError!]! }
type ReverseFulfillmentOrderDisposePayload { reverseFulfillmentOrderLineItems: [ReverseFulfillmentOrderLineItem!] userErrors: [ReturnUserError!]! }

extend type Query {
  refund(id: ID!): Refund
  return(id: ID!): Return
}

extend type Mutation {
  refundCreate(input: RefundInput!): RefundCreatePayload
  returnCreate(returnInput: ReturnInput!): ReturnCreatePayload
  returnRequest(input: ReturnRequestInput!): ReturnRequestPayload
  returnApproveRequest(input: ReturnApproveRequestInput!): ReturnApproveRequestPayload
  returnDeclineRequest(input: ReturnDeclineRequestInput!): ReturnDeclineRequestPayload
  returnClose(id: ID!): ReturnClosePayload
  reverseFulfillmentOrderDispose(dispositionInputs: [ReverseFulfillmentOrderDisposeInput!]!): ReverseFulfillmentOrderDisposePayload
}
'''

_CENT = Decimal("0.01")
DISPOSITION_TYPES = ("RESTOCKED", "NOT_RESTOCKED", "PROCESSING_REQUIRED", "MISSING")


class Refused(Exception):
    """A user error: ``field`` path and message (and a code for the return mutations)."""

    def __init__(self, field_path: list[str], message: str, code: str = "INVALID") -> None:
        super().__init__(message)
        self.field = field_path
        self.message = message
        self.code = code

    def user_error(self, with_code: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if with_code:
            out["code"] = self.code
        return out


@dataclass
class _Money:
    """An order's money settings: presentment currency and rate, shipping charged."""

    currency: str = "USD"
    rate: Decimal = Decimal(1)
    shipping: Decimal = Decimal(0)


@dataclass
class _Return:
    id: int
    order_id: int
    status: str  # REQUESTED OPEN DECLINED CLOSED CANCELED
    #: return line id -> (line item id, quantity, reason, note)
    lines: dict[int, tuple[int, int, str, str | None]]
    rfo_id: int | None = None
    #: reverse fulfillment order line id -> return line id
    rfo_lines: dict[int, int] = field(default_factory=dict)
    #: reverse fulfillment order line id -> [(disposition id, type, quantity, location id)]
    dispositions: dict[int, list[tuple[int, str, int, int | None]]] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


class RefundDesk:
    """Refunds and returns of one :class:`~.state.SimulatorState` (its lock, orders, levels)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        #: the webhook sender's `emit` (set by the app); None: webhooks are not sent
        self.emit: Callable[[list[tuple[str, dict[str, Any]]]], None] | None = None
        self.reset()

    def reset(self) -> None:
        self.refunds: dict[int, dict[str, Any]] = {}
        self.returns: dict[int, _Return] = {}
        self.money: dict[int, _Money] = {}
        #: line item id -> units fulfilled
        self.fulfilled: dict[int, int] = {}
        #: line item id -> units refunded / refunded with CANCEL / refunded with RETURN
        self.refunded: dict[int, int] = {}
        self.cancelled: dict[int, int] = {}
        self.shipping_refunded: dict[int, Decimal] = {}
        self.paid_refunded: dict[int, Decimal] = {}
        self._next = 930001

    def _id(self) -> int:
        self._next += 1
        return self._next

    # --- control (tests, /_sim endpoints) -----------------------------------------------

    def set_money(self, order_id: int, *, currency: str | None = None, rate: Any = None, shipping: Any = None) -> None:
        with self.state.lock:
            self._order(order_id, ["orderId"])
            money = self.money.setdefault(order_id, self.money_of(order_id))
            if currency is not None:
                money.currency = str(currency)
            if rate is not None:
                money.rate = _decimal(rate, ["rate"])
            if shipping is not None:
                money.shipping = _decimal(shipping, ["shipping"])

    def mark_fulfilled(self, order_id: int, line_item_id: int | None = None, quantity: int | None = None) -> None:
        """Units of an order leave the warehouse (all open units when no line is named)."""
        with self.state.lock:
            order = self._order(order_id, ["orderId"])
            for line in order.lines:
                if line_item_id is not None and line.id != line_item_id:
                    continue
                open_units = line.current_quantity - self._fulfilled(order, line)
                units = open_units if quantity is None else min(quantity, open_units)
                if units > 0:
                    self.fulfilled[line.id] = self.fulfilled.get(line.id, 0) + units

    def money_of(self, order_id: int) -> _Money:
        """The order's money settings (presented in the shop's currency unless set)."""
        return self.money.get(order_id) or _Money(currency=self.state.config.currency)

    def money_set(self, order_id: int, shop_amount: Decimal | str) -> dict[str, Any]:
        """A REST `*_set` (shop and presentment money) of an amount in shop currency."""
        return self._rest_set(self._bag(order_id, Decimal(str(shop_amount))))

    # --- helpers ---------------------------------------------------------------------------

    def _order(self, ref: Any, path: list[str]) -> Any:
        try:
            oid = self.state._ref(ref, "Order")
        except (GidError, TypeError, ValueError):
            raise Refused(path, f"Invalid order id {ref!r}", "INVALID") from None
        order = self.state._orders.get(oid)
        if order is None:
            raise Refused(path, "Order does not exist", "NOT_FOUND")
        return order

    def _fulfilled(self, order: Any, line: Any) -> int:
        if order.source_name == "pos":
            return line.quantity  # sold and handed over at the till
        return self.fulfilled.get(line.id, 0)

    def _bag(self, order_id: int, shop_amount: Decimal) -> dict[str, Any]:
        money = self.money_of(order_id)
        presentment = (shop_amount * money.rate).quantize(_CENT)
        return {"shopMoney": {"amount": str(shop_amount.quantize(_CENT)), "currencyCode": self.state.config.currency},
                "presentmentMoney": {"amount": str(presentment), "currencyCode": money.currency}}

    @staticmethod
    def _rest_set(bag: dict[str, Any]) -> dict[str, Any]:
        return {"shop_money": {"amount": bag["shopMoney"]["amount"], "currency_code": bag["shopMoney"]["currencyCode"]},
                "presentment_money": {"amount": bag["presentmentMoney"]["amount"],
                                      "currency_code": bag["presentmentMoney"]["currencyCode"]}}

    def _location(self, ref: Any, path: list[str]) -> int:
        try:
            loc_id = self.state._ref(ref, "Location")
        except (GidError, TypeError, ValueError):
            raise Refused(path, f"Invalid location id {ref!r}") from None
        if loc_id not in self.state._locations:
            raise Refused(path, "Location does not exist", "NOT_FOUND")
        return loc_id

    def _restock(self, item_id: int, loc_id: int, units: int, *, from_committed: bool) -> list[tuple[str, dict]]:
        level = self.state._levels.get((item_id, loc_id))
        if level is None:
            return []
        before = level.quantities["available"]
        if from_committed:
            level.quantities["committed"] -= units
        level.quantities["available"] += units
        level.updated_at = now_iso()
        self.state._record(level, "available", before, before + units, units, "restock")
        return [self.state._level_event(level)]

    def _send(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        if events and self.emit is not None:
            self.emit(events)

    # --- refunds -------------------------------------------------------------------------------

    def refund_create(self, inp: dict[str, Any]) -> dict[str, Any]:
        """``refundCreate``: validate everything first, then change anything (all or nothing)."""
        with self.state.lock:
            order = self._order(inp.get("orderId"), ["orderId"])
            lines_by_id = {ln.id: ln for ln in order.lines}
            money = self.money_of(order.id)
            planned = []
            wanted: dict[int, dict[str, int]] = {}
            for i, item in enumerate(inp.get("refundLineItems") or []):
                path = ["refundLineItems", str(i)]
                try:
                    line_id = self.state._ref(item["lineItemId"], "LineItem")
                except (GidError, TypeError, ValueError):
                    raise Refused([*path, "lineItemId"], "Invalid line item id") from None
                line = lines_by_id.get(line_id)
                if line is None:
                    raise Refused([*path, "lineItemId"], "Line item does not belong to this order")
                qty = item["quantity"]
                restock = item.get("restockType") or "RETURN"
                if qty <= 0:
                    raise Refused([*path, "quantity"], "Quantity must be greater than 0")
                if restock == "LEGACY_RESTOCK":
                    raise Refused([*path, "restockType"], "LEGACY_RESTOCK is deprecated: use CANCEL or RETURN")
                seen = wanted.setdefault(line.id, {"all": 0, "CANCEL": 0, "RETURN": 0})
                seen["all"] += qty
                seen[restock] = seen.get(restock, 0) + qty
                if self.refunded.get(line.id, 0) + seen["all"] > line.quantity:
                    raise Refused([*path, "quantity"], "Quantity cannot refund more items than were purchased")
                fulfilled = self._fulfilled(order, line)
                # earlier cancels already took their units out of current_quantity
                if restock == "CANCEL" and seen["CANCEL"] > max(0, line.current_quantity - fulfilled):
                    raise Refused([*path, "restockType"], "Cannot cancel more items than are unfulfilled")
                loc_id = None
                if restock == "RETURN":
                    if item.get("locationId") is None:
                        raise Refused([*path, "locationId"], "A location is required to restock returned items")
                    loc_id = self._location(item["locationId"], [*path, "locationId"])
                    if seen["RETURN"] > fulfilled:
                        raise Refused([*path, "restockType"], "Cannot restock more items than were fulfilled")
                elif item.get("locationId") is not None:
                    loc_id = self._location(item["locationId"], [*path, "locationId"])
                planned.append((line, qty, restock, loc_id))
            shipping_in = inp.get("shipping") or {}
            shipping_left = money.shipping - self.shipping_refunded.get(order.id, Decimal(0))
            shipping = shipping_left if shipping_in.get("fullRefund") else _decimal(shipping_in.get("amount") or 0,
                                                                                     ["shipping", "amount"])
            if shipping < 0 or shipping > shipping_left:
                raise Refused(["shipping", "amount"], f"Shipping refund cannot exceed {shipping_left} not yet refunded")
            unit = Decimal(order_unit_price(order))
            calculated = sum((unit * qty for _, qty, _, _ in planned), Decimal(0)) + shipping
            paid = unit * sum(ln.quantity for ln in order.lines) + money.shipping
            refundable = paid - self.paid_refunded.get(order.id, Decimal(0))
            transactions = []
            for i, tx in enumerate(inp.get("transactions") or []):
                if tx.get("kind") != "REFUND":
                    raise Refused(["transactions", str(i), "kind"], "Refund transactions must be of kind REFUND")
                amount = _decimal(tx["amount"], ["transactions", str(i), "amount"])
                if inp.get("currency") and inp["currency"] != self.state.config.currency:
                    amount = (amount / money.rate).quantize(_CENT)  # given in presentment currency
                if amount <= 0:
                    raise Refused(["transactions", str(i), "amount"], "Amount must be greater than 0")
                transactions.append((amount, tx.get("gateway") or "manual"))
            refunded_money = sum((a for a, _ in transactions), Decimal(0))
            if refunded_money > refundable:
                raise Refused(["transactions"], f"Refund amount exceeds the {refundable} that can be refunded")
            if not planned and not transactions and not shipping:
                raise Refused(["refundLineItems"], "A refund needs line items, shipping or transactions")

            # everything checked: now change the shop
            events: list[tuple[str, dict[str, Any]]] = []
            refund_id = self._id()
            at = now_iso()
            rli = []
            for line, qty, restock, loc_id in planned:
                self.refunded[line.id] = self.refunded.get(line.id, 0) + qty
                if restock == "CANCEL":
                    self.cancelled[line.id] = self.cancelled.get(line.id, 0) + qty
                    line.current_quantity -= qty
                    events += self._restock(line.item_id, order.location_id, qty, from_committed=True)
                elif restock == "RETURN" and loc_id is not None:
                    events += self._restock(line.item_id, loc_id, qty, from_committed=False)
                rli.append({"id": self._id(), "line": line, "quantity": qty, "restock": restock, "location": loc_id,
                            "subtotal": unit * qty})
            self.shipping_refunded[order.id] = self.shipping_refunded.get(order.id, Decimal(0)) + shipping
            self.paid_refunded[order.id] = self.paid_refunded.get(order.id, Decimal(0)) + refunded_money
            adjustments = []
            if shipping:
                adjustments.append({"id": self._id(), "kind": "shipping_refund", "amount": -shipping,
                                    "reason": "Shipping refund"})
            if transactions and refunded_money != calculated:
                # what the lines and shipping come to, less what really went back
                adjustments.append({"id": self._id(), "kind": "refund_discrepancy",
                                    "amount": calculated - refunded_money, "reason": "Refund discrepancy"})
            txs = [{"id": self._id(), "amount": a, "gateway": g} for a, g in transactions]
            record = {"id": refund_id, "order": order, "note": inp.get("note"), "created_at": at, "lines": rli,
                      "adjustments": adjustments, "transactions": txs, "refunded": refunded_money}
            self.refunds[refund_id] = record
            order.updated_at = at
            body = self.refund_webhook_body(record)
            self._send([("refunds/create", body), *events])
            return {"refund": self.refund_node(refund_id), "order": self.state.order_node(order.id), "userErrors": []}

    def refund_webhook_body(self, record: dict[str, Any]) -> dict[str, Any]:
        """REST-shaped ``refunds/create`` payload (adapters/samples/shopify_refunds_create.json)."""
        order = record["order"]
        oid = order.id

        def rest(amount: Decimal) -> dict[str, Any]:
            return self._rest_set(self._bag(oid, amount))

        zero = rest(Decimal(0))
        return {
            "id": record["id"], "admin_graphql_api_id": gid("Refund", record["id"]), "order_id": oid,
            "created_at": record["created_at"], "processed_at": record["created_at"], "note": record["note"],
            "restock": any(r["restock"] != "NO_RESTOCK" for r in record["lines"]), "user_id": None,
            "refund_line_items": [
                {
                    "id": r["id"], "line_item_id": r["line"].id, "quantity": r["quantity"],
                    "restock_type": r["restock"].lower(), "location_id": r["location"],
                    "subtotal": float(r["subtotal"]), "subtotal_set": rest(r["subtotal"]),
                    "total_tax": 0.0, "total_tax_set": zero,
                    "line_item": {"id": r["line"].id, "variant_id": r["line"].item_id, "sku": r["line"].sku,
                                  "title": r["line"].sku, "quantity": r["line"].quantity, "price": order_unit_price(order),
                                  "fulfillment_status": "fulfilled" if self._fulfilled(order, r["line"]) else None},
                }
                for r in record["lines"]
            ],
            "transactions": [
                {"id": t["id"], "order_id": oid, "kind": "refund", "gateway": t["gateway"], "status": "success",
                 "amount": self._bag(oid, t["amount"])["presentmentMoney"]["amount"],
                 "currency": self.money_of(oid).currency, "amount_set": rest(t["amount"]),
                 "processed_at": record["created_at"]}
                for t in record["transactions"]
            ],
            "order_adjustments": [
                {"id": a["id"], "order_id": oid, "refund_id": record["id"], "kind": a["kind"], "reason": a["reason"],
                 "amount": str(a["amount"].quantize(_CENT)), "amount_set": rest(a["amount"]),
                 "tax_amount": "0.00", "tax_amount_set": zero}
                for a in record["adjustments"]
            ],
            "duties": [],
        }

    def refund_node(self, refund_id: int) -> dict[str, Any] | None:
        record = self.refunds.get(refund_id)
        if record is None:
            return None
        order = record["order"]
        oid = order.id
        lines = [
            {"__typename": "RefundLineItem", "id": gid("RefundLineItem", r["id"]), "quantity": r["quantity"],
             "restockType": r["restock"], "restocked": r["restock"] in ("CANCEL", "RETURN"),
             "location": self.state.location_node(r["location"]) if r["location"] else None,
             "subtotalSet": self._bag(oid, r["subtotal"]), "totalTaxSet": self._bag(oid, Decimal(0)),
             "lineItem": {"__typename": "LineItem", "id": gid("LineItem", r["line"].id), "sku": r["line"].sku,
                          "name": r["line"].sku, "quantity": r["line"].quantity,
                          "currentQuantity": r["line"].current_quantity,
                          "unfulfilledQuantity": r["line"].current_quantity - self._fulfilled(order, r["line"]),
                          "_item": r["line"].item_id}}
            for r in record["lines"]
        ]
        return {
            "__typename": "Refund", "id": gid("Refund", refund_id), "createdAt": record["created_at"],
            "note": record["note"], "order": self.state.order_node(oid),
            "totalRefundedSet": self._bag(oid, record["refunded"]),
            "_lines": lines,
            "_transactions": [{"__typename": "OrderTransaction", "id": gid("OrderTransaction", t["id"]),
                               "kind": "REFUND", "status": "SUCCESS", "gateway": t["gateway"],
                               "amountSet": self._bag(oid, t["amount"]), "processedAt": record["created_at"]}
                              for t in record["transactions"]],
            "_adjustments": [{"id": gid("OrderAdjustment", a["id"]), "reason": a["kind"].upper(),
                              "amountSet": self._bag(oid, a["amount"]), "taxAmountSet": self._bag(oid, Decimal(0))}
                             for a in record["adjustments"]],
        }

    # --- returns -------------------------------------------------------------------------------

    def return_open(self, inp: dict[str, Any], *, requested: bool) -> dict[str, Any]:
        """``returnRequest`` (REQUESTED) or ``returnCreate`` (OPEN, with its reverse fulfillment order)."""
        with self.state.lock:
            order = self._order(inp.get("orderId"), ["orderId"])
            lines_by_id = {ln.id: ln for ln in order.lines}
            in_returns: dict[int, int] = {}
            for ret in self.returns.values():
                if ret.order_id == order.id and ret.status not in ("DECLINED", "CANCELED"):
                    for line_id, qty, _, _ in ret.lines.values():
                        in_returns[line_id] = in_returns.get(line_id, 0) + qty
            lines: dict[int, tuple[int, int, str, str | None]] = {}
            items = inp.get("returnLineItems") or []
            if not items:
                raise Refused(["returnLineItems"], "A return needs at least one line item", "BLANK")
            for i, item in enumerate(items):
                path = ["returnLineItems", str(i)]
                try:
                    line_id = self.state._ref(item["fulfillmentLineItemId"], "FulfillmentLineItem")
                except (GidError, TypeError, ValueError):
                    raise Refused([*path, "fulfillmentLineItemId"], "Invalid fulfillment line item id") from None
                line = lines_by_id.get(line_id)
                if line is None:
                    raise Refused([*path, "fulfillmentLineItemId"], "Fulfillment line item does not exist", "NOT_FOUND")
                qty = item["quantity"]
                if qty <= 0:
                    raise Refused([*path, "quantity"], "Quantity must be greater than 0", "TOO_SHORT")
                in_returns[line_id] = in_returns.get(line_id, 0) + qty
                if in_returns[line_id] > self._fulfilled(order, line):
                    raise Refused([*path, "quantity"], "Quantity exceeds the fulfilled quantity not already in a "
                                  "return", "TOO_BIG")
                lines[self._id()] = (line_id, qty, item["returnReason"],
                                     item.get("customerNote") or item.get("returnReasonNote"))
            at = now_iso()
            ret = _Return(self._id(), order.id, "REQUESTED" if requested else "OPEN", lines, created_at=at,
                          updated_at=at)
            self.returns[ret.id] = ret
            topic = "returns/request"
            if not requested:
                self._open_rfo(ret)
                topic = "returns/approve"  # returnCreate opens it: the same announcement as an approval
            self._send([(topic, self.return_webhook_body(ret))])
            return {"return": self.return_node(ret.id), "userErrors": []}

    def _open_rfo(self, ret: _Return) -> None:
        ret.rfo_id = self._id()
        for return_line_id in ret.lines:
            ret.rfo_lines[self._id()] = return_line_id

    def _return(self, ref: Any, path: list[str]) -> _Return:
        try:
            rid = self.state._ref(ref, "Return")
        except (GidError, TypeError, ValueError):
            raise Refused(path, f"Invalid return id {ref!r}") from None
        ret = self.returns.get(rid)
        if ret is None:
            raise Refused(path, "Return does not exist", "NOT_FOUND")
        return ret

    def return_status(self, ref: Any, to_status: str) -> dict[str, Any]:
        """``returnApproveRequest`` (REQUESTED -> OPEN), ``returnDeclineRequest``
        (REQUESTED -> DECLINED), ``returnClose`` (OPEN -> CLOSED)."""
        allowed_from = {"OPEN": "REQUESTED", "DECLINED": "REQUESTED", "CLOSED": "OPEN"}[to_status]
        topic = {"OPEN": "returns/approve", "DECLINED": "returns/decline", "CLOSED": "returns/close"}[to_status]
        with self.state.lock:
            ret = self._return(ref, ["id"])
            if ret.status != allowed_from:
                raise Refused(["id"], f"Return is {ret.status}: only a {allowed_from} return can become {to_status}",
                              "INVALID_STATE")
            ret.status = to_status
            ret.updated_at = now_iso()
            if to_status == "OPEN":
                self._open_rfo(ret)
            self._send([(topic, self.return_webhook_body(ret))])
            return {"return": self.return_node(ret.id), "userErrors": []}

    def dispose(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """``reverseFulfillmentOrderDispose``: all inputs checked before any is applied."""
        with self.state.lock:
            by_rfo_line = {rl: ret for ret in self.returns.values() for rl in ret.rfo_lines}
            planned = []
            used: dict[int, int] = {}
            for i, item in enumerate(inputs):
                path = ["dispositionInputs", str(i)]
                try:
                    rfo_line = self.state._ref(item["reverseFulfillmentOrderLineItemId"],
                                               "ReverseFulfillmentOrderLineItem")
                except (GidError, TypeError, ValueError):
                    raise Refused([*path, "reverseFulfillmentOrderLineItemId"], "Invalid id") from None
                ret = by_rfo_line.get(rfo_line)
                if ret is None:
                    raise Refused([*path, "reverseFulfillmentOrderLineItemId"], "Line item does not exist",
                                  "NOT_FOUND")
                if ret.status != "OPEN":
                    raise Refused([*path, "reverseFulfillmentOrderLineItemId"], f"Return is {ret.status}",
                                  "INVALID_STATE")
                qty = item["quantity"]
                kind = item["dispositionType"]
                total = ret.lines[ret.rfo_lines[rfo_line]][1]
                done = sum(q for _, _, q, _ in ret.dispositions.get(rfo_line, []))
                used[rfo_line] = used.get(rfo_line, 0) + qty
                if qty <= 0:
                    raise Refused([*path, "quantity"], "Quantity must be greater than 0", "TOO_SHORT")
                if done + used[rfo_line] > total:
                    raise Refused([*path, "quantity"], f"Only {total - done} unit(s) are left to dispose", "TOO_BIG")
                loc_id = None
                if item.get("locationId") is not None:
                    loc_id = self._location(item["locationId"], [*path, "locationId"])
                elif kind == "RESTOCKED":
                    raise Refused([*path, "locationId"], "A location is required to restock", "BLANK")
                planned.append((ret, rfo_line, kind, qty, loc_id))
            events: list[tuple[str, dict[str, Any]]] = []
            touched: dict[int, list[tuple[int, int]]] = {}
            for ret, rfo_line, kind, qty, loc_id in planned:
                disposition_id = self._id()
                ret.dispositions.setdefault(rfo_line, []).append((disposition_id, kind, qty, loc_id))
                ret.updated_at = now_iso()
                touched.setdefault(ret.id, []).append((rfo_line, disposition_id))
                if kind == "RESTOCKED":
                    line_id = ret.lines[ret.rfo_lines[rfo_line]][0]
                    order = self.state._orders[ret.order_id]
                    line = next(ln for ln in order.lines if ln.id == line_id)
                    events += self._restock(line.item_id, loc_id, qty, from_committed=False)
            for rid, pairs in touched.items():
                events.insert(0, ("reverse_fulfillment_orders/dispose", self.dispose_webhook_body(self.returns[rid],
                                                                                                   pairs)))
            self._send(events)
            nodes = [self._rfo_line_node(ret, rfo_line) for ret, rfo_line, _, _, _ in planned]
            return {"reverseFulfillmentOrderLineItems": nodes, "userErrors": []}

    # --- shapes ----------------------------------------------------------------------------

    def _line_item_rest(self, order_id: int, line_id: int) -> dict[str, Any]:
        order = self.state._orders[order_id]
        line = next(ln for ln in order.lines if ln.id == line_id)
        return {"id": line.id, "admin_graphql_api_id": gid("LineItem", line.id), "sku": line.sku,
                "variant_id": line.item_id, "quantity": line.quantity}

    def return_webhook_body(self, ret: _Return) -> dict[str, Any]:
        """REST-shaped ``returns/*`` payload."""
        return {
            "id": ret.id, "admin_graphql_api_id": gid("Return", ret.id), "order_id": ret.order_id,
            "status": ret.status.lower(), "name": f"#{ret.id}-R", "created_at": ret.created_at,
            "updated_at": ret.updated_at,
            "return_line_items": [
                {"id": rl_id, "admin_graphql_api_id": gid("ReturnLineItem", rl_id), "quantity": qty,
                 "return_reason": reason.lower(), "customer_note": note,
                 "fulfillment_line_item": {"id": line_id, "admin_graphql_api_id": gid("FulfillmentLineItem", line_id),
                                           "line_item": self._line_item_rest(ret.order_id, line_id)}}
                for rl_id, (line_id, qty, reason, note) in ret.lines.items()
            ],
            "reverse_fulfillment_order_id": ret.rfo_id,
        }

    def dispose_webhook_body(self, ret: _Return, pairs: list[tuple[int, int]]) -> dict[str, Any]:
        """REST-shaped ``reverse_fulfillment_orders/dispose`` payload: the dispositions just made."""
        dispositions = []
        for rfo_line, disposition_id in pairs:
            _, kind, qty, loc_id = next(d for d in ret.dispositions[rfo_line] if d[0] == disposition_id)
            line_id = ret.lines[ret.rfo_lines[rfo_line]][0]
            dispositions.append({
                "id": disposition_id, "type": kind.lower(), "quantity": qty, "created_at": ret.updated_at,
                "location": {"id": loc_id, "admin_graphql_api_id": gid("Location", loc_id)} if loc_id else None,
                "reverse_fulfillment_order_line_item": {
                    "id": rfo_line, "admin_graphql_api_id": gid("ReverseFulfillmentOrderLineItem", rfo_line),
                    "fulfillment_line_item": {"id": line_id,
                                              "admin_graphql_api_id": gid("FulfillmentLineItem", line_id),
                                              "line_item": self._line_item_rest(ret.order_id, line_id)}},
                "reverse_delivery_line_item": None,
            })
        return {"id": ret.rfo_id, "admin_graphql_api_id": gid("ReverseFulfillmentOrder", ret.rfo_id or 0),
                "order_id": ret.order_id, "return_id": ret.id, "dispositions": dispositions,
                "total_dispositions": len(dispositions), "updated_at": ret.updated_at}

    def _fli_node(self, ret: _Return, line_id: int) -> dict[str, Any]:
        order = self.state._orders[ret.order_id]
        line = next(ln for ln in order.lines if ln.id == line_id)
        return {"__typename": "FulfillmentLineItem", "id": gid("FulfillmentLineItem", line_id),
                "quantity": self._fulfilled(order, line),
                "lineItem": {"__typename": "LineItem", "id": gid("LineItem", line.id), "sku": line.sku,
                             "name": line.sku, "quantity": line.quantity, "currentQuantity": line.current_quantity,
                             "unfulfilledQuantity": line.current_quantity - self._fulfilled(order, line),
                             "_item": line.item_id}}

    def _rfo_line_node(self, ret: _Return, rfo_line: int) -> dict[str, Any]:
        line_id, qty, _, _ = ret.lines[ret.rfo_lines[rfo_line]]
        return {
            "__typename": "ReverseFulfillmentOrderLineItem", "id": gid("ReverseFulfillmentOrderLineItem", rfo_line),
            "totalQuantity": qty, "fulfillmentLineItem": self._fli_node(ret, line_id),
            "dispositions": [{"__typename": "ReverseFulfillmentOrderDisposition",
                              "id": gid("ReverseFulfillmentOrderDisposition", d_id), "quantity": q, "type": kind,
                              "location": self.state.location_node(loc) if loc else None}
                             for d_id, kind, q, loc in ret.dispositions.get(rfo_line, [])],
        }

    def return_node(self, return_id: int) -> dict[str, Any] | None:
        ret = self.returns.get(return_id)
        if ret is None:
            return None
        rfos = []
        if ret.rfo_id is not None:
            disposed_all = all(sum(q for _, _, q, _ in ret.dispositions.get(rl, [])) >= ret.lines[rid][1]
                               for rl, rid in ret.rfo_lines.items())
            rfos.append({"__typename": "ReverseFulfillmentOrder", "id": gid("ReverseFulfillmentOrder", ret.rfo_id),
                         "status": "CLOSED" if disposed_all or ret.status == "CLOSED" else "OPEN",
                         "_lines": [self._rfo_line_node(ret, rl) for rl in ret.rfo_lines]})
        return {
            "__typename": "Return", "id": gid("Return", ret.id), "name": f"#{ret.id}-R", "status": ret.status,
            "order": self.state.order_node(ret.order_id),
            "_lines": [{"__typename": "ReturnLineItem", "id": gid("ReturnLineItem", rl_id),
                        "fulfillmentLineItem": self._fli_node(ret, line_id), "quantity": qty, "returnReason": reason,
                        "customerNote": note}
                       for rl_id, (line_id, qty, reason, note) in ret.lines.items()],
            "_rfos": rfos,
        }


def order_unit_price(order: Any) -> str:
    from .sales import UNIT_PRICE  # noqa: PLC0415

    return UNIT_PRICE


def _decimal(value: Any, path: list[str]) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise Refused(path, f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise Refused(path, f"{value!r} is not an amount")
    return amount


# --- GraphQL resolvers (bound by gql._bind) ---------------------------------------------------


def _answer(info: Any, call: Callable[[], dict[str, Any]], empty: dict[str, Any], with_code: bool) -> dict[str, Any]:
    try:
        return call()
    except Refused as exc:
        return {**empty, "userErrors": [exc.user_error(with_code)]}


def _desk(info: Any) -> RefundDesk:
    return info.context.state.refunds


MUTATION_RESOLVERS: dict[str, Callable[..., Any]] = {
    "refundCreate": lambda p, info, input: _answer(  # noqa: A002 - GraphQL argument names
        info, lambda: _desk(info).refund_create(input), {"refund": None, "order": None}, False),
    "returnCreate": lambda p, info, returnInput: _answer(
        info, lambda: _desk(info).return_open(returnInput, requested=False), {"return": None}, True),
    "returnRequest": lambda p, info, input: _answer(  # noqa: A002
        info, lambda: _desk(info).return_open(input, requested=True), {"return": None}, True),
    "returnApproveRequest": lambda p, info, input: _answer(  # noqa: A002
        info, lambda: _desk(info).return_status(input["id"], "OPEN"), {"return": None}, True),
    "returnDeclineRequest": lambda p, info, input: _answer(  # noqa: A002
        info, lambda: _desk(info).return_status(input["id"], "DECLINED"), {"return": None}, True),
    "returnClose": lambda p, info, id: _answer(  # noqa: A002
        info, lambda: _desk(info).return_status(id, "CLOSED"), {"return": None}, True),
    "reverseFulfillmentOrderDispose": lambda p, info, dispositionInputs: _answer(
        info, lambda: _desk(info).dispose(dispositionInputs), {"reverseFulfillmentOrderLineItems": None}, True),
}


def field_resolvers(connection: Callable[..., Any], list_connection: Callable[..., Any],
                    gid_num: Callable[..., Any]) -> dict[tuple[str, str], Callable[..., Any]]:
    """(type, field) -> fn(state, parent, args), in gql.RESOLVERS' convention."""
    return {
        ("Query", "refund"): lambda s, p, a: s.refunds.refund_node(gid_num(a["id"], "Refund")[1]),
        ("Query", "return"): lambda s, p, a: s.refunds.return_node(gid_num(a["id"], "Return")[1]),
        ("Refund", "refundLineItems"): lambda s, p, a: list_connection(p["_lines"], a),
        ("Refund", "transactions"): lambda s, p, a: list_connection(p["_transactions"], a),
        ("Refund", "orderAdjustments"): lambda s, p, a: list_connection(p["_adjustments"], a),
        ("Return", "returnLineItems"): lambda s, p, a: list_connection(p["_lines"], a),
        ("Return", "reverseFulfillmentOrders"): lambda s, p, a: list_connection(p["_rfos"], a),
        ("ReverseFulfillmentOrder", "lineItems"): lambda s, p, a: list_connection(p["_lines"], a),
    }
