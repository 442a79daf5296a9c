"""The return-to-refund mapping, pure: credit note amounts in shop money, the refund's own
stock events, disposition events per type, and the refund state machine."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest

from availability.flows.returns import mapping
from availability.flows.returns.store import REFUND_STATES, allowed

LOCATIONS = {655441491: "DC1", 655441492: "STORE-12", 7002: "STORE-12"}


def sample() -> dict:
    return json.loads(resources.files("adapters").joinpath("samples", "shopify_refunds_create.json").read_text())


def test_the_shipped_sample_does_not_add_up_and_is_refused_not_booked():
    # 25 + 25 + 12 of goods and 5.11 of tax is 67.11; its one transaction refunded 66.11
    with pytest.raises(mapping.AmountMismatch, match="67.11, refund transactions 66.11"):
        mapping.credit_note("shop", sample(), "shop#1001", "USD")


def test_goods_tax_shipping_and_discrepancy_lines_in_shop_money():
    payload = sample()
    payload["transactions"][0]["amount"] = "70.11"
    payload["transactions"][0]["amount_set"] = {"shop_money": {"amount": "70.11", "currency_code": "USD"},
                                                "presentment_money": {"amount": "63.10", "currency_code": "EUR"}}
    payload["order_adjustments"] = [
        {"id": 1, "kind": "shipping_refund", "amount": "-5.00", "tax_amount": "0.00"},
        {"id": 2, "kind": "refund_discrepancy", "amount": "2.00", "tax_amount": "0.00"},
    ]
    draft = mapping.credit_note("shop", payload, "shop#1001", "USD")
    got = [(ln.kind, ln.sku, ln.quantity, ln.unit_price) for ln in draft.lines]
    assert got == [("goods", "TEE-BLK-M", 1, Decimal("25.0")), ("goods", "CAP-RED", 1, Decimal("25.0")),
                   ("goods", "MUG-CLASSIC", 1, Decimal("12.0")), ("shipping", None, 1, Decimal("5.00")),
                   ("misc", None, 1, Decimal("-2.00")), ("tax", None, 1, Decimal("5.11"))]
    assert draft.total == Decimal("70.11") and draft.reference == "shop#refund-938271234624"
    assert mapping.refunded_money(payload) == (Decimal("70.11"), Decimal("63.10"), "EUR")


def test_a_price_that_does_not_divide_splits_into_two_lines_that_add_up():
    payload = sample()
    payload["refund_line_items"] = [dict(payload["refund_line_items"][0], quantity=3, subtotal="10.00",
                                         total_tax="0")]
    payload["transactions"][0]["amount"] = "10.00"
    draft = mapping.credit_note("shop", payload, "shop#1", "USD")
    assert [(ln.quantity, ln.unit_price) for ln in draft.lines] == [(2, Decimal("3.3333")), (1, Decimal("3.3334"))]
    assert draft.total == Decimal("10.00")


def test_refund_restocks_use_the_webhook_routes_ids_and_cancel_waits_for_the_reserve():
    payload = sample()
    events = mapping.refund_stock_events(payload, LOCATIONS, "DC1")
    assert [(e.event_id, e.type, e.location) for e in events] == [
        ("shopify:refunds/create:938271234624:402391351360", "return", "STORE-12"),
        ("shopify:refunds/create:938271234624:402391384128", "release", "DC1"),
    ]  # no_restock: nothing
    assert mapping.releases_waiting_for(payload) == {
        "shopify:refunds/create:938271234624:402391384128": "shopify:orders/create:5960412234816:13839205482560"}


def _dispose(kind: str, quantity: int = 1, location: int | None = 7002, sku: str | None = "TEE-BLK-M") -> dict:
    line_item = {"id": 11, **({"sku": sku} if sku else {})}
    return {"id": 90, "return_id": 5, "order_id": 1, "dispositions": [{
        "id": 77, "type": kind, "quantity": quantity, "created_at": "2026-11-20T10:00:00Z",
        "location": {"id": location} if location else None,
        "reverse_fulfillment_order_line_item": {"id": 3, "fulfillment_line_item": {"id": 11, "line_item": line_item}},
    }]}


@pytest.mark.parametrize(("kind", "location", "expected"), [
    ("restocked", 7002, [("return", "STORE-12", None)]),
    ("not_restocked", None, [("return", "DC1", None), ("adjustment", "DC1", "damaged")]),
    ("processing_required", 7002, [("return", "STORE-12", None), ("adjustment", "STORE-12", "quality_hold")]),
    ("missing", None, []),
])
def test_each_disposition_books_only_what_came_back(kind, location, expected):
    payload = _dispose(kind, location=location)
    events, waiting = mapping.disposition_events("5", mapping.dispositions(payload), mapping.return_skus(payload),
                                                 LOCATIONS, "DC1")
    assert waiting == []
    assert [(e.type, e.location, e.reason) for e in events] == expected
    assert all(e.reference == "return-5" and e.sku == "TEE-BLK-M" for e in events)
    assert len({e.event_id for e in events}) == len(events)


def test_a_disposition_without_its_sku_waits_and_a_restock_needs_a_location():
    payload = _dispose("restocked", sku=None)
    events, waiting = mapping.disposition_events("5", mapping.dispositions(payload), {}, LOCATIONS, "DC1")
    assert (events, waiting) == ([], ["77"])
    with pytest.raises(mapping.InvalidRefund, match="RESTOCKED needs a location"):
        payload = _dispose("restocked", location=None)
        mapping.disposition_events("5", mapping.dispositions(payload), mapping.return_skus(payload), LOCATIONS, "DC1")
    with pytest.raises(mapping.InvalidRefund, match="disposition type"):
        mapping.dispositions(_dispose("thrown_away"))


def test_the_refund_state_machine():
    assert allowed("refund", "received", "posted") and allowed("refund", "posted", "credited")
    assert not allowed("refund", "credited", "received")  # a posted credit note is final
    assert not allowed("refund", "posted", "awaiting_sale")
    assert all(target in REFUND_STATES for targets in REFUND_STATES.values() for target in targets)
