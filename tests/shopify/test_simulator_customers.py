"""The simulator's customers: create / update / merge with their webhooks, e-mail unique
per shop, checkout by a customer, 4xx on bad input."""

from __future__ import annotations

import httpx

from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from adapters.shopify.simulator.state import SimulatorState


def test_customer_lifecycle_and_its_webhooks():
    state = SimulatorState(SimulatorConfig())
    ann, events = state.create_customer({"email": " Ann@Example.com", "phone": "+15145550123", "first_name": "Ann",
                                         "last_name": "Lee", "address": {"address1": "1 Main St", "zip": "H2X 1Y4",
                                                                         "country_code": "CA"}})
    assert events == [("customers/create", ann)] and ann["email"] == "ann@example.com"
    assert ann["admin_graphql_api_id"] == f"gid://shopify/Customer/{ann['id']}"
    assert ann["default_address"]["zip"] == "H2X 1Y4"
    bob, _ = state.create_customer({"email": "bob@example.com", "last_name": "Lee"})
    updated, events = state.update_customer(bob["id"], {"phone": "+15145550199"})
    assert events[0][0] == "customers/update" and updated["phone"] == "+15145550199"
    merge, events = state.merge_customers(ann["admin_graphql_api_id"], bob["id"])
    assert merge["resultingCustomerId"] == bob["admin_graphql_api_id"]
    assert [t for t, _ in events] == ["customers/merge", "customers/update"]
    assert [c["id"] for c in state.customers()] == [bob["id"]]
    assert events[1][1]["default_address"]["address1"] == "1 Main St"  # filled from the merged-away one

    loc = state.add_location("W")
    item = state.add_item("TEE")
    state.stock(item, loc, 5)
    order, _ = state.checkout([{"sku": "TEE", "quantity": 1}], customer_id=bob["id"])
    assert order["customer"]["id"] == bob["id"] and order["email"] == "bob@example.com"
    guest, _ = state.checkout([{"sku": "TEE", "quantity": 1}])
    assert guest["customer"] is None


def test_control_endpoints_refuse_bad_input():
    with SimulatorServer(SimulatorConfig()) as sim:
        base = sim.base_url
        r = httpx.post(f"{base}/_sim/customers", json={"email": "c@example.com", "last_name": "C"})
        assert r.status_code == 201
        cid = r.json()["customer"]["id"]
        assert httpx.post(f"{base}/_sim/customers", json={"email": "C@example.com"}).status_code == 422  # taken
        assert httpx.post(f"{base}/_sim/customers", json={}).status_code == 422  # blank
        assert httpx.post(f"{base}/_sim/customers", content=b"{").status_code == 400
        assert httpx.post(f"{base}/_sim/customers", json={"email": 5}).status_code == 400
        assert httpx.put(f"{base}/_sim/customers/999", json={"phone": "1"}).status_code == 404
        assert httpx.put(f"{base}/_sim/customers/{cid}", json={"first_name": "Cy"}).json()["customer"]["first_name"] == "Cy"
        d = httpx.post(f"{base}/_sim/customers", json={"email": "d@example.com"}).json()["customer"]["id"]
        r = httpx.post(f"{base}/_sim/customers/merge", json={"customerOneId": cid, "customerTwoId": d})
        assert r.status_code == 200 and r.json()["merge"]["resultingCustomerId"] == f"gid://shopify/Customer/{d}"
        assert httpx.post(f"{base}/_sim/customers/merge", json={"customerOneId": d, "customerTwoId": d}).status_code == 422
        assert httpx.post(f"{base}/_sim/customers/merge", json={"customerOneId": "x"}).status_code == 400
        assert [c["id"] for c in httpx.get(f"{base}/_sim/customers").json()["customers"]] == [d]
        assert httpx.post(f"{base}/_sim/checkout", json={"line_items": [{"sku": "X"}], "customer_id": 12345}).status_code == 400
