"""`availability serve` runs the ERP flows (AVAILABILITY_FLOWS=orders,fulfilment), real
processes end to end: a simulator checkout sends orders/create to serve's webhook route,
the order flow (built by the composition root) posts it to the real Tryton as a confirmed
sale; a warehouse user ships it in Tryton, serve's fulfilment watcher reads the done
shipment and the order gets its fulfillment on Shopify."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.embedded_redis import free_port

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[2]


async def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout}s")


async def test_serve_posts_webhook_orders_to_tryton_and_fulfils_erp_shipments(
        tmp_path, redis_url, key_prefix, tryton, erp, shop):
    port = free_port()
    sim = SimulatorServer(SimulatorConfig(shop_domain=shop, webhook_url=f"http://127.0.0.1:{port}/webhooks/shopify"))
    sim.start()
    proc = None
    log = tmp_path / "serve.log"
    try:
        loc = sim.state.add_location("DC1")
        sim.state.stock(sim.state.add_item("HOODIE-GRY-XL"), loc, 20)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
        env.update(
            PYTHONPATH=str(REPO), AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
            AVAILABILITY_DATA_DIR=str(tmp_path / "var"),
            AVAILABILITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/serve.db",
            AVAILABILITY_FLOWS="orders,fulfilment", AVAILABILITY_ERP_URL=tryton.url,
            AVAILABILITY_ERP_PASSWORD=tryton.password(), AVAILABILITY_FULFILMENT_POLL_SECONDS="0.3",
            AVAILABILITY_SHOPIFY_URL=sim.base_url, AVAILABILITY_SHOPIFY_TOKEN=sim.config.access_token,
            AVAILABILITY_SHOPIFY_WEBHOOK_SECRETS=f'["{sim.config.webhook_secret}"]',
            AVAILABILITY_SHOPIFY_SHOP_DOMAIN=shop,
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

            await _until(ready, 90, "serve ready")
            reply = await http.post(f"{sim.base_url}/_sim/checkout",
                                    json={"line_items": [{"sku": "HOODIE-GRY-XL", "quantity": 2}]})
            assert reply.status_code == 201, reply.text
            order = reply.json()["order"]
        reference = f"{shop}#{order['order_number']}"

        async def confirmed():
            sale = await erp.find_sale_by_reference(reference)
            return sale if sale is not None and sale.state == "processing" else None

        sale = await _until(confirmed, 120, f"ERP sale {reference} confirmed")
        assert sale.total == 20  # 2 x the simulator's 10.00
        [shipment] = await erp.sale_shipments(reference)
        await erp.mark_shipment_done(shipment.id, "SERVE-TRACK-1")

        async def fulfilled():
            return sim.state.fulfillments_of(order["id"])

        [fulfillment] = await _until(fulfilled, 120, "the Shopify fulfillment")
        assert fulfillment["tracking_numbers"] == ["SERVE-TRACK-1"]
        assert sim.state.order_node(order["id"])["_fos"][0]["status"] == "CLOSED"
        assert len(await erp.list_sales(f"{shop}#")) == 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.stop()
    assert proc.returncode == 0, log.read_text()[-3000:]
