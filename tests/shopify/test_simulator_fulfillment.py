"""The simulator's fulfilments: fulfillment orders per order, `fulfillmentCreate` with
tracking and partial quantities, userErrors, the FulfillmentOrder status transitions
(OPEN -> IN_PROGRESS -> CLOSED), stock leaving committed and on hand, the
`fulfillments/create` webhook, and no cancel of a fulfilled order."""

from __future__ import annotations

import pytest

from adapters.shopify.simulator.sales import CheckoutRefused

ORDER = """query($id: ID!) { order(id: $id) {
  fulfillmentOrders(first: 5) { nodes { id status assignedLocation { location { id } }
    lineItems(first: 10) { nodes { id totalQuantity remainingQuantity lineItem { sku } } } } }
  fulfillments(first: 10) { id name status trackingInfo { number company }
    fulfillmentLineItems(first: 10) { nodes { quantity lineItem { sku } } } } } }"""
CREATE = """mutation($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) {
  fulfillment { id name status trackingInfo { number } } userErrors { field message } } }"""


def _order(shop, order_id):
    reply = shop.gql(ORDER, {"id": f"gid://shopify/Order/{order_id}"})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["order"]


def _create(shop, fo_id, lines=None, tracking=None):
    f = {"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fo_id, **(
        {"fulfillmentOrderLineItems": [{"id": i, "quantity": q} for i, q in lines]} if lines else {})}]}
    if tracking:
        f["trackingInfo"] = {"number": tracking, "company": "UPS"}
    reply = shop.gql(CREATE, {"f": f})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["fulfillmentCreate"]


def test_partial_then_full_fulfilment_moves_the_fulfillment_order_to_closed(shop_factory, webhook_receiver):
    shop = shop_factory(n_items=2, n_locations=1, available=10, webhook_url=webhook_receiver.url)
    a, b = (shop.state.sku_of(i) for i in shop.items)
    order, _ = shop.state.checkout([{"sku": a, "quantity": 2}, {"sku": b, "quantity": 1}])
    fo = _order(shop, order["id"])["fulfillmentOrders"]["nodes"][0]
    assert fo["status"] == "OPEN" and fo["assignedLocation"]["location"]["id"] == shop.locations[0]
    line_a = next(li for li in fo["lineItems"]["nodes"] if li["lineItem"]["sku"] == a)

    first = _create(shop, fo["id"], [(line_a["id"], 1)], tracking="1Z-1")
    assert first["userErrors"] == [] and first["fulfillment"]["trackingInfo"] == [{"number": "1Z-1"}]
    view = _order(shop, order["id"])
    fo = view["fulfillmentOrders"]["nodes"][0]
    assert fo["status"] == "IN_PROGRESS"
    assert {li["lineItem"]["sku"]: li["remainingQuantity"] for li in fo["lineItems"]["nodes"]} == {a: 1, b: 1}
    assert view["fulfillments"][0]["fulfillmentLineItems"]["nodes"] == [{"quantity": 1, "lineItem": {"sku": a}}]

    rest = _create(shop, fo["id"])  # no line items: all that remains
    assert rest["userErrors"] == [] and rest["fulfillment"]["name"].endswith(".2")
    assert _order(shop, order["id"])["fulfillmentOrders"]["nodes"][0]["status"] == "CLOSED"
    level = next(lv for lv in shop.state.levels_detail() if lv["sku"] == a)
    assert (level["available"], level["committed"], level["on_hand"]) == (8, 0, 8)  # the units left

    hooks = [r for r in webhook_receiver.wait_for(2) if r.headers["x-shopify-topic"] == "fulfillments/create"]
    assert len(hooks) == 2
    assert hooks[0].json()["tracking_numbers"] == ["1Z-1"] and hooks[0].json()["order_id"] == order["id"]
    assert shop.state.order_webhook_body(shop.state.order(order["id"]))["fulfillment_status"] == "fulfilled"


def test_refusals_are_user_errors(shop_factory):
    shop = shop_factory(n_items=1, n_locations=1, available=10)
    sku = shop.state.sku_of(shop.items[0])
    order, _ = shop.state.checkout([{"sku": sku, "quantity": 2}])
    fo = _order(shop, order["id"])["fulfillmentOrders"]["nodes"][0]
    line = fo["lineItems"]["nodes"][0]["id"]
    too_many = _create(shop, fo["id"], [(line, 3)])
    assert too_many["fulfillment"] is None and "quantity" in too_many["userErrors"][0]["message"]
    unknown = _create(shop, "gid://shopify/FulfillmentOrder/1")
    assert unknown["userErrors"][0]["message"] == "Fulfillment order does not exist."
    assert _create(shop, fo["id"])["userErrors"] == []
    closed = _create(shop, fo["id"])
    assert "unfulfillable status= closed" in closed["userErrors"][0]["message"]
    with pytest.raises(CheckoutRefused) as refused:
        shop.state.cancel_order(order["id"])
    assert refused.value.code == "ORDER_HAS_FULFILLMENTS"


def test_a_cancelled_order_cannot_be_fulfilled(shop_factory):
    shop = shop_factory(n_items=1, n_locations=1, available=10)
    order, _ = shop.state.checkout([{"sku": shop.state.sku_of(shop.items[0]), "quantity": 1}])
    shop.state.cancel_order(order["id"])
    fo = _order(shop, order["id"])["fulfillmentOrders"]["nodes"][0]
    assert fo["status"] == "CLOSED" and fo["lineItems"]["nodes"][0]["remainingQuantity"] == 0
    assert _create(shop, fo["id"])["userErrors"]
