"""The order worker posts a claimed batch in a few Tryton calls (one lookup, one create, one
quote, one confirm for the batch), against the real Tryton: duplicates in a batch make one
sale each, a bad order in a batch fails alone (its own exception, the others post), and a
batch found already created (a resend) is adopted, not created again. A worker killed
between the batch's create and its confirm is in test_faults.py."""

from __future__ import annotations

import pytest

from adapters.erp.tryton.client import TrytonErp
from availability.flows.orders.flow import (
    OrderIntake,
    OrderQueue,
    OrderWorker,
    WorkerConfig,
)
from availability.flows.orders.reconcile import reconcile
from tests.flows_erp.helpers import expected_total, order

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def counted(tryton):
    """A client of its own, so the test counts only its own Tryton calls."""
    client = TrytonErp(tryton.url, tryton.login, tryton.password(), timeout=60)
    yield client
    await client.aclose()


def _worker(order_store, queue, erp, batch: int = 20) -> OrderWorker:
    return OrderWorker(order_store, queue, erp, config=WorkerConfig(lease_ms=20_000, batch=batch))


async def test_duplicates_in_a_batch_make_one_sale_each_in_one_create(counted, redis_client, key_prefix, order_store,
                                                                      shop):
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    bodies = {n: order(n, lines=[("SKU-0013", 1 + n % 3, "5.00")]) for n in range(7101, 7111)}
    # Shopify's storm for each order: a delivery, the same delivery again, a second
    # delivery of the same event, orders/paid and orders/updated of the same version
    storm = [("orders/create", "a"), ("orders/create", "a"), ("orders/create", "b"), ("orders/paid", "c"),
             ("orders/updated", "d")]
    for n, body in bodies.items():
        for topic, delivery in storm:
            await intake.enqueue_order_webhook(topic, body, {"X-Shopify-Webhook-Id": f"wh-{n}-{delivery}"})
    counted.calls.clear()
    await _worker(order_store, queue, counted).drain()
    sales = await counted.list_sales(f"{shop}#")
    assert sorted(s.reference for s in sales) == sorted(f"{shop}#{n}" for n in bodies)
    for sale in sales:
        assert sale.state == "processing"
        assert sale.total == expected_total(bodies[int(sale.reference.rsplit("#", 1)[1])])
    # ten orders, one batch: one lookup, one create, one quote, one confirm
    assert counted.calls["model.sale.sale.create"] == 1
    assert counted.calls["model.sale.sale.quote"] == 1
    assert counted.calls["model.sale.sale.confirm"] == 1
    assert {d.state for d in await order_store.documents(shop=shop)} == {"confirmed"}
    assert (await reconcile(order_store, counted, shop=shop))["drift"] == 0


async def test_a_bad_order_in_a_batch_fails_alone(counted, redis_client, key_prefix, order_store, shop):
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    good = [order(n, lines=[("SKU-0014", 1, "3.00")]) for n in range(7201, 7205)]
    # Tryton refuses this one at create: a unit price finer than its 4 price digits
    refused = order(7205, lines=[("SKU-0014", 1, "3.123456")])
    unknown = order(7206, lines=[("NOT-A-SKU", 1, "3.00")])  # refused before any call
    bad_currency = order(7207, lines=[("SKU-0014", 1, "3.00")])
    bad_currency["currency"] = "XTS"
    for body in [good[0], refused, good[1], unknown, good[2], bad_currency, good[3]]:
        await intake.enqueue_order_webhook("orders/create", body)
    counted.calls.clear()
    await _worker(order_store, queue, counted).drain()
    sales = {s.reference: s for s in await counted.list_sales(f"{shop}#")}
    assert sorted(sales) == sorted(f"{shop}#{b['order_number']}" for b in good)
    assert {s.state for s in sales.values()} == {"processing"}
    reasons = {e["reference"]: e for e in await order_store.list_exceptions()}
    assert {r: e["reason"] for r, e in reasons.items()} == {
        f"{shop}#7205": "erp_validation", f"{shop}#7206": "unknown_sku", f"{shop}#7207": "erp_validation"}
    assert "digits" in reasons[f"{shop}#7205"]["detail"].lower()
    assert "XTS" in reasons[f"{shop}#7207"]["detail"]
    # the batch's create was refused as a whole, then each of its five orders was created alone
    assert counted.calls["model.sale.sale.create"] == 1 + 5
    states = {d.reference: d.state for d in await order_store.documents(shop=shop)}
    assert [r for r, st in states.items() if st == "confirmed"] == [r for r in states if r in sales]


async def test_a_batch_already_in_the_erp_is_adopted_not_created_again(counted, erp, redis_client, key_prefix,
                                                                       order_store, shop):
    """What a resend finds after a crash: sales created (one a quotation, one confirmed)
    that the flow never recorded. One lookup for the batch finds them; none is created."""
    from availability.flows.orders import mapping

    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    bodies = [order(n, lines=[("SKU-0016", 2, "2.50")]) for n in range(7301, 7305)]
    party = await erp.create_party(mapping.to_sale(shop, bodies[0]).party)
    made = await erp.create_sales([(mapping.to_sale(shop, b), party) for b in bodies[:2]])
    await erp.confirm_sales([made[1].id])
    for body in bodies:
        await intake.enqueue_order_webhook("orders/create", body)
    counted.calls.clear()
    await _worker(order_store, queue, counted).drain()
    sales = await counted.list_sales(f"{shop}#")
    assert sorted(s.reference for s in sales) == sorted(f"{shop}#{b['order_number']}" for b in bodies)
    assert {s.id for s in sales} >= {m.id for m in made}
    assert {s.state for s in sales} == {"processing"}
    assert counted.calls["model.sale.sale.create"] == 1  # the two new ones, together
    for ref in (made[0].reference, made[1].reference):
        assert any("found by reference" in (h["detail"] or "") for h in await order_store.history(ref))


async def test_guests_of_a_batch_get_a_party_each_in_one_create(counted, redis_client, key_prefix, order_store,
                                                                shop):
    """A flash sale's guests (no customer, e-mail, phone or address: nothing to match on)
    become parties of their own, all of the batch's in one ERP create."""
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    bodies = []
    for n in range(7401, 7406):
        body = order(n, lines=[("SKU-0017", 1, "4.00")])
        body["email"] = None
        bodies.append(body)
        await intake.enqueue_order_webhook("orders/create", body)
    counted.calls.clear()
    await _worker(order_store, queue, counted).drain()
    assert counted.calls["model.party.party.create"] == 1
    sales = await counted.list_sales(f"{shop}#")
    assert sorted(s.reference for s in sales) == sorted(f"{shop}#{b['order_number']}" for b in bodies)
    assert {s.state for s in sales} == {"processing"}
    rows = await counted.call("model.sale.sale.read", [s.id for s in sales], ["party"])
    assert len({r["party"] for r in rows}) == len(bodies)  # a party each, none shared
