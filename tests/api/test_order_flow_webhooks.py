"""`/webhooks/shopify` hands order topics to the order flow the composition root built
(AVAILABILITY_FLOWS=orders): recorded in SQL before the 200, `orders/paid` too (a topic the
ledger does not map), an order the flow cannot read dead-lettered with its reason; without
the setting nothing reaches the flow."""

from __future__ import annotations

import json

import httpx
import msgspec

from adapters.shopify.webhooks import compute_hmac
from availability.api.app import create_app
from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.ingest.deadletters import DeadLetters
from availability.ingest.streams import StreamNames
from tests.api.conftest import ADMIN, KEYS, Lifespan, bearer

SECRET = "flow-secret"
SHOP = "retailco.myshopify.com"


def signed(body: bytes, topic: str, webhook_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-shopify-topic": topic, "x-shopify-hmac-sha256": compute_hmac(body, SECRET),
            "x-shopify-shop-domain": SHOP, "x-shopify-webhook-id": webhook_id, "x-shopify-api-version": "2026-04"}


def settings(redis_url, key_prefix, tmp_path, **extra) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, key_prefix=key_prefix, data_dir=str(tmp_path / "var"),
                    database_url=f"sqlite+aiosqlite:///{tmp_path}/rules.db", api_keys=json.dumps(KEYS),
                    events_mode="direct", rate_limit_per_second=0, shopify_webhook_secrets=[SECRET],
                    shopify_shop_domain=SHOP, shopify_default_location="DC1", **extra)


ORDER = {"id": 5550101, "order_number": 1101, "created_at": "2026-11-20T10:00:00Z", "updated_at": "2026-11-20T10:00:00Z",
         "financial_status": "pending", "source_name": "web", "currency": "USD", "total_price": "10.00",
         "line_items": [{"id": 77, "sku": "TEE-BLK-M", "quantity": 1, "price": "10.00"}]}


async def _post(client, topic: str, payload: dict, webhook_id: str) -> httpx.Response:
    body = msgspec.json.encode(payload)
    return await client.post("/webhooks/shopify", content=body, headers=signed(body, topic, webhook_id))


async def test_order_topics_reach_the_order_flow(redis_url, key_prefix, tmp_path):
    # an API-only node (no "flows" service): the intake is built, no ERP client is needed
    s = settings(redis_url, key_prefix, tmp_path, flows=["orders"], services=["expiry"])
    async with open_runtime(s, flows=True) as runtime:
        assert runtime.erp_flows is not None and runtime.erp_flows.erp is None
        app = create_app(runtime, services=["expiry"])
        async with Lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                                    headers=bearer(ADMIN)) as c:
            created = await _post(c, "orders/create", ORDER, "wh-o-1")
            assert created.status_code == 200, created.text
            assert created.json()["order_flow"] == "queued" and created.json()["events"] == 1
            paid = await _post(c, "orders/paid", dict(ORDER, financial_status="paid"), "wh-o-2")
            assert paid.status_code == 200 and paid.json()["order_flow"] == "queued", paid.text
            doc = await runtime.erp_flows.order_store.get(f"{SHOP}#1101")
            assert doc is not None and doc.state == "received" and doc.paid
            marks, urgent = await runtime.erp_flows.order_queue.work.pending()
            assert marks + urgent == 1  # one order to post, whatever the number of webhooks

            nameless = await _post(c, "orders/create", {"id": 1, "line_items": []}, "wh-o-3")
            assert nameless.status_code == 200 and nameless.json()["order_flow"] == "dead_lettered", nameless.text
            letters = await DeadLetters(runtime.redis, StreamNames.from_settings(s)).list(reason="order_flow_rejected")
            assert [letter.entry_id for letter in letters] == ["wh-o-3"]
            assert "order number" in letters[0].detail


async def test_without_the_setting_nothing_reaches_a_flow(redis_url, key_prefix, tmp_path):
    async with open_runtime(settings(redis_url, key_prefix, tmp_path), flows=True) as runtime:
        assert runtime.erp_flows is None
        app = create_app(runtime)
        async with Lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                                    headers=bearer(ADMIN)) as c:
            created = await _post(c, "orders/create", ORDER, "wh-n-1")
            assert created.status_code == 200 and "order_flow" not in created.json(), created.text
