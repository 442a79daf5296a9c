"""More than one currency per shop, through the real Tryton (a USD company with EUR, GBP
and CAD at fixed rates, adapters/erp/tryton/setup.py): a EUR shop selling to a buyer who
pays in USD (presentment) books its sale and credit note in euros, the shop currency,
with the dollars kept beside them in the flow's document; its Shopify Payments payouts
settle in euros and post as euro journal entries (Tryton converts them to the company's
dollars and keeps the euros as the second currency), reconciling to zero drift."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import pytest_asyncio

from adapters.erp.tryton.setup import CURRENCIES
from availability.flows.finance import mapping
from availability.flows.finance.reconcile import reconcile
from availability.flows.finance.store import FinanceStore
from tests.flows_erp.finance_helpers import activity, finance_flow, month_start, post_orders, simulator
from tests.flows_erp.returns_helpers import DC, make_world

pytestmark = pytest.mark.timeout(600)
EUR_PER_USD = Decimal(CURRENCIES["EUR"][2])


def _usd(eur: Decimal) -> Decimal:
    return (eur / EUR_PER_USD).quantize(Decimal("0.01"))


async def _move_lines(erp, move_id: int) -> list[dict]:
    return await erp.call("model.account.move.line.search_read", [["move", "=", move_id]], 0, None, [["id", "ASC"]],
                          ["debit", "credit", "amount_second_currency", "second_currency.code"])


async def test_a_eur_shop_selling_in_usd_books_euros_and_keeps_the_dollars(redis_client, key_prefix, order_store,
                                                                          erp, shop):
    w = await make_world(redis_client, key_prefix, order_store.url, erp, shop, ["SKU-0011"], currency="EUR")
    order, events = w.sim.checkout([{"sku": "SKU-0011", "quantity": 3}], DC, "web",
                                   presentment={"currency": "USD", "rate": "1.0870"})
    w.sent += [(t, p) for t, p in events if t == "orders/create"]
    assert (order["currency"], order["presentment_currency"], order["total_price"]) == ("EUR", "USD", "30.00")
    assert order["total_price_set"]["presentment_money"] == {"amount": "32.61", "currency_code": "USD"}
    await w.post_order(order)

    sale = await erp.find_sale_by_reference(f"{shop}#{order['order_number']}")
    row = (await erp.call("model.sale.sale.read", [sale.id], ["currency.code", "total_amount", "invoices"]))[0]
    assert (row["currency."]["code"], row["total_amount"]) == ("EUR", Decimal("30.00"))  # shop money, not dollars
    [invoice] = await erp.call("model.account.invoice.read", row["invoices"], ["currency.code", "total_amount"])
    assert (invoice["currency."]["code"], invoice["total_amount"]) == ("EUR", Decimal("30.00"))

    w.sim.refunds.mark_fulfilled(order["id"])
    refund = w.refund(order, [("SKU-0011", 1, "RETURN", DC)], amount="10.00")
    await w.deliver()
    await w.worker.drain()
    key = f"{shop}#refund-{refund['id'].rsplit('/', 1)[1]}"
    note = await erp.find_credit_note_by_reference(key)
    assert note.state == "posted" and note.total == Decimal("-10.00")
    head = (await erp.call("model.account.invoice.read", [note.id], ["currency.code", "move"]))[0]
    assert head["currency."]["code"] == "EUR"
    lines = await _move_lines(erp, head["move"])
    # the books: the company's dollars at Tryton's rate, the euros beside them
    assert {(ln["second_currency."] or {}).get("code") for ln in lines} == {"EUR"}
    assert sum(ln["debit"] for ln in lines) == sum(ln["credit"] for ln in lines) == _usd(Decimal("10.00"))
    assert sum(abs(ln["amount_second_currency"]) for ln in lines) == Decimal("20.00")  # 10.00 each side
    doc = await w.store.get(key)
    assert (doc.total_shop, doc.shop_currency) == (Decimal("10.00"), "EUR")
    assert (doc.total_presentment, doc.presentment_currency) == (Decimal("10.87"), "USD")
    assert not await w.store.list_exceptions()


@pytest_asyncio.fixture
async def finance_store(tmp_path):
    store = await FinanceStore(f"sqlite+aiosqlite:///{tmp_path}/finance.db").open()
    yield store
    await store.close()


async def test_payouts_in_the_shops_settlement_currency_post_as_euro_entries(erp, finance_store, order_store,
                                                                            redis_client, key_prefix, shop):
    sim = simulator(currency="EUR")
    try:
        made = activity(sim, 3, orders_per_day=2, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                        fail_payout_on=None)
        assert {o["currency"] for o in made["orders"]} == {"EUR"}
        await post_orders(made["orders"], order_store, redis_client, key_prefix, erp, shop)
        flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop)
        await flow.poll(issued_from=month_start())
        await flow.drain()
        entries = await erp.list_journal_entries(f"{shop}#payout-")
        assert entries and all(e.state == "posted" and e.currency == "EUR" for e in entries)
        for entry in entries:
            payout_id = entry.reference.rsplit("-", 1)[1]
            doc = await finance_store.get(f"gid://shopify/ShopifyPaymentsPayout/{payout_id}")
            assert doc.currency == "EUR"
            assert entry.balance_by_account()[mapping.BANK] == Decimal(doc.net)  # euros, as Shopify paid them
            booked = await _move_lines(erp, entry.id)
            assert sum(ln["debit"] for ln in booked) == sum(ln["credit"] for ln in booked)  # dollars balance
            assert {ln["second_currency."]["code"] for ln in booked} == {"EUR"}
            bank = max(booked, key=lambda ln: ln["debit"])
            assert abs(bank["debit"] - _usd(Decimal(doc.net))) <= Decimal("0.01")  # rounding lands here
        for i in range(3):
            report = await reconcile(finance_store, erp, flow.payments, shop=shop,
                                     day=month_start() + dt.timedelta(days=i))
            assert report["drift"] == 0, report["mismatches"]
        assert not await finance_store.list_exceptions()
    finally:
        sim.stop()
