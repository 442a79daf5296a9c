"""The fulfilment flow against the real Tryton and the Shopify simulator: WMS 945s and ERP
shipments become Shopify fulfillments exactly once (duplicates, partial shipments, a
worker SIGKILLed after Shopify created the fulfillment), the ERP shipment is marked done
for WMS shipments, and what cannot be posted is an exception with its reason."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from availability.flows.fulfilment.flow import retry_exception
from availability.flows.fulfilment.mapping import InvalidShipment
from tests.flows_erp.fulfilment_helpers import edi_945, fulfilment_flows, simulator_shop

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture
async def parts(shop, redis_client, key_prefix, tmp_path, order_store, erp):
    async with simulator_shop() as sim_shop:
        async with fulfilment_flows(shop, redis_client, key_prefix, order_store.url, order_store, erp,
                                    sim_shop.client) as flows:
            yield sim_shop, flows


def fulfillment_order(sim_shop, order_id: int) -> dict:
    node = sim_shop.sim.state.order_node(order_id)
    return node["_fos"][0]


async def test_945_becomes_one_fulfillment_and_the_erp_shipment_is_done(parts, erp):
    sim_shop, flows = parts
    body = sim_shop.checkout([("TEE-BLK-M", 2), ("CAP-RED", 1)])
    reference = await flows.post_order(body)
    edi = edi_945(f"ORD-{body['order_number']}", "SHP-1", [("TEE-BLK-M", 2), ("CAP-RED", 1)], tracking="1ZTRACK1")
    [answer] = await flows.intake.take_945(edi)
    assert answer == {"outcome": "queued", "shipment_id": "wms:ACME3PL:SHP-1", "reference": reference}
    assert (await flows.intake.take_945(edi))[0]["outcome"] == "duplicate"  # the WMS resent its file
    await flows.worker.drain(timeout=60)
    await flows.intake.take_945(edi)
    await flows.worker.drain(timeout=60)

    fulfillments = sim_shop.sim.state.fulfillments_of(body["id"])
    assert len(fulfillments) == 1
    assert fulfillments[0]["tracking_numbers"] == ["1ZTRACK1"]
    assert fulfillments[0]["tracking_company"] == "UPS GROUND"
    assert {li["sku"]: li["quantity"] for li in fulfillments[0]["line_items"]} == {"TEE-BLK-M": 2, "CAP-RED": 1}
    assert fulfillment_order(sim_shop, body["id"])["status"] == "CLOSED"
    [shipment] = await erp.sale_shipments(reference)
    assert shipment.state == "done" and shipment.tracking == "1ZTRACK1"
    doc = await flows.store.get("wms:ACME3PL:SHP-1")
    assert doc.state == "done" and doc.erp_shipment_id == shipment.id
    assert [h["to_state"] for h in await flows.store.history(doc.shipment_id)] == [
        "received", "posting", "fulfilled", "fulfilled", "done"]
    # the ERP shipment the flow marked done is not read back as a shipment of its own
    await flows.watcher.poll_once()
    assert [d.shipment_id for d in await flows.store.of_order(reference)] == ["wms:ACME3PL:SHP-1"]


async def test_partial_shipments_fulfil_what_left_and_close_the_erp_shipment_with_the_last(parts, erp):
    sim_shop, flows = parts
    body = sim_shop.checkout([("TEE-BLK-M", 2), ("CAP-RED", 1)])
    reference = await flows.post_order(body)
    number = f"#{body['order_number']}"
    await flows.intake.take_945(edi_945(number, "P-1", [("TEE-BLK-M", 1)], control=11))
    await flows.worker.drain(timeout=60)
    assert fulfillment_order(sim_shop, body["id"])["status"] == "IN_PROGRESS"
    [shipment] = await erp.sale_shipments(reference)
    assert shipment.state != "done"  # the rest has not left yet
    history = await flows.store.history("wms:ACME3PL:P-1")
    assert "stays open" in history[-1]["detail"]

    await flows.intake.take_945(edi_945(number, "P-2", [("TEE-BLK-M", 1), ("CAP-RED", 1)], control=12))
    await flows.worker.drain(timeout=60)
    fulfillments = sim_shop.sim.state.fulfillments_of(body["id"])
    assert [{li["sku"]: li["quantity"] for li in f["line_items"]} for f in fulfillments] == [
        {"TEE-BLK-M": 1}, {"TEE-BLK-M": 1, "CAP-RED": 1}]
    assert fulfillment_order(sim_shop, body["id"])["status"] == "CLOSED"
    [shipment] = await erp.sale_shipments(reference)
    assert shipment.state == "done"


async def test_an_erp_shipment_done_in_tryton_becomes_a_fulfillment_once(parts, erp):
    sim_shop, flows = parts
    body = sim_shop.checkout([("MUG-CLASSIC", 3)])
    reference = await flows.post_order(body)
    [shipment] = await erp.sale_shipments(reference)
    await erp.mark_shipment_done(shipment.id, "TRY-777")  # a warehouse user ships it in Tryton
    assert await flows.watcher.poll_once() >= 1
    assert await flows.watcher.poll_once() == 0  # read again: the same shipment id
    await flows.worker.drain(timeout=60)
    fulfillments = sim_shop.sim.state.fulfillments_of(body["id"])
    assert len(fulfillments) == 1 and fulfillments[0]["tracking_numbers"] == ["TRY-777"]
    doc = await flows.store.get(f"erp:{shipment.id}")
    assert doc.state == "done" and doc.source == "erp"


async def test_what_cannot_be_fulfilled_is_an_exception_with_its_reason(parts):
    sim_shop, flows = parts
    body = sim_shop.checkout([("TEE-BLK-M", 2)])
    # the order is not known yet: unknown_order, then retried once the order flow has it
    await flows.intake.take_945(edi_945(f"ORD-{body['order_number']}", "X-1", [("TEE-BLK-M", 1)], control=21))
    await flows.worker.drain(timeout=60)
    [exc] = await flows.store.list_exceptions()
    assert (exc["reason"], exc["owner"], exc["shipment_id"]) == ("unknown_order", "operations", "wms:ACME3PL:X-1")
    # more units than the order has open: line_not_open; other shipments keep flowing
    await flows.post_order(body)
    await flows.intake.take_945(edi_945(f"ORD-{body['order_number']}", "X-2", [("TEE-BLK-M", 5)], control=22))
    await retry_exception(flows.store, flows.queue, exc["id"], by="test")
    await flows.worker.drain(timeout=60)
    reasons = {e["shipment_id"]: e["reason"] for e in await flows.store.list_exceptions()}
    assert reasons == {"wms:ACME3PL:X-2": "line_not_open"}
    assert (await flows.store.get("wms:ACME3PL:X-1")).state == "done"
    assert len(sim_shop.sim.state.fulfillments_of(body["id"])) == 1
    with pytest.raises(InvalidShipment):
        await flows.intake.take_945(b"ISA*garbage~")


async def test_a_worker_killed_after_shopify_created_the_fulfillment_leaves_one(
        parts, erp, redis_url, key_prefix, order_store, tmp_path, tryton):
    """No tracking number: the take-over must recognise the fulfillment by the units Shopify
    shows fulfilled beyond the order's other shipments."""
    sim_shop, flows = parts
    body = sim_shop.checkout([("TEE-BLK-M", 2), ("CAP-RED", 2)])
    reference = await flows.post_order(body)
    number = f"ORD-{body['order_number']}"
    await flows.intake.take_945(edi_945(number, "K-0", [("CAP-RED", 1)], control=30))
    await flows.worker.drain(timeout=60)  # an earlier shipment of the order, already on Shopify
    await flows.intake.take_945(edi_945(number, "K-1", [("TEE-BLK-M", 2)], control=31))
    marker = tmp_path / "created"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.flows_erp._fulfilment_worker", redis_url, key_prefix,
                             order_store.url, tryton.url, tryton.password(), sim_shop.sim.base_url,
                             sim_shop.sim.config.access_token, str(marker), "1500"], cwd=REPO, env=env)
    try:
        for _ in range(600):
            if marker.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert marker.exists(), f"worker exited {proc.poll()} before creating the fulfillment"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (await flows.store.get("wms:ACME3PL:K-1")).state == "posting"
    assert len(sim_shop.sim.state.fulfillments_of(body["id"])) == 2
    await asyncio.sleep(1.6)  # the dead worker's lease lapses
    await flows.worker.drain(timeout=60)
    fulfillments = sim_shop.sim.state.fulfillments_of(body["id"])
    assert len(fulfillments) == 2, fulfillments  # not a third one
    doc = await flows.store.get("wms:ACME3PL:K-1")
    assert doc.state == "done" and doc.shopify_fulfillment_id == fulfillments[1]["admin_graphql_api_id"]
    assert any("found" in h["detail"] for h in await flows.store.history(doc.shipment_id))
    [shipment] = await erp.sale_shipments(reference)
    assert shipment.state != "done"  # one CAP-RED has not shipped yet
