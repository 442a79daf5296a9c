"""Fulfilments through the Admin GraphQL API: read an order's fulfillment orders and
fulfilments, and `fulfillmentCreate` (the fulfilment flow, availability/flows/fulfilment/).

`fulfillmentCreate` takes no idempotency key, so whoever must not fulfil twice reads
`order.fulfillments` before creating one (the flow does, after a crash or a timeout).
Transport errors come from `ShopifyAdminClient.execute` (`ShopifyTransientError` is worth
retrying); refusals are the payload's `userErrors`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.shopify.client import ShopifyAdminClient

ORDER_QUERY = """
query OrderFulfilment($id: ID!) {
  order(id: $id) {
    id
    name
    cancelledAt
    fulfillmentOrders(first: 5) {
      nodes {
        id
        status
        assignedLocation { location { id } }
        lineItems(first: 50) { nodes { id totalQuantity remainingQuantity lineItem { id sku } } }
      }
    }
    fulfillments(first: 20) {
      id
      name
      status
      trackingInfo { number company url }
      fulfillmentLineItems(first: 20) { nodes { quantity lineItem { id sku } } }
    }
  }
}
"""

CREATE_MUTATION = """
mutation FulfilShipment($fulfillment: FulfillmentInput!) {
  fulfillmentCreate(fulfillment: $fulfillment) {
    fulfillment { id name status trackingInfo { number company url } }
    userErrors { field message }
  }
}
"""

#: fulfillment order statuses that take a fulfilment (Shopify: OPEN and IN_PROGRESS)
FULFILLABLE = ("OPEN", "IN_PROGRESS")


class FulfillmentOrderLine(msgspec.Struct, frozen=True):
    id: str
    sku: str
    total: int
    remaining: int


class FulfillmentOrder(msgspec.Struct, frozen=True):
    id: str
    status: str
    location_id: str | None
    lines: tuple[FulfillmentOrderLine, ...]


class Fulfillment(msgspec.Struct, frozen=True):
    id: str
    name: str
    status: str
    tracking_numbers: tuple[str, ...]
    #: SKU -> units
    units: dict[str, int]


class OrderFulfilment(msgspec.Struct, frozen=True):
    order_id: str
    name: str
    cancelled: bool
    fulfillment_orders: tuple[FulfillmentOrder, ...]
    fulfillments: tuple[Fulfillment, ...]


def _parse_order(node: dict[str, Any]) -> OrderFulfilment:
    fos = []
    for fo in (node.get("fulfillmentOrders") or {}).get("nodes") or []:
        loc = ((fo.get("assignedLocation") or {}).get("location") or {}).get("id")
        lines = tuple(
            FulfillmentOrderLine(li["id"], ((li.get("lineItem") or {}).get("sku") or ""), int(li["totalQuantity"]),
                                 int(li["remainingQuantity"]))
            for li in (fo.get("lineItems") or {}).get("nodes") or []
        )
        fos.append(FulfillmentOrder(fo["id"], fo["status"], loc, lines))
    fulfillments = []
    for f in node.get("fulfillments") or []:
        units: dict[str, int] = {}
        for li in (f.get("fulfillmentLineItems") or {}).get("nodes") or []:
            sku = (li.get("lineItem") or {}).get("sku") or ""
            units[sku] = units.get(sku, 0) + int(li.get("quantity") or 0)
        numbers = tuple(t["number"] for t in f.get("trackingInfo") or [] if t.get("number"))
        fulfillments.append(Fulfillment(f["id"], f.get("name") or "", f.get("status") or "", numbers, units))
    return OrderFulfilment(node["id"], node.get("name") or "", node.get("cancelledAt") is not None, tuple(fos),
                           tuple(fulfillments))


async def read_order_fulfilment(client: ShopifyAdminClient, order_gid: str) -> OrderFulfilment | None:
    """The order's fulfillment orders and fulfilments, or None when Shopify has no such order."""
    result = await client.execute(ORDER_QUERY, {"id": order_gid}, estimated_cost=30)
    node = (result.data or {}).get("order")
    return _parse_order(node) if node else None


async def create_fulfillment(
    client: ShopifyAdminClient,
    lines_by_fulfillment_order: dict[str, list[tuple[str, int]]],
    *,
    tracking_numbers: list[str] | None = None,
    company: str | None = None,
    notify_customer: bool = False,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """`fulfillmentCreate` for these (fulfillment order line item id, quantity) per
    fulfillment order. Returns (the fulfillment, userErrors)."""
    fulfillment: dict[str, Any] = {
        "lineItemsByFulfillmentOrder": [
            {"fulfillmentOrderId": fo_id, "fulfillmentOrderLineItems": [{"id": li, "quantity": q} for li, q in lines]}
            for fo_id, lines in lines_by_fulfillment_order.items()
        ],
        "notifyCustomer": notify_customer,
    }
    if tracking_numbers or company:
        info: dict[str, Any] = {}
        if tracking_numbers:
            info["numbers"] = list(tracking_numbers)
        if company:
            info["company"] = company
        fulfillment["trackingInfo"] = info
    result = await client.execute(CREATE_MUTATION, {"fulfillment": fulfillment}, estimated_cost=10)
    payload = (result.data or {}).get("fulfillmentCreate") or {}
    return payload.get("fulfillment"), list(payload.get("userErrors") or [])
