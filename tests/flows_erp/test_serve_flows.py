"""`availability serve` runs the ERP flows (AVAILABILITY_FLOWS), real processes end to end:
the Shopify simulator (a real HTTP server) sends its webhooks to serve's one route, the
flows the composition root built take them into the real Tryton (customer -> party, order
-> confirmed sale, refund -> credit note), serve's fulfilment watcher turns a shipment done
in Tryton into a Shopify fulfillment, and its finance poller posts a payout."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.bootstrap import make_redis
from availability.embedded_redis import free_port
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[2]


async def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout}s")


REFUND = """
mutation Refund($input: RefundInput!) {
  refundCreate(input: $input) { refund { id } userErrors { field message } }
}"""


async def _parties_with_email(erp, email: str) -> set[int]:
    rows = await erp.call("model.party.contact_mechanism.search_read", [["type", "=", "email"], ["value", "=", email]],
                          0, None, None, ["party"])
    return {r["party"] for r in rows}


async def test_serve_runs_every_flow_from_the_webhook_route_to_tryton(
        tmp_path, redis_url, key_prefix, tryton, erp, shop):
    """AVAILABILITY_FLOWS names all five: the simulator's customers/create, orders/create and
    refunds/create webhooks reach serve's one route; the customer becomes one Tryton party,
    the order a confirmed sale of that party, the ERP shipment a Shopify fulfillment, the
    refund a posted credit note (and its restock one ledger event); a payout Shopify issues
    is polled and posted as a journal entry; SIGTERM stops every worker, exit 0."""
    port = free_port()
    sim = SimulatorServer(SimulatorConfig(shop_domain=shop, webhook_url=f"http://127.0.0.1:{port}/webhooks/shopify"))
    sim.start()
    proc = None
    log = tmp_path / "serve.log"
    redis = make_redis(redis_url)
    try:
        loc = sim.state.add_location("DC1")
        sim.state.stock(sim.state.add_item("HOODIE-GRY-XL"), loc, 20)
        shops = [{"name": "main", "url": sim.base_url, "token": sim.config.access_token, "shop_domain": shop,
                  "webhook_secrets": [sim.config.webhook_secret], "locations": {"DC1": loc},
                  "default_location": "DC1"}]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
        env.update(
            PYTHONPATH=str(REPO), AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
            AVAILABILITY_DATA_DIR=str(tmp_path / "var"),
            AVAILABILITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/serve.db",
            AVAILABILITY_FLOWS="orders,customers,fulfilment,returns,finance", AVAILABILITY_ERP_URL=tryton.url,
            AVAILABILITY_ERP_PASSWORD=tryton.password(), AVAILABILITY_FULFILMENT_POLL_SECONDS="0.3",
            AVAILABILITY_FINANCE_POLL_SECONDS="0.5", AVAILABILITY_ORDERS_RETRY_CAP_SECONDS="1",
            AVAILABILITY_SHOPIFY_URL=sim.base_url, AVAILABILITY_SHOPIFY_TOKEN=sim.config.access_token,
            AVAILABILITY_SHOPIFY_SHOP_DOMAIN=shop, AVAILABILITY_SHOPIFY_SHOPS=json.dumps(shops),
        )
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "serve",
                                     "--port", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        async with httpx.AsyncClient(timeout=5) as http:
            async def ready():
                assert proc.poll() is None, log.read_text()
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await _until(ready, 120, "serve ready")
            email = f"serve.{shop.split('.')[0]}@example.com"
            reply = await http.post(f"{sim.base_url}/_sim/customers",
                                    json={"email": email, "first_name": "Sam", "last_name": "Serve"})
            assert reply.status_code == 201, reply.text
            customer = reply.json()["customer"]

            async def party():
                return await _parties_with_email(erp, email)

            [party_id] = await _until(party, 120, "the customer's Tryton party")  # customers/create -> party
            reply = await http.post(f"{sim.base_url}/_sim/checkout", json={
                "line_items": [{"sku": "HOODIE-GRY-XL", "quantity": 2}], "customer_id": customer["id"]})
            assert reply.status_code == 201, reply.text
            order = reply.json()["order"]
        reference = f"{shop}#{order['order_number']}"

        async def confirmed():
            sale = await erp.find_sale_by_reference(reference)
            return sale if sale is not None and sale.state == "processing" else None

        sale = await _until(confirmed, 180, f"ERP sale {reference} confirmed")
        assert sale.total == 20  # 2 x the simulator's 10.00
        [row] = await erp.call("model.sale.sale.read", [sale.id], ["party"])
        assert row["party"] == party_id and await party() == {party_id}  # one party for the customer

        [shipment] = await erp.sale_shipments(reference)
        await erp.mark_shipment_done(shipment.id, "SERVE-TRACK-1")

        async def fulfilled():
            return sim.state.fulfillments_of(order["id"])

        [fulfillment] = await _until(fulfilled, 180, "the Shopify fulfillment")
        assert fulfillment["tracking_numbers"] == ["SERVE-TRACK-1"]
        assert sim.state.order_node(order["id"])["_fos"][0]["status"] == "CLOSED"

        line = order["line_items"][0]
        refund_input = {
            "orderId": order["admin_graphql_api_id"],
            "refundLineItems": [{"lineItemId": line["admin_graphql_api_id"], "quantity": 1, "restockType": "RETURN",
                                 "locationId": loc}],
            "transactions": [{"orderId": order["admin_graphql_api_id"], "amount": "10.00",
                              "gateway": "shopify_payments", "kind": "REFUND"}]}
        async with httpx.AsyncClient(timeout=10) as http:  # refundCreate: Shopify sends refunds/create
            # the simulator's refunds count fulfilled units from this control call, not yet
            # from fulfillmentCreate (docs/flows.md, "The simulator")
            marked = await http.post(f"{sim.base_url}/_sim/orders/{order['id']}/fulfilled", json={})
            assert marked.status_code == 200, marked.text
            reply = await http.post(sim.graphql_url(), json={"query": REFUND, "variables": {"input": refund_input}},
                                    headers={"X-Shopify-Access-Token": sim.config.access_token})
        answer = reply.json()["data"]["refundCreate"]
        assert answer["userErrors"] == [], answer
        refund_id = int(answer["refund"]["id"].rsplit("/", 1)[1])

        async def credited():
            note = await erp.find_credit_note_by_reference(f"{shop}#refund-{refund_id}")
            return note if note is not None and note.state in ("posted", "paid") else None

        note = await _until(credited, 180, "the refund's credit note posted")
        assert note.total == -10
        # the restock: one ledger event, booked by the returns flow (the route books none for it)
        body = sim.state.refunds.refund_webhook_body(sim.state.refunds.refunds[refund_id])
        event_id = f"shopify:refunds/create:{refund_id}:{body['refund_line_items'][0]['id']}"
        ledger = Ledger(redis, keys=KeyLayout(key_prefix))
        await ledger.load_scripts()

        async def restocked():
            return await ledger.applied("HOODIE-GRY-XL", [event_id])

        assert await _until(restocked, 60, "the restock in the ledger") == {event_id}

        # Shopify pays out the day's charge less the refund: no webhook, serve's poller finds it
        payout = sim.state.payments.issue_payout(dt.datetime.now(dt.UTC).date())
        assert payout is not None
        sim.state.payments.set_payout_status(payout.id, "IN_TRANSIT")

        async def posted():
            entries = await erp.find_journal_entries(f"{shop}#payout-{payout.id}")
            return entries if entries and all(e.state == "posted" for e in entries) else None

        [entry] = await _until(posted, 180, "the payout's journal entry")
        balance = entry.balance_by_account()
        assert balance["SP-BANK"] == payout.net and sum(balance.values()) == 0
        assert len(await erp.list_sales(f"{shop}#")) == 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.stop()
        await redis.aclose()
    assert proc.returncode == 0, log.read_text()[-3000:]
