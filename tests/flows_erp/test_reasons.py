"""Exception reasons stay distinct against the real Tryton (unknown SKU, unknown location
two ways, ERP validation error, ERP down) while the other orders keep posting; a slow ERP
under two workers still makes one sale per order; reconciliation is clean afterwards."""

from __future__ import annotations

import asyncio
import copy

import pytest

from adapters.erp.tryton.client import TrytonErp
from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker, WorkerConfig, retry_exception
from availability.flows.orders.reconcile import reconcile
from tests.flows_erp.helpers import order
from tests.flows_erp.test_faults import SlowProxy

pytestmark = pytest.mark.timeout(600)
POS_LOCATION = 655441492


async def test_each_cause_is_its_own_reason_and_the_flow_keeps_going(erp, redis_client, key_prefix, order_store,
                                                                      shop, tmp_path):
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    warehouses = {str(POS_LOCATION): "WH", "655441493": "NO-SUCH-WAREHOUSE"}
    worker = OrderWorker(order_store, queue, erp, config=WorkerConfig(lease_ms=5000, warehouses=warehouses))

    def pos(number: int, location: int, sku: str = "SKU-0015") -> dict:
        body = order(number, lines=[(sku, 1, "4.00")])
        body["location_id"], body["source_name"] = location, "pos"
        return body

    bad_currency = order(9903, lines=[("SKU-0015", 1, "4.00")])
    bad_currency["currency"] = "XTS"  # ISO's test currency: not in the ERP
    bodies = [order(9900, lines=[("SKU-0015", 1, "4.00")]),  # online: default warehouse
              pos(9901, POS_LOCATION),                       # a mapped store: posts from WH
              order(9902, lines=[("NOT-A-SKU", 1, "4.00")]),
              bad_currency,
              pos(9904, 999),                                # a store nobody mapped
              pos(9905, 655441493)]                          # mapped to a warehouse Tryton lacks
    for body in bodies:
        await intake.enqueue_order_webhook("orders/create", body)
    await worker.drain()
    reasons = {e["reference"].split("#")[1]: e["reason"] for e in await order_store.list_exceptions()}
    assert reasons == {"9902": "unknown_sku", "9903": "erp_validation", "9904": "unknown_location",
                       "9905": "unknown_location"}
    owners = {e["reason"]: e["owner"] for e in await order_store.list_exceptions()}
    assert owners["unknown_location"] == "operations" and owners["erp_validation"] == "finance"
    sale = await erp.find_sale_by_reference(f"{shop}#9901")
    row = (await erp.call("model.sale.sale.read", [sale.id], ["warehouse"]))[0]
    wh = await erp.call("model.stock.location.search", [["code", "=", "WH"]], 0, 1, None)
    assert row["warehouse"] == wh[0] and sale.state == "processing"
    assert (await erp.find_sale_by_reference(f"{shop}#9900")).state == "processing"

    # ERP down is its own reason too (a worker whose ERP does not answer)
    down_erp = TrytonErp("http://127.0.0.1:9/availability/", "admin", "x", timeout=1)
    down = OrderWorker(order_store, queue, down_erp, config=WorkerConfig(lease_ms=5000, retry_cap_s=0.1,
                                                                         erp_down_exception_after=1))
    await intake.enqueue_order_webhook("orders/create", order(9906, lines=[("SKU-0015", 1, "4.00")]))
    for _ in range(3):
        await down.run_once()
        await asyncio.sleep(0.15)
    await down_erp.aclose()
    assert {e["reason"] for e in await order_store.list_exceptions() if e["reference"].endswith("#9906")} == {"erp_down"}

    # operations maps the store, and retries: it posts; the ERP back, the erp_down one closes itself
    worker.config.warehouses["999"] = "WH"
    for exc in await order_store.list_exceptions(reason="unknown_location"):
        if exc["reference"].endswith("#9904"):
            await retry_exception(order_store, queue, exc["id"], by="ops")
    await worker.drain()
    assert (await order_store.get(f"{shop}#9904")).state == "confirmed"
    assert (await order_store.get(f"{shop}#9906")).state == "confirmed"
    assert {e["reference"].split("#")[1] for e in await order_store.list_exceptions()} == {"9902", "9903", "9905"}


async def test_a_slow_erp_under_two_workers_makes_one_sale_per_order(tryton, erp, redis_client, key_prefix,
                                                                     order_store, shop):
    proxy = SlowProxy(tryton.port, b"model.", delay=0.3)  # every model call answers 300 ms late
    base = await proxy.start()
    proxy.enabled = True
    clients = [TrytonErp(f"{base}/availability/", tryton.login, tryton.password(), timeout=30) for _ in range(2)]
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    workers = [OrderWorker(order_store, queue, c, config=WorkerConfig(lease_ms=20_000, batch=2)) for c in clients]
    try:
        bodies = [order(n, lines=[("SKU-0016", n - 9950, "1.25")]) for n in range(9951, 9957)]
        for body in bodies:
            await intake.enqueue_order_webhook("orders/create", body)
            await intake.enqueue_order_webhook("orders/create", copy.deepcopy(body))  # a duplicate delivery
        await asyncio.gather(*(w.drain(timeout=300) for w in workers))
        sales = await erp.list_sales(f"{shop}#")
        assert sorted(s.reference for s in sales) == sorted(f"{shop}#{n}" for n in range(9951, 9957))
        report = await reconcile(order_store, erp, shop=shop)
        assert report["drift"] == 0 and report["orders_checked"] == 6
    finally:
        for c in clients:
            await c.aclose()
        await proxy.stop()
