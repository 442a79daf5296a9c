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


CUSTOMER = {"id": 880001, "email": "Jane.Doe@Example.com", "first_name": "Jane", "last_name": "Doe",
            "updated_at": "2026-11-20T09:00:00Z", "created_at": "2026-11-20T09:00:00Z"}
DC_GID = "gid://shopify/Location/7001"


def refund(refund_id: int, quantity: int, restock_type: str = "return") -> dict:
    """A Shopify refunds/create body for ORDER: `quantity` of its TEE-BLK-M line back at DC1."""
    amount = f"{10 * quantity}.00"
    return {"id": refund_id, "order_id": ORDER["id"], "created_at": "2026-11-21T10:00:00Z",
            "processed_at": "2026-11-21T10:00:00Z", "restock": True, "order_adjustments": [],
            "refund_line_items": [{"id": refund_id + 1, "line_item_id": 77, "quantity": quantity,
                                   "restock_type": restock_type, "location_id": 7001, "subtotal": amount,
                                   "total_tax": "0.00", "line_item": dict(ORDER["line_items"][0])}],
            "transactions": [{"id": refund_id + 2, "kind": "refund", "status": "success", "amount": amount,
                              "currency": "USD", "gateway": "shopify_payments"}]}


def shop_settings(redis_url, key_prefix, tmp_path, **extra) -> Settings:
    """One shop whose Shopify location 7001 is our DC1 (the refund's restock location)."""
    shops = [{"name": "retailco", "shop_domain": SHOP, "webhook_secrets": [SECRET], "default_location": "DC1",
              "locations": {"DC1": DC_GID}}]
    return settings(redis_url, key_prefix, tmp_path, shopify_shops=shops, **extra)


async def test_customer_refund_and_return_topics_reach_their_flows(redis_url, key_prefix, tmp_path):
    # an API-only node: intakes only, each webhook durable in SQL before the 200
    s = settings(redis_url, key_prefix, tmp_path, flows=["orders", "customers", "returns"], services=["expiry"])
    async with open_runtime(s, flows=True) as runtime:
        flows = runtime.erp_flows
        assert flows.erp is None and flows.customers.worker is None and flows.returns.worker is None
        app = create_app(runtime, services=["expiry"])
        async with Lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                                    headers=bearer(ADMIN)) as c:
            created = await _post(c, "customers/create", CUSTOMER, "wh-c-1")
            assert created.status_code == 200 and created.json()["customer_flow"] == "queued", created.text
            again = await _post(c, "customers/update", dict(CUSTOMER, updated_at="2026-11-20T09:30:00Z"), "wh-c-2")
            assert again.json()["customer_flow"] == "queued", again.text
            source = f"shopify:{SHOP}:customer:880001"
            assert (await flows.customers.store.get(source)) is not None
            marks, urgent = await flows.customers.queue.work.pending()
            assert marks + urgent == 1  # one customer to match
            merged = await _post(c, "customers/merge", {"resultingCustomerId": "gid://shopify/Customer/880001",
                                                        "customerOneId": "gid://shopify/Customer/880001",
                                                        "customerTwoId": "gid://shopify/Customer/880002"}, "wh-c-3")
            assert merged.json()["customer_flow"] == "merged", merged.text

            refunded = await _post(c, "refunds/create", refund(990001, 1), "wh-r-1")
            body = refunded.json()
            assert refunded.status_code == 200 and body["returns_flow"] == "queued", refunded.text
            assert body["events"] == 0  # the returns flow books the restock, not the route
            doc = await flows.returns.store.get(f"{SHOP}#refund-990001")
            assert doc is not None and doc.state == "received"
            requested = await _post(c, "returns/request", {
                "id": 4401, "admin_graphql_api_id": "gid://shopify/Return/4401", "order_id": ORDER["id"],
                "status": "requested", "return_line_items": []}, "wh-r-2")
            assert requested.json()["returns_flow"] == "queued", requested.text

            # payloads a flow cannot read: dead-lettered with the reason, 200 (no retry can fix them)
            bad_merge = await _post(c, "customers/merge", {"customerOneId": "1"}, "wh-c-4")
            bad_refund = await _post(c, "refunds/create", {"order_id": 5}, "wh-r-3")
            for answer, field in ((bad_merge, "customer_flow"), (bad_refund, "returns_flow")):
                assert answer.status_code == 200 and answer.json()[field] == "dead_lettered", answer.text
            letters = DeadLetters(runtime.redis, StreamNames.from_settings(s))
            assert [x.entry_id for x in await letters.list(reason="customer_flow_rejected")] == ["wh-c-4"]
            [letter] = await letters.list(reason="returns_flow_rejected")
            assert letter.entry_id == "wh-r-3" and "refund" in letter.detail


async def _on_hand(runtime, sku: str, location: str) -> int:
    bucket = (await runtime.ledger.stock_many([sku])).get(sku, {}).get(location)
    return bucket.on_hand if bucket is not None else 0


async def _settled(check, timeout: float = 60.0):
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not settled in time")


async def test_a_refunds_restock_lands_on_the_ledger_exactly_once(redis_url, key_prefix, tmp_path):
    """With the returns flow fed by the route, the route books no refund events and the
    flow books the restock once, whatever the redeliveries; without it the route books it."""
    # The ERP is unreachable on purpose: restocks are booked before the ERP is asked (the
    # refund's order is unknown to the order flow here, so the refund waits for its sale).
    s = shop_settings(redis_url, key_prefix, tmp_path, flows=["returns"], erp_url="http://127.0.0.1:9/none/",
                      erp_password="unused", orders_retry_cap_seconds=0.2)
    async with open_runtime(s, flows=True) as runtime:
        assert runtime.erp_flows.returns.worker is not None
        app = create_app(runtime, services=["consumer", "flows"])
        async with Lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                                    headers=bearer(ADMIN)) as c:
            before = await _on_hand(runtime, "TEE-BLK-M", "DC1")
            first = await _post(c, "refunds/create", refund(990101, 2), "wh-x-1")
            assert first.json() == {"status": "accepted", "events": 0, "returns_flow": "queued"}, first.text
            store = runtime.erp_flows.returns.store

            async def waiting_for_sale():
                doc = await store.get(f"{SHOP}#refund-990101")
                return doc is not None and doc.state == "awaiting_sale"

            await _settled(waiting_for_sale)
            await _settled(lambda: _equal(runtime, before + 2))
            # the same refund again (a new delivery of the event), and the worker's retries meanwhile
            again = await _post(c, "refunds/create", refund(990101, 2), "wh-x-2")
            assert again.status_code == 200 and again.json()["events"] == 0, again.text
            import asyncio

            await asyncio.sleep(1.5)  # several retry rounds of the waiting refund
            assert await _on_hand(runtime, "TEE-BLK-M", "DC1") == before + 2

    # no returns flow in this process: the route books the restock itself, as before
    s = shop_settings(redis_url, key_prefix, tmp_path)
    async with open_runtime(s, flows=True) as runtime:
        app = create_app(runtime, services=["consumer"])
        async with Lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                                    headers=bearer(ADMIN)) as c:
            before = await _on_hand(runtime, "TEE-BLK-M", "DC1")
            answer = await _post(c, "refunds/create", refund(990201, 3), "wh-y-1")
            assert answer.json()["events"] == 1 and "returns_flow" not in answer.json(), answer.text
            await _settled(lambda: _equal(runtime, before + 3))


async def _equal(runtime, expected: int) -> bool:
    return await _on_hand(runtime, "TEE-BLK-M", "DC1") == expected
