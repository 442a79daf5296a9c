"""Helpers of the finance-posting tests: a simulated shop with Shopify Payments, its orders
posted into Tryton by the order flow, and credit notes for its refunds."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from adapters.erp.port import PartyRef
from adapters.shopify.client import ShopifyAdminClient
from adapters.shopify.payments import ShopifyPayments
from adapters.shopify.simulator.config import SimulatorConfig
from adapters.shopify.simulator.payments import generate_activity
from adapters.shopify.simulator.server import SimulatorServer
from availability.flows.finance.flow import FinanceConfig, FinanceFlow, finance_queue
from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker, WorkerConfig


def month_start() -> dt.date:
    """The first of this month: every simulated day is in the ERP's fiscal years (this one
    and the next), whatever day the tests run."""
    today = dt.datetime.now(dt.UTC).date()
    return today.replace(day=1)


def simulator(**config) -> SimulatorServer:
    # a generous bucket: these tests are about posting, not about pacing
    sim = SimulatorServer(SimulatorConfig(**({"restore_rate": 50_000, "bucket_size": 200_000} | config)))
    sim.start()
    location = sim.state.add_location("Warehouse")
    for n in range(1, 7):  # SKUs the test ERP has products for
        sim.state.stock(sim.state.add_item(f"SKU-{n:04d}"), location, available=100_000)
    return sim


def payments_client(sim: SimulatorServer) -> ShopifyPayments:
    return ShopifyPayments(ShopifyAdminClient(sim.base_url, sim.config.access_token, timeout=30))


def finance_flow(store, redis, prefix, erp, sim, shop, **config) -> FinanceFlow:
    cfg = FinanceConfig(**({"lease_ms": 60_000, "retry_cap_s": 0.5} | config))
    return FinanceFlow(store, finance_queue(redis, prefix), erp, payments_client(sim), shop=shop, config=cfg)


def activity(sim: SimulatorServer, days: int, **kw) -> dict:
    return generate_activity(sim.state, month_start(), days, **kw)


async def post_orders(orders: list[dict], order_store, redis, prefix, erp, shop) -> None:
    """The order flow posts the simulated orders (one confirmed ERP sale each)."""
    queue = OrderQueue(redis, f"{prefix}o")
    intake = OrderIntake(order_store, queue, shop=shop)
    for body in orders:
        await intake.enqueue_order_webhook("orders/create", body, {"X-Shopify-Webhook-Id": f"create-{body['id']}"})
    await OrderWorker(order_store, queue, erp, config=WorkerConfig(lease_ms=5000)).drain(timeout=300)


async def credit_note(erp, shop: str, refund: dict) -> int:
    """A posted-as-draft customer credit note for a Shopify refund, dated the refund's day:
    what the refund flow makes (built beside this flow); reference `<shop>#refund-<txn>`."""
    party = await erp.find_or_create_party(PartyRef(name=f"refund {refund['order_name']}"))
    address = await erp.call("model.party.address.search", [["party", "=", party]], 0, 1, None)
    receivable = await erp.call("model.account.account.search", [["type.receivable", "=", True]], 0, 1, None)
    category = await erp.call("model.product.category.search_read", [["name", "=", "Retail"]], 0, 1, None,
                              ["account_revenue"])
    revenue = [category[0]["account_revenue"]]
    journal = await erp.call("model.account.journal.search", [["type", "=", "revenue"]], 0, 1, None)
    currency = await erp.call("model.currency.currency.search", [["code", "=", "USD"]], 0, 1, None)
    values = {
        "type": "out", "party": party, "invoice_address": address[0], "account": receivable[0],
        "journal": journal[0], "currency": currency[0], "reference": f"{shop}#refund-{refund['transaction_id']}",
        "invoice_date": dt.date.fromisoformat(refund["day"]),
        "lines": [["create", [{"type": "line", "account": revenue[0], "quantity": 1.0,
                               "unit_price": -Decimal(refund["amount"]),
                               "description": f"refund of order {refund['order_name']}"}]]],
    }
    return (await erp.call("model.account.invoice.create", [values]))[0]
