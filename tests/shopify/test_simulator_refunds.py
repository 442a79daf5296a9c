"""Refunds and returns in the simulator over real HTTP: Shopify's limits as userErrors,
restocks on Shopify's own levels, MoneyBag amounts, and the refunds/create, returns/* and
reverse_fulfillment_orders/dispose webhooks the flow consumes."""

from __future__ import annotations

from adapters.shopify.gid import location_gid

from .conftest import HTTP, eventually


def _bodies(receiver, topic, n):
    """The first n webhook bodies of a topic (deliveries of other topics interleave)."""
    def got():
        found = [r.json() for r in list(receiver.received) if r.headers["x-shopify-topic"] == topic]
        return found if len(found) >= n else None

    return eventually(got, timeout=10)

REFUND = """
mutation Refund($input: RefundInput!) {
  refundCreate(input: $input) {
    refund { id totalRefundedSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
      refundLineItems(first: 10) { nodes { quantity restockType restocked location { id } lineItem { sku } } }
      orderAdjustments(first: 5) { nodes { reason amountSet { shopMoney { amount } } } } }
    userErrors { field message }
  }
}"""
RETURN_REQUEST = """
mutation R($input: ReturnRequestInput!) {
  returnRequest(input: $input) { return { id status } userErrors { code field message } }
}"""
APPROVE = """
mutation A($input: ReturnApproveRequestInput!) {
  returnApproveRequest(input: $input) {
    return { id status reverseFulfillmentOrders(first: 1) { nodes { id lineItems(first: 5) { nodes { id totalQuantity } } } } }
    userErrors { code field message }
  }
}"""
DISPOSE = """
mutation D($inputs: [ReverseFulfillmentOrderDisposeInput!]!) {
  reverseFulfillmentOrderDispose(dispositionInputs: $inputs) {
    reverseFulfillmentOrderLineItems { id dispositions { quantity type location { id } } }
    userErrors { code field message }
  }
}"""


def _order(shop, item, quantity, location=None, source="web"):
    body = {"line_items": [{"inventory_item_id": item, "quantity": quantity}], "source_name": source}
    if location:
        body["location_id"] = location
    r = HTTP.post(f"{shop.sim.base_url}/_sim/checkout", json=body)
    assert r.status_code == 201, r.text
    return r.json()["order"]


def _refund(shop, order, lines, **extra):
    inp = {"orderId": order["admin_graphql_api_id"], "refundLineItems": lines, **extra}
    r = shop.gql(REFUND, {"input": inp})
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    return r.json()["data"]["refundCreate"]


def _line(order, qty, restock, location=None):
    out = {"lineItemId": order["line_items"][0]["admin_graphql_api_id"], "quantity": qty, "restockType": restock}
    if location:
        out["locationId"] = location
    return out


def test_refund_limits_are_user_errors_and_restocks_move_shopify_levels(shop_factory, webhook_receiver):
    shop = shop_factory(n_items=1, n_locations=2, available=10, webhook_url=webhook_receiver.url,
                        webhook_retry_backoff_s=0.01)
    item, (loc1, loc2) = shop.items[0], shop.locations
    order = _order(shop, item, 4, location=loc1)
    oid = order["id"]
    # nothing fulfilled yet: RETURN is refused, CANCEL works and restocks at the order's location
    bad = _refund(shop, order, [_line(order, 1, "RETURN", loc2)])
    assert bad["refund"] is None and bad["userErrors"][0]["field"] == ["refundLineItems", "0", "restockType"]
    assert _refund(shop, order, [_line(order, 5, "NO_RESTOCK")])["userErrors"][0]["message"].startswith(
        "Quantity cannot refund more")
    ok = _refund(shop, order, [_line(order, 1, "CANCEL")], transactions=[
        {"orderId": order["admin_graphql_api_id"], "amount": "10.00", "gateway": "manual", "kind": "REFUND"}])
    assert ok["userErrors"] == [] and ok["refund"]["refundLineItems"]["nodes"][0]["restocked"] is True
    assert shop.state.available(item, loc1) == 10 - 4 + 1
    assert shop.state.quantity(item, loc1, "committed") == 3
    # fulfil two, return one of them to the other location with presentment money and shipping
    assert HTTP.post(f"{shop.sim.base_url}/_sim/orders/{oid}/fulfilled", json={"quantity": 2}).status_code == 200
    assert HTTP.post(f"{shop.sim.base_url}/_sim/orders/{oid}/money",
                     json={"currency": "EUR", "rate": "0.9", "shipping": "5.00"}).status_code == 200
    assert _refund(shop, order, [_line(order, 1, "RETURN")])["userErrors"][0]["field"] == [
        "refundLineItems", "0", "locationId"]
    done = _refund(shop, order, [_line(order, 1, "RETURN", loc2)], shipping={"fullRefund": True}, transactions=[
        {"orderId": order["admin_graphql_api_id"], "amount": "14.00", "gateway": "manual", "kind": "REFUND"}])
    assert done["userErrors"] == []
    money = done["refund"]["totalRefundedSet"]
    assert money == {"shopMoney": {"amount": "14.00", "currencyCode": "USD"},
                     "presentmentMoney": {"amount": "12.60", "currencyCode": "EUR"}}
    reasons = {n["reason"]: n["amountSet"]["shopMoney"]["amount"] for n in done["refund"]["orderAdjustments"]["nodes"]}
    assert reasons == {"SHIPPING_REFUND": "-5.00", "REFUND_DISCREPANCY": "1.00"}  # 10 + 5 calculated, 14 paid back
    assert shop.state.available(item, loc2) == 11
    assert _refund(shop, order, [], shipping={"amount": "0.01"})["userErrors"][0]["field"] == ["shipping", "amount"]

    bodies = _bodies(webhook_receiver, "refunds/create", 2)
    last = next(b for b in bodies if b["id"] == int(done["refund"]["id"].rsplit("/", 1)[1]))
    assert last["order_id"] == oid
    assert last["refund_line_items"][0]["restock_type"] == "return"
    assert last["refund_line_items"][0]["location_id"] == int(loc2.rsplit("/", 1)[1])
    assert last["transactions"][0]["amount_set"]["presentment_money"] == {"amount": "12.60", "currency_code": "EUR"}
    assert {a["kind"]: a["amount"] for a in last["order_adjustments"]} == {"shipping_refund": "-5.00",
                                                                            "refund_discrepancy": "1.00"}


def test_a_return_is_requested_approved_and_disposed_once_per_unit(shop_factory, webhook_receiver):
    shop = shop_factory(n_items=1, n_locations=2, available=10, webhook_url=webhook_receiver.url,
                        webhook_retry_backoff_s=0.01)
    item, (loc1, loc2) = shop.items[0], shop.locations
    order = _order(shop, item, 3, location=loc1)
    fli = f"gid://shopify/FulfillmentLineItem/{order['line_items'][0]['id']}"
    request = {"orderId": order["admin_graphql_api_id"],
               "returnLineItems": [{"fulfillmentLineItemId": fli, "quantity": 2, "returnReason": "DEFECTIVE"}]}
    refused = shop.gql(RETURN_REQUEST, {"input": request}).json()["data"]["returnRequest"]
    assert refused["return"] is None and refused["userErrors"][0]["code"] == "TOO_BIG"  # nothing fulfilled
    HTTP.post(f"{shop.sim.base_url}/_sim/orders/{order['id']}/fulfilled", json={})
    ret = shop.gql(RETURN_REQUEST, {"input": request}).json()["data"]["returnRequest"]["return"]
    assert ret["status"] == "REQUESTED"
    approved = shop.gql(APPROVE, {"input": {"id": ret["id"]}}).json()["data"]["returnApproveRequest"]["return"]
    assert approved["status"] == "OPEN"
    rfo_line = approved["reverseFulfillmentOrders"]["nodes"][0]["lineItems"]["nodes"][0]
    assert rfo_line["totalQuantity"] == 2
    no_location = shop.gql(DISPOSE, {"inputs": [{"reverseFulfillmentOrderLineItemId": rfo_line["id"], "quantity": 1,
                                                  "dispositionType": "RESTOCKED"}]}).json()["data"]
    assert no_location["reverseFulfillmentOrderDispose"]["userErrors"][0]["field"] == ["dispositionInputs", "0",
                                                                                       "locationId"]
    before = shop.state.available(item, loc2)
    disposed = shop.gql(DISPOSE, {"inputs": [
        {"reverseFulfillmentOrderLineItemId": rfo_line["id"], "quantity": 1, "dispositionType": "RESTOCKED",
         "locationId": loc2},
        {"reverseFulfillmentOrderLineItemId": rfo_line["id"], "quantity": 1, "dispositionType": "NOT_RESTOCKED"},
    ]}).json()["data"]["reverseFulfillmentOrderDispose"]
    assert disposed["userErrors"] == []
    assert shop.state.available(item, loc2) == before + 1  # only the restocked unit is back on Shopify's shelf
    again = shop.gql(DISPOSE, {"inputs": [{"reverseFulfillmentOrderLineItemId": rfo_line["id"], "quantity": 1,
                                            "dispositionType": "MISSING"}]}).json()["data"]
    assert again["reverseFulfillmentOrderDispose"]["userErrors"][0]["code"] == "TOO_BIG"
    assert _bodies(webhook_receiver, "returns/request", 1)[0]["status"] == "requested"
    assert _bodies(webhook_receiver, "returns/approve", 1)[0]["status"] == "open"
    dispose = _bodies(webhook_receiver, "reverse_fulfillment_orders/dispose", 1)[0]
    assert dispose["return_id"] == int(ret["id"].rsplit("/", 1)[1])
    kinds = sorted((d["type"], d["location"]["id"] if d["location"] else None) for d in dispose["dispositions"])
    assert kinds == [("not_restocked", None), ("restocked", int(loc2.rsplit("/", 1)[1]))]
    sku = dispose["dispositions"][0]["reverse_fulfillment_order_line_item"]["fulfillment_line_item"]["line_item"]["sku"]
    assert sku == shop.state.item_node(int(item.rsplit("/", 1)[1]))["sku"]


def test_a_pos_return_restocks_at_the_store(shop_factory):
    shop = shop_factory(n_items=1, n_locations=2, available=5)
    item, (_, store) = shop.items[0], shop.locations
    order = _order(shop, item, 2, location=store, source="pos")  # handed over at the till
    result = _refund(shop, order, [_line(order, 1, "RETURN", store)], transactions=[
        {"orderId": order["admin_graphql_api_id"], "amount": "10.00", "gateway": "cash", "kind": "REFUND"}])
    assert result["userErrors"] == []
    assert shop.state.available(item, store) == 5 - 2 + 1
    assert result["refund"]["refundLineItems"]["nodes"][0]["location"]["id"] == location_gid(int(store.rsplit("/", 1)[1]))
