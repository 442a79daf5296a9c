"""Oversold is a first-class outcome, end to end: a signed Shopify orders/create for more
than the location has goes through the webhook intake and the stream consumer, is applied
(the channel already sold it), and shows up as an oversell in the API, the CLI and the
metrics, with order, SKU, location and units short."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import msgspec

from adapters.shopify.webhooks import compute_hmac
from tests.api.conftest import READER, bearer, receipt

SECRET = "shpss_test"


def signed(body: bytes, topic: str, webhook_id: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-shopify-topic": topic,
        "x-shopify-hmac-sha256": compute_hmac(body, SECRET),
        "x-shopify-shop-domain": "retailco.myshopify.com",
        "x-shopify-webhook-id": webhook_id,
        "x-shopify-api-version": "2026-04",
    }


async def test_a_shopify_order_beyond_the_stock_becomes_an_oversell_exception(make_api, redis_url, key_prefix, tmp_path):
    async with make_api(services=["consumer"], shopify_webhook_secrets=[SECRET], shopify_shop_domain="retailco.myshopify.com",
                        shopify_default_location="DC1",
                        partitions=2, consumer_poll_ms=20) as api:
        c = api.client
        await api.seed(receipt("TEE-BLK-M", "DC1", 40, event_id="rcpt-1"),
                       {**receipt("TEE-BLK-M", "DC1", 2, event_id="web-0"), "type": "reserve", "source": "oms",
                        "reference": "ord-0"})
        order = {"id": 5550001, "created_at": "2026-11-20T10:00:00Z", "source_name": "web",
                 "line_items": [{"id": 77, "sku": "TEE-BLK-M", "quantity": 1000}]}
        body = msgspec.json.encode(order)
        hook = await c.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-over-1"))
        assert hook.status_code == 200, hook.text
        for _ in range(200):  # the consumer applies it
            stock = (await api.ledger.stock("TEE-BLK-M"))["DC1"]
            if stock.reserved == 1002:
                break
            await asyncio.sleep(0.05)
        assert (stock.on_hand, stock.reserved) == (40, 1002)  # recorded, not refused

        listed = await c.get("/v1/oversells", headers=bearer(READER))
        assert listed.status_code == 200, listed.text
        [oversell] = listed.json()["oversells"]
        assert {k: oversell[k] for k in ("order", "sku", "location", "units_short", "source", "type")} == {
            "order": "5550001", "sku": "TEE-BLK-M", "location": "DC1", "units_short": 962,
            "source": "shopify", "type": "reserve"}
        assert (oversell["on_hand"], oversell["reserved"]) == (40, 1002)
        assert listed.json().get("next") is None
        assert (await c.get("/v1/oversells?limit=0")).status_code in (400, 422)

        metrics = (await c.get("/metrics")).text
        assert 'availability_oversold_units_total{source="shopify"}' in metrics
        # ATS is floored at zero: nothing more is offered
        assert (await c.get("/v1/availability/TEE-BLK-M", headers=bearer(READER))).json()["ats"] == 0

    env = {**os.environ, "AVAILABILITY_REDIS_URL": redis_url, "AVAILABILITY_KEY_PREFIX": key_prefix,
           "AVAILABILITY_DATA_DIR": str(tmp_path / "var"),
           "AVAILABILITY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/rules.db"}
    cli = subprocess.run([sys.executable, "-m", "availability.cli", "oversells", "list", "--json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    [row] = [json.loads(line) for line in cli.stdout.splitlines()]
    assert (row["order"], row["sku"], row["location"], row["units_short"]) == ("5550001", "TEE-BLK-M", "DC1", 962)
    table = subprocess.run([sys.executable, "-m", "availability.cli", "oversells", "list"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert "5550001" in table.stdout and " 962 " in table.stdout
