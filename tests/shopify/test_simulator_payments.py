"""Shopify Payments in the simulator: charges, fees, refunds, disputes, reserves, payouts,
read through GraphQL with pagination and query filters."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from adapters.shopify.simulator.payments import generate_activity

from .conftest import HTTP

ACCOUNT_Q = """query($first: Int!, $after: String, $q: String) { shopifyPaymentsAccount {
  balance { amount currencyCode }
  payouts(first: $first, after: $after, query: $q) {
    nodes { id legacyResourceId status issuedAt transactionType net { amount } summary { chargesGross { amount } chargesFee { amount } } }
    pageInfo { hasNextPage endCursor } } } }"""
TXN_Q = """query($first: Int!, $after: String, $q: String) { shopifyPaymentsAccount {
  balanceTransactions(first: $first, after: $after, query: $q) {
    nodes { id type amount { amount } fee { amount } net { amount } transactionDate
            associatedOrder { id name } associatedPayout { id status } }
    pageInfo { hasNextPage endCursor } } } }"""


def gql(shop, query, **variables):
    reply = HTTP.post(shop.sim.graphql_url(), json={"query": query, "variables": variables},
                      headers={"X-Shopify-Access-Token": shop.sim.config.access_token})
    body = reply.json()
    assert "errors" not in body, body
    return body["data"]["shopifyPaymentsAccount"]


def all_pages(shop, query, field, q=None, first=7):
    out, after = [], None
    while True:
        conn = gql(shop, query, first=first, after=after, q=q)[field]
        out += conn["nodes"]
        if not conn["pageInfo"]["hasNextPage"]:
            return out
        after = conn["pageInfo"]["endCursor"]


def test_a_paid_checkout_is_a_charge_with_the_fee_and_a_cancel_refunds_it(shop):
    order = HTTP.post(f"{shop.sim.base_url}/_sim/checkout",
                      json={"line_items": [{"inventory_item_id": shop.items[0], "quantity": 3}]}).json()["order"]
    rows = all_pages(shop, TXN_Q, "balanceTransactions")
    assert [(r["type"], r["amount"]["amount"], r["fee"]["amount"], r["net"]["amount"]) for r in rows] == [
        ("CHARGE", "30.00", "1.17", "28.83")]  # 2.9 % + 0.30
    assert rows[0]["associatedOrder"]["name"] == order["name"]
    assert rows[0]["associatedPayout"] == {"id": None, "status": "PENDING"}
    HTTP.post(f"{shop.sim.base_url}/_sim/orders/{order['id']}/cancel", json={})
    rows = all_pages(shop, TXN_Q, "balanceTransactions")
    assert [(r["type"], r["amount"]["amount"], r["fee"]["amount"]) for r in rows][1] == ("REFUND", "-30.00", "0.00")
    assert gql(shop, ACCOUNT_Q, first=1)["balance"] == [{"amount": "-1.17", "currencyCode": "USD"}]


def test_fees_are_configurable(shop):
    HTTP.post(f"{shop.sim.base_url}/_sim/payments/config", json={"fee_percent": "0.05", "fee_fixed": "0"})
    HTTP.post(f"{shop.sim.base_url}/_sim/checkout", json={"line_items": [{"inventory_item_id": shop.items[0]}]})
    assert all_pages(shop, TXN_Q, "balanceTransactions")[0]["fee"]["amount"] == "0.50"


def test_a_month_of_payouts_adds_up_pages_and_filters(shop_factory):
    shop = shop_factory(n_items=3, n_locations=1, available=10_000, restore_rate=50_000, bucket_size=200_000)
    start = dt.date(2026, 11, 1)
    made = generate_activity(shop.sim.state, start, 30, orders_per_day=2)
    assert made["payout_status"] == {"PAID": 27, "FAILED": 1, "IN_TRANSIT": 1, "SCHEDULED": 1}
    payouts = all_pages(shop, ACCOUNT_Q, "payouts")
    assert len(payouts) == 30 and len({p["id"] for p in payouts}) == 30
    for p in payouts:
        rows = all_pages(shop, TXN_Q, "balanceTransactions", q=f"payments_transfer_id:{p['legacyResourceId']}")
        assert sum(Decimal(r["net"]["amount"]) for r in rows) == Decimal(p["net"]["amount"])
        assert {r["associatedPayout"]["id"] for r in rows} == {p["id"]}
    failed = next(p for p in payouts if p["status"] == "FAILED")
    comeback = [r for r in all_pages(shop, TXN_Q, "balanceTransactions") if r["type"] == "PAYOUT_FAILURE"]
    assert [r["amount"]["amount"] for r in comeback] == [failed["net"]["amount"]]  # paid out again later
    assert comeback[0]["associatedPayout"]["status"] == "PAID"
    day = all_pages(shop, ACCOUNT_Q, "payouts", q="issued_at:>=2026-11-05 issued_at:<=2026-11-05")
    assert [p["issuedAt"][:10] for p in day] == ["2026-11-05"]
    charges = all_pages(shop, TXN_Q, "balanceTransactions", q="processed_at:>=2026-11-05 processed_at:<=2026-11-05 "
                        "transaction_type:charge")
    assert charges and {r["type"] for r in charges} == {"CHARGE"}
    assert {r["transactionDate"][:10] for r in charges} == {"2026-11-05"}
    assert {r["type"] for r in all_pages(shop, TXN_Q, "balanceTransactions")} >= {
        "CHARGE", "REFUND", "DISPUTE_WITHDRAWAL", "ADJUSTMENT", "RESERVED_FUNDS_WITHDRAWAL",
        "RESERVED_FUNDS_REVERSAL", "PAYOUT_FAILURE"}


def test_payout_statuses_move_forward_only_and_bad_requests_are_4xx(shop):
    HTTP.post(f"{shop.sim.base_url}/_sim/checkout", json={"line_items": [{"inventory_item_id": shop.items[0]}]})
    payout = shop.sim.state.payments.issue_payout(dt.datetime.now(dt.UTC).date())
    url = f"{shop.sim.base_url}/_sim/payments/payouts/{payout.id}/status"
    assert HTTP.post(url, json={"status": "PAID"}).json()["status"] == "PAID"
    back = HTTP.post(url, json={"status": "SCHEDULED"})
    assert back.status_code == 409 and back.json()["code"] == "INVALID_TRANSITION"
    assert HTTP.post(url, json={"status": "FAILED"}).status_code == 200  # the bank returned it
    assert HTTP.post(f"{shop.sim.base_url}/_sim/payments/payouts/1/status", json={"status": "PAID"}).status_code == 404
    assert HTTP.post(url, content=b"{nope").status_code == 400
    assert HTTP.post(f"{shop.sim.base_url}/_sim/payments/generate", json={"days": 2}).status_code == 400
    fee = HTTP.post(f"{shop.sim.base_url}/_sim/payments/transactions/{payout.transaction_ids[0]}/fee",
                    json={"fee": "abc"})
    assert fee.status_code == 400


def test_a_refund_never_exceeds_the_charge(shop):
    import pytest

    from adapters.shopify.simulator.payments import PaymentsRefused

    order = HTTP.post(f"{shop.sim.base_url}/_sim/checkout",
                      json={"line_items": [{"inventory_item_id": shop.items[0]}]}).json()["order"]
    shop.sim.state.payments.refund(order["id"], "6.00")
    with pytest.raises(PaymentsRefused):
        shop.sim.state.payments.refund(order["id"], "4.01")
