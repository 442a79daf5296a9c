"""Refunds and returns from the Shopify simulator into a real Tryton and a real ledger: the
right credit note for every restock type and disposition, stock only where it came back,
shop and presentment money apart, duplicates and any delivery order changing nothing."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from availability.flows.returns.flow import retry_exception
from tests.flows_erp.returns_helpers import DC, STORE, credit_notes, fresh_shop, make_world

# generous: the first test of a run may build the Tryton database (minutes on a busy machine)
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def world(redis_client, key_prefix, order_store, erp, shop):
    return await make_world(redis_client, key_prefix, order_store.url, erp, shop,
                            ["SKU-0015", "SKU-0016", "SKU-0017", "SKU-0018"])


async def _sale_invoice_lines(erp, reference: str) -> set[int]:
    sale = await erp.find_sale_by_reference(reference)
    invoices = (await erp.call("model.sale.sale.read", [sale.id], ["invoices"]))[0]["invoices"]
    return set(await erp.call("model.account.invoice.line.search", [["invoice", "in", invoices]], 0, None, None))


async def test_every_restock_type_ends_in_its_credit_note_and_stock(world, erp):
    from prometheus_client import REGISTRY

    def completed() -> float:
        return REGISTRY.get_sample_value("availability_refunds_completion_seconds_count") or 0.0

    w = world
    completed_before = completed()
    order = w.order({"SKU-0015": 2, "SKU-0016": 2, "SKU-0017": 2, "SKU-0018": 4})
    await w.post_order(order)
    w.sim.refunds.mark_fulfilled(order["id"], w.line(order, "SKU-0016")["id"])
    w.sim.refunds.mark_fulfilled(order["id"], w.line(order, "SKU-0017")["id"])
    w.sim.refunds.mark_fulfilled(order["id"], w.line(order, "SKU-0018")["id"])
    before = await w.stock("SKU-0015", "SKU-0016", "SKU-0017", "SKU-0018")
    cancel = w.refund(order, [("SKU-0015", 1, "CANCEL", None)], amount="10.00")
    back = w.refund(order, [("SKU-0016", 1, "RETURN", STORE), ("SKU-0017", 1, "NO_RESTOCK", None)], amount="20.00")
    ret = w.request_return(order, {"SKU-0018": 4})
    w.dispose(ret, "SKU-0018", [("RESTOCKED", 1, STORE), ("NOT_RESTOCKED", 1, None),
                                ("PROCESSING_REQUIRED", 1, STORE), ("MISSING", 1, None)])
    money = w.refund(order, [("SKU-0018", 4, "NO_RESTOCK", None)], amount="40.00")  # the return's money
    outcomes = await w.deliver()
    assert {o["outcome"] for o in outcomes} == {"queued"}
    await w.worker.drain()

    # credit notes: one per refund, in shop money, crediting the sale's invoice lines
    notes = await credit_notes(erp, w.shop)
    ids = {r["id"].rsplit("/", 1)[1]: r for r in (cancel, back, money)}
    assert notes == {f"{w.shop}#refund-{i}": -Decimal(r["totalRefundedSet"]["shopMoney"]["amount"])
                     for i, r in ids.items()}
    assert sorted(notes.values()) == [Decimal("-40.00"), Decimal("-20.00"), Decimal("-10.00")]
    assert completed() == completed_before + 3  # refund created -> credit note posted, once each
    sale_lines = await _sale_invoice_lines(erp, f"{w.shop}#{order['order_number']}")
    for reference in notes:
        note = await erp.find_credit_note_by_reference(reference)
        assert note.state == "posted" and note.number
        assert note.credits_lines and set(note.credits_lines) <= sale_lines
    for i in ids:
        doc = await w.store.get(f"{w.shop}#refund-{i}")
        assert doc.state == "credited" and doc.credited_ms >= doc.received_ms
        assert [h["to_state"] for h in await w.store.history(doc.key)][-2:] == ["posted", "credited"]

    # stock: only where it physically came back
    after = await w.stock("SKU-0015", "SKU-0016", "SKU-0017", "SKU-0018")

    def delta(sku: str, location: str) -> tuple[int, int, int]:
        a, b = after.get((sku, location), (0, 0, 0)), before.get((sku, location), (0, 0, 0))
        return tuple(x - y for x, y in zip(a, b, strict=True))

    assert delta("SKU-0015", "DC1") == (0, -1, 0)            # CANCEL: the order's hold released
    assert delta("SKU-0016", "STORE-12") == (1, 0, 0)        # RETURN at the store: on hand
    assert delta("SKU-0017", "DC1") == delta("SKU-0017", "STORE-12") == (0, 0, 0)   # NO_RESTOCK: nothing
    assert delta("SKU-0018", "STORE-12") == (2, 0, 1)        # RESTOCKED + PROCESSING_REQUIRED (held)
    assert delta("SKU-0018", "DC1") == (1, 0, 1)             # NOT_RESTOCKED (damaged, where returns arrive)
    assert not await w.store.list_exceptions()


async def test_shop_money_is_booked_and_presentment_kept_apart(world, erp):
    w = world
    order = w.order({"SKU-0015": 3})
    await w.post_order(order)
    w.sim.refunds.mark_fulfilled(order["id"])
    w.sim.refunds.set_money(order["id"], currency="EUR", rate="0.9", shipping="5.00")
    # 2 x 10.00 + 5.00 shipping calculated, 24.00 paid back: a 1.00 refund discrepancy
    refund = w.refund(order, [("SKU-0015", 2, "RETURN", DC)], amount="24.00", shipping={"fullRefund": True})
    await w.deliver()
    await w.worker.drain()
    key = f"{w.shop}#refund-{refund['id'].rsplit('/', 1)[1]}"
    note = await erp.find_credit_note_by_reference(key)
    assert note.total == Decimal("-24.00") and note.state == "posted"
    lines = await erp.call("model.account.invoice.line.search_read", [["invoice", "=", note.id]], 0, None,
                           [["sequence", "ASC"]], ["product.code", "quantity", "unit_price"])
    got = [(ln["product."]["code"], ln["quantity"], ln["unit_price"]) for ln in lines]
    assert got == [("SKU-0015", -2, Decimal("10.00")), ("SHIPPING", -1, Decimal("5.00")),
                   ("MISC", -1, Decimal("-1.00"))]
    doc = await w.store.get(key)
    assert (doc.total_shop, doc.shop_currency) == (Decimal("24.00"), "USD")
    assert (doc.total_presentment, doc.presentment_currency) == (Decimal("21.60"), "EUR")


async def test_a_refund_that_does_not_add_up_is_an_exception_not_a_wrong_note(world, erp):
    w = world
    order = w.order({"SKU-0016": 1})
    await w.post_order(order)
    w.refund(order, [("SKU-0016", 1, "CANCEL", None)], amount="10.00")
    (topic, payload, headers), = w.flow_webhooks()
    payload = dict(payload, transactions=[dict(payload["transactions"][0], amount="9.00",
                                               amount_set={"shop_money": {"amount": "9.00", "currency_code": "USD"}})])
    await w.intake.enqueue_webhook(topic, payload, headers)
    await w.worker.drain()
    key = f"{w.shop}#refund-{payload['id']}"
    assert (await w.store.get(key)).state == "exception"
    (exc,) = await w.store.list_exceptions()
    assert (exc["reason"], exc["owner"]) == ("amount_mismatch", "finance")
    assert await erp.find_credit_note_by_reference(key) is None
    # the stock effect did not wait for the money: the hold is released all the same
    assert (await w.stock("SKU-0016"))[("SKU-0016", "DC1")][1] == 0
    await retry_exception(w.store, w.queue, exc["id"], by="test")  # still wrong: parked again
    await w.worker.drain()
    assert (await w.store.get(key)).state == "exception"


async def test_a_storm_of_duplicates_and_racing_workers_make_one_credit_note(world, erp):
    from availability.flows.returns.flow import ReturnsWorker

    w = world
    order = w.order({"SKU-0017": 2})
    await w.post_order(order)
    w.sim.refunds.mark_fulfilled(order["id"])
    w.refund(order, [("SKU-0017", 2, "RETURN", STORE)], amount="20.00")
    (topic, payload, _), = w.flow_webhooks()
    before = await w.stock("SKU-0017")
    results = await asyncio.gather(*[
        w.intake.enqueue_webhook(topic, payload, {"X-Shopify-Webhook-Id": f"w{i % 3}"}) for i in range(15)])
    assert sum(r["outcome"] == "queued" for r in results) == 3
    workers = [w.worker] + [ReturnsWorker(w.store, w.queue, erp, w.worker.sink, w.worker.sales, w.worker.locations,
                                          config=w.worker.config) for _ in range(2)]
    await asyncio.gather(*(x.run_once() for x in workers), *(w.intake.enqueue_webhook(topic, payload)
                                                             for _ in range(5)))
    await asyncio.gather(*(x.drain() for x in workers))
    assert list((await credit_notes(erp, w.shop)).values()) == [Decimal("-20.00")]
    after = await w.stock("SKU-0017")
    assert after[("SKU-0017", "STORE-12")][0] - before.get(("SKU-0017", "STORE-12"), (0, 0, 0))[0] == 2


async def test_a_refund_before_its_order_waits_for_the_sale(world, erp):
    w = world
    order = w.order({"SKU-0018": 1})
    w.refund(order, [("SKU-0018", 1, "CANCEL", None)], amount="10.00")
    await w.deliver()
    await w.worker.run_once()
    (doc,) = await w.store.documents(kind="refund")
    assert doc.state == "awaiting_sale" and await erp.find_credit_note_by_reference(doc.key) is None
    await w.post_order(order)
    await w.worker.drain()
    assert (await w.store.get(doc.key)).state == "credited"
    assert list((await credit_notes(erp, w.shop)).values()) == [Decimal("-10.00")]


# --- any delivery order ------------------------------------------------------------------------------

_SCENARIO_SKUS = ["SKU-0019", "SKU-0020"]


@pytest.fixture(scope="module")
def scenario_runs():
    return []


# few examples and no shrinking: each example posts a sale and credit notes to the real ERP
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck),
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(seed=st.integers(0, 2**32 - 1), duplicates=st.lists(st.integers(0, 20), max_size=6))
async def test_any_delivery_order_gives_the_same_credit_notes_and_stock(
        redis_client, order_store, erp, seed, duplicates):
    """The order's webhook, two refunds and a return's request/approve/dispose deliveries,
    shuffled and partly redelivered (same and new webhook ids): the same credit notes and
    the same stock as the plain oracle, whatever the order."""
    import uuid

    shop, prefix = fresh_shop(), f"t{uuid.uuid4().hex[:10]}"
    w = await make_world(redis_client, prefix, order_store.url, erp, shop, _SCENARIO_SKUS)
    order = w.order({"SKU-0019": 3, "SKU-0020": 2})
    w.sim.refunds.mark_fulfilled(order["id"], w.line(order, "SKU-0020")["id"])
    w.sim.refunds.mark_fulfilled(order["id"], w.line(order, "SKU-0019")["id"], 1)
    cancel = w.refund(order, [("SKU-0019", 2, "CANCEL", None)], amount="20.00")
    ret = w.request_return(order, {"SKU-0020": 2, "SKU-0019": 1})
    w.dispose(ret, "SKU-0020", [("RESTOCKED", 1, STORE), ("PROCESSING_REQUIRED", 1, None)])
    w.dispose(ret, "SKU-0019", [("NOT_RESTOCKED", 1, None)])
    money = w.refund(order, [("SKU-0020", 2, "NO_RESTOCK", None), ("SKU-0019", 1, "NO_RESTOCK", None)],
                     amount="30.00")
    deliveries = [("order", None, None)] + w.flow_webhooks()
    rng = random.Random(seed)
    for n in duplicates:  # redeliveries: the same webhook id (dropped) or a new one (merged)
        t, p, h = deliveries[n % len(deliveries)]
        deliveries.append((t, p, h if n % 2 else dict(h or {}, **{"X-Shopify-Webhook-Id": f"{shop}:again-{n}"})))
    rng.shuffle(deliveries)
    for topic, payload, headers in deliveries:
        if topic == "order":
            await w.post_order(order)
        else:
            await w.intake.enqueue_webhook(topic, payload, headers)
        if rng.random() < 0.4:
            await w.worker.run_once()
    await w.order_worker.drain()
    await w.worker.drain()

    notes = await credit_notes(erp, shop)
    assert notes == {f"{shop}#refund-{cancel['id'].rsplit('/', 1)[1]}": Decimal("-20.00"),
                     f"{shop}#refund-{money['id'].rsplit('/', 1)[1]}": Decimal("-30.00")}
    stock = await w.stock(*_SCENARIO_SKUS)
    # oracle: reserved 3 + 2 at DC1 by the order; CANCEL released 2; the return put back
    # SKU-0020: 1 restocked at the store, 1 held at DC1; SKU-0019: 1 damaged at DC1
    assert stock[("SKU-0019", "DC1")] == (1, 1, 1)
    assert stock[("SKU-0020", "DC1")] == (1, 2, 1)
    assert stock[("SKU-0020", "STORE-12")] == (1, 0, 0)
    assert not await w.store.list_exceptions()
