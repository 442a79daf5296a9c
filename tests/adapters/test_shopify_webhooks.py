"""Shopify webhooks: HMAC (with secret rotation), delivery headers, payload -> events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone

import pytest

from availability.domain.errors import InvalidEvent

from adapters.shopify.webhooks import (
    InventoryLevelUpdate,
    ShopifyWebhook,
    WebhookEvents,
    compute_hmac,
    map_webhook,
    verify_hmac,
)

LOCATIONS = {655441491: "DC1", "655441492": "STORE-12", "gid://shopify/Location/655441493": "STORE-7"}
BODY = b'{"id":5960412037184,"line_items":[]}'


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# ------------------------------------------------------------------------ HMAC


def test_hmac_accepts_the_right_signature_and_rejects_forgeries():
    header = sign(BODY, "shpss_current")
    assert compute_hmac(BODY, "shpss_current") == header
    assert verify_hmac(BODY, header, ["shpss_current"])
    assert not verify_hmac(BODY + b" ", header, ["shpss_current"])  # body tampered with
    assert not verify_hmac(BODY, header, ["shpss_other"])  # signed with another secret
    assert not verify_hmac(BODY, sign(BODY, "shpss_current")[:-4] + "AAA=", ["shpss_current"])


def test_hmac_during_secret_rotation_accepts_old_and_new():
    secrets = ["shpss_new", "shpss_old"]
    assert verify_hmac(BODY, sign(BODY, "shpss_old"), secrets)
    assert verify_hmac(BODY, sign(BODY, "shpss_new"), secrets)
    assert not verify_hmac(BODY, sign(BODY, "shpss_retired"), secrets)


@pytest.mark.parametrize("header", [None, "", "not base64!!", base64.b64encode(b"short").decode()])
def test_hmac_rejects_missing_or_malformed_headers(header):
    assert not verify_hmac(BODY, header, ["shpss_current"])


def test_hmac_with_no_configured_secret_accepts_nothing():
    assert not verify_hmac(BODY, sign(BODY, ""), [])
    assert not verify_hmac(BODY, sign(BODY, ""), [""])


def test_hmac_matches_the_simulators_signature():
    from adapters.shopify.simulator import sign_webhook

    assert verify_hmac(BODY, sign_webhook("shpss_sim", BODY), ["shpss_sim"])


def test_sample_deliveries_verify_against_their_exact_bytes(samples):
    deliveries = json.loads((samples / "shopify_webhook_deliveries.json").read_text())
    for delivery in deliveries["deliveries"]:
        body = (samples / delivery["payload_file"]).read_bytes()
        webhook = ShopifyWebhook.from_headers(delivery["headers"])
        assert verify_hmac(body, webhook.hmac_sha256, [deliveries["secret"]]), delivery["payload_file"]


# ------------------------------------------------------------------------ headers


def test_headers_are_read_case_insensitively_from_a_mapping_or_asgi_pairs():
    headers = {
        "X-Shopify-Topic": "orders/create",
        "x-shopify-webhook-id": "b54557e4",
        "X-SHOPIFY-SHOP-DOMAIN": "retailco.myshopify.com",
        "X-Shopify-API-Version": "2026-10",
        "X-Shopify-Event-Id": "98880550",
        "X-Shopify-Triggered-At": "2026-11-20T10:15:01.123Z",
        "X-Shopify-Hmac-Sha256": "abc=",
    }
    webhook = ShopifyWebhook.from_headers(headers)
    assert (webhook.topic, webhook.webhook_id, webhook.shop_domain, webhook.api_version, webhook.event_id) == (
        "orders/create", "b54557e4", "retailco.myshopify.com", "2026-10", "98880550")
    assert webhook.triggered_at == datetime(2026, 11, 20, 10, 15, 1, 123000, tzinfo=timezone.utc)
    pairs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    assert ShopifyWebhook.from_headers(pairs) == webhook


def test_missing_headers_are_named():
    with pytest.raises(InvalidEvent, match="without the X-Shopify-Webhook-Id header"):
        ShopifyWebhook.from_headers({"X-Shopify-Topic": "orders/create", "X-Shopify-Shop-Domain": "x"})
    with pytest.raises(InvalidEvent, match="X-Shopify-Triggered-At 'soon'"):
        ShopifyWebhook.from_headers({"X-Shopify-Topic": "t", "X-Shopify-Shop-Domain": "x",
                                     "X-Shopify-Webhook-Id": "w", "X-Shopify-Triggered-At": "soon"})


# ------------------------------------------------------------------------ mapping


def load(samples, name):
    return json.loads((samples / name).read_text())


def test_orders_create_reserves_each_line_and_counts_lines_without_sku(samples):
    result = map_webhook("orders/create", load(samples, "shopify_orders_create.json"), LOCATIONS,
                         default_location="DC1")
    assert isinstance(result, WebhookEvents) and isinstance(result, list)
    assert [(e.event_id, e.type, e.sku, e.quantity, e.location) for e in result] == [
        ("shopify:orders/create:5960412037184:13839205187648", "reserve", "TEE-BLK-M", 2, "DC1"),
        ("shopify:orders/create:5960412037184:13839205220416", "reserve", "CAP-RED", 1, "DC1"),
    ]
    assert result.skipped_without_sku == 1  # the gift-wrapping line
    first = result[0]
    assert (first.source, first.reference, first.channel) == ("shopify", "5960412037184", "online")
    assert first.occurred_at == datetime(2026, 11, 20, 10, 15, tzinfo=timezone.utc)  # -05:00 converted


def test_pos_orders_are_till_sales_at_the_orders_location(samples):
    (sale,) = map_webhook("orders/create", load(samples, "shopify_orders_create_pos.json"), LOCATIONS,
                          default_location="DC1")
    assert (sale.type, sale.location, sale.reference, sale.channel, sale.till_id) == (
        "pos_sale", "STORE-12", "5960412102720", "pos", "4283715")


def test_orders_cancelled_releases_what_was_not_fulfilled(samples):
    result = map_webhook("orders/cancelled", load(samples, "shopify_orders_cancelled.json"), LOCATIONS,
                         default_location="DC1")
    assert [(e.type, e.sku, e.quantity, e.location) for e in result] == [
        ("release", "HOODIE-GRY-XL", 1, "DC1"),
        ("release", "MUG-CLASSIC", 2, "DC1"),  # 3 ordered, 1 already shipped
    ]
    assert result[0].occurred_at == datetime(2026, 11, 20, 14, 30, tzinfo=timezone.utc)
    assert result[0].event_id == "shopify:orders/cancelled:5960412168256:13839205384256"


def test_a_cancelled_pos_order_releases_nothing(samples):
    payload = load(samples, "shopify_orders_create_pos.json") | {"cancelled_at": "2026-11-20T12:00:00-05:00"}
    assert map_webhook("orders/cancelled", payload, LOCATIONS, default_location="DC1") == []


def test_fulfillments_create_fulfils_at_the_fulfillment_location(samples):
    result = map_webhook("fulfillments/create", load(samples, "shopify_fulfillments_create.json"), LOCATIONS,
                         default_location="STORE-7")
    assert [(e.event_id, e.type, e.sku, e.quantity, e.location, e.reference) for e in result] == [
        ("shopify:fulfillments/create:4856742658112:13839205187648", "fulfil", "TEE-BLK-M", 2, "DC1", "5960412037184"),
        ("shopify:fulfillments/create:4856742658112:13839205220416", "fulfil", "CAP-RED", 1, "DC1", "5960412037184"),
    ]


def test_a_fulfillment_that_is_not_a_success_moves_nothing(samples):
    payload = load(samples, "shopify_fulfillments_create.json") | {"status": "pending"}
    assert map_webhook("fulfillments/create", payload, LOCATIONS, default_location="DC1") == []


def test_refunds_create_returns_restocked_lines_and_releases_cancelled_ones(samples):
    result = map_webhook("refunds/create", load(samples, "shopify_refunds_create.json"), LOCATIONS,
                         default_location="DC1")
    assert [(e.event_id, e.type, e.sku, e.quantity, e.location, e.reference) for e in result] == [
        ("shopify:refunds/create:938271234624:402391351360", "return", "TEE-BLK-M", 1, "STORE-12", "5960412234816"),
        # Never shipped: adding it to on hand would count it twice, so the reservation is released.
        ("shopify:refunds/create:938271234624:402391384128", "release", "CAP-RED", 1, "DC1", "5960412234816"),
    ]  # the no_restock line gives nothing
    assert result[0].occurred_at == datetime(2026, 11, 20, 18, 5, 1, tzinfo=timezone.utc)  # processed_at


def test_legacy_restock_is_a_return_only_for_shipped_lines(samples):
    payload = load(samples, "shopify_refunds_create.json")
    for item in payload["refund_line_items"]:
        item["restock_type"] = "legacy_restock"
    types = [(e.sku, e.type) for e in map_webhook("refunds/create", payload, LOCATIONS, default_location="DC1")]
    assert types == [("TEE-BLK-M", "return"), ("CAP-RED", "release"), ("MUG-CLASSIC", "return")]


def test_inventory_levels_update_is_a_level_not_an_event(samples):
    level = map_webhook("inventory_levels/update", load(samples, "shopify_inventory_levels_update.json"),
                        LOCATIONS, default_location="DC1")
    assert level == InventoryLevelUpdate(
        inventory_item_id=46804215226432,
        location_id=655441491,
        available=37,
        updated_at=datetime(2026, 11, 20, 11, 2, 11, tzinfo=timezone.utc),
        location="DC1",
    )
    elsewhere = map_webhook("inventory_levels/update", load(samples, "shopify_inventory_levels_update.json"),
                            {}, default_location="DC1")
    assert elsewhere.location is None


def test_retries_of_a_delivery_give_the_same_ids_and_carry_the_event_id(samples):
    body = (samples / "shopify_orders_create.json").read_bytes()
    webhook = ShopifyWebhook(topic="orders/create", webhook_id="w-1", shop_domain="x", event_id="e-1")
    first = map_webhook("orders/create", body, LOCATIONS, default_location="DC1", webhook=webhook)
    retry = map_webhook("orders/create", json.loads(body), LOCATIONS, default_location="DC1", webhook=webhook)
    assert list(first) == list(retry)
    assert {e.correlation_id for e in first} == {"e-1"}


def test_location_ids_are_looked_up_as_int_str_or_gid_and_unknown_ones_refused(samples):
    payload = load(samples, "shopify_fulfillments_create.json")
    for location_id, expected in [(655441491, "DC1"), (655441492, "STORE-12"), ("655441493", "STORE-7"),
                                  (None, "DEFAULT")]:
        result = map_webhook("fulfillments/create", payload | {"location_id": location_id}, LOCATIONS,
                             default_location="DEFAULT")
        assert result[0].location == expected
    with pytest.raises(InvalidEvent, match="fulfillments/create: location 111 is not in the location map"):
        map_webhook("fulfillments/create", payload | {"location_id": 111}, LOCATIONS, default_location="DC1")


def test_topics_we_ignore_and_topics_we_refuse():
    assert map_webhook("orders/fulfilled", {}, LOCATIONS, default_location="DC1") == []
    with pytest.raises(InvalidEvent, match="topic 'carts/update' is not handled"):
        map_webhook("carts/update", {}, LOCATIONS, default_location="DC1")


def test_payloads_that_do_not_fit_the_topic_are_refused_with_the_path(samples):
    payload = load(samples, "shopify_orders_create.json")
    payload["line_items"][0]["quantity"] = "two"
    with pytest.raises(InvalidEvent, match=r"orders/create payload: Expected `int`, got `str` - at `\$.line_items\[0\].quantity`"):
        map_webhook("orders/create", payload, LOCATIONS, default_location="DC1")
    with pytest.raises(InvalidEvent, match="refunds/create payload: Object missing required field `order_id`"):
        map_webhook("refunds/create", {"id": 1, "created_at": "2026-11-20T10:00:00Z"}, LOCATIONS,
                    default_location="DC1")
    with pytest.raises(InvalidEvent, match="orders/create payload: Input data was truncated"):
        map_webhook("orders/create", b"{", LOCATIONS, default_location="DC1")


# --- the handler behind POST /webhooks/shopify (availability/ingest/shopify_webhooks.py) ---------

SHOP_A = {
    "name": "uk", "shop_domain": "brand-uk.myshopify.com", "webhook_secrets": ["secret-uk"], "channel": "online",
    "locations": {"DC1": "gid://shopify/Location/1"}, "default_location": "DC1",
}
SHOP_B = {
    "name": "us", "shop_domain": "Brand-US.myshopify.com", "webhook_secrets": ["secret-us-new", "secret-us-old"],
    "channel": "marketplace", "locations": {"DC1": "gid://shopify/Location/9"}, "default_location": "DC1",
}
ORDER = json.dumps({
    "id": 777, "created_at": "2026-11-20T10:00:00Z",
    "line_items": [{"id": 1, "sku": "TEE", "quantity": 2}],
}).encode()


def level_body(location_id: int, available: int) -> bytes:
    return json.dumps({
        "inventory_item_id": 40001, "location_id": location_id, "available": available,
        "updated_at": "2026-11-20T10:00:00Z",
    }).encode()


def delivery(body: bytes, topic: str, *, domain: str, secret: str, webhook_id: str, event_id: str | None = None,
             triggered_at: str = "2026-11-20T10:00:01Z") -> dict[str, str]:
    return {
        "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": sign(body, secret), "X-Shopify-Shop-Domain": domain,
        "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Event-Id": event_id or f"ev-{webhook_id}",
        "X-Shopify-Triggered-At": triggered_at, "X-Shopify-API-Version": "2026-04",
    }


@pytest.fixture
async def handler_for(redis_url, key_prefix, tmp_path):
    from availability.bootstrap import open_runtime
    from availability.ingest.shopify_webhooks import ShopifyWebhookHandler
    from tests.ingest.conftest import make_settings

    opened = []

    async def make(**settings):
        ctx = open_runtime(make_settings(redis_url, key_prefix, tmp_path, **settings))
        runtime = await ctx.__aenter__()
        opened.append(ctx)
        return ShopifyWebhookHandler(runtime)

    yield make
    for ctx in opened:
        await ctx.__aexit__(None, None, None)


async def stream_entries(handler, stream: str) -> list:
    return await handler.redis.xrange(stream)


async def test_a_webhook_signed_with_a_shops_secret_but_claiming_another_shop_is_401(handler_for):
    handler = await handler_for(shopify_shops=[SHOP_A, SHOP_B])
    ok = await handler.handle(delivery(ORDER, "orders/create", domain="brand-uk.myshopify.com", secret="secret-uk", webhook_id="w1"), ORDER)
    assert ok.status == 200 and ok.body["events"] == 1
    # the right secret of a configured shop, another shop's domain: that shop's secrets do not verify it
    forged = await handler.handle(delivery(ORDER, "orders/create", domain="brand-us.myshopify.com", secret="secret-uk", webhook_id="w2"), ORDER)
    assert (forged.status, forged.problem) == (401, "invalid-signature")
    # a shop nobody configured, whatever the signature
    stranger = await handler.handle(delivery(ORDER, "orders/create", domain="evil.myshopify.com", secret="secret-uk", webhook_id="w3"), ORDER)
    assert (stranger.status, stranger.problem) == (401, "unknown-shop")
    assert "brand-uk.myshopify.com" in stranger.body["detail"]
    # the second shop's old secret still verifies during a rotation; domains are case-insensitive
    rotated = await handler.handle(delivery(ORDER, "orders/create", domain="BRAND-US.myshopify.com", secret="secret-us-old", webhook_id="w4"), ORDER)
    assert rotated.status == 200


async def test_single_shop_settings_name_the_shop(handler_for):
    handler = await handler_for(shopify_webhook_secrets=["s"], shopify_shop_domain="retailco.myshopify.com",
                                shopify_default_location="DC1")
    other = await handler.handle(delivery(ORDER, "orders/create", domain="other.myshopify.com", secret="s", webhook_id="x1"), ORDER)
    assert other.status == 401
    mine = await handler.handle(delivery(ORDER, "orders/create", domain="retailco.myshopify.com", secret="s", webhook_id="x2"), ORDER)
    assert mine.status == 200
    # no domain configured: the host of a *.myshopify.com URL is the shop
    derived = await handler_for(shopify_webhook_secrets=["s"], shopify_url="https://derived.myshopify.com",
                                shopify_default_location="DC1")
    ok = await derived.handle(delivery(ORDER, "orders/create", domain="derived.myshopify.com", secret="s", webhook_id="x3"), ORDER)
    assert ok.status == 200
    nothing = await handler_for(shopify_webhook_secrets=["s"])
    refused = await nothing.handle(delivery(ORDER, "orders/create", domain="derived.myshopify.com", secret="s", webhook_id="x4"), ORDER)
    assert (refused.status, refused.problem) == (401, "unknown-shop")


async def test_duplicates_by_webhook_id_and_by_event_id(handler_for):
    handler = await handler_for(shopify_shops=[SHOP_A])
    args = {"domain": "brand-uk.myshopify.com", "secret": "secret-uk"}
    assert (await handler.handle(delivery(ORDER, "orders/create", webhook_id="d1", event_id="e1", **args), ORDER)).body["status"] == "accepted"
    again = await handler.handle(delivery(ORDER, "orders/create", webhook_id="d1", event_id="e1", **args), ORDER)
    assert again.body["status"] == "duplicate"
    # the same event delivered again under a new webhook id (e.g. a second subscription)
    same_event = await handler.handle(delivery(ORDER, "orders/create", webhook_id="d2", event_id="e1", **args), ORDER)
    assert same_event.body["status"] == "duplicate"
    from tests.ingest.test_http_intake import published

    assert len(await published(handler.runtime)) == 1


async def test_a_stale_level_retry_is_dropped_where_a_newer_state_is_known(handler_for):
    handler = await handler_for(shopify_shops=[SHOP_A])
    args = {"domain": "brand-uk.myshopify.com", "secret": "secret-uk"}
    newer = level_body(1, 3)
    older = level_body(1, 5)
    r1 = await handler.handle(delivery(newer, "inventory_levels/update", webhook_id="l1", triggered_at="2026-11-20T10:00:05Z", **args), newer)
    assert r1.body["status"] == "accepted"
    # a retry of an earlier change arrives late: the newer state is already taken
    r2 = await handler.handle(delivery(older, "inventory_levels/update", webhook_id="l2", triggered_at="2026-11-20T10:00:01Z", **args), older)
    assert r2.body["status"] == "stale"
    # another level is not affected; a later change is taken
    other = level_body(2, 5)
    assert (await handler.handle(delivery(other, "inventory_levels/update", webhook_id="l3", triggered_at="2026-11-20T10:00:01Z", **args), other)).body["status"] == "accepted"
    later = level_body(1, 2)
    assert (await handler.handle(delivery(later, "inventory_levels/update", webhook_id="l4", triggered_at="2026-11-20T10:00:09Z", **args), later)).body["status"] == "accepted"
    stream = handler.keys(handler.shops[0]).levels_stream
    assert stream.endswith(":shopify:uk:levels")
    entries = await stream_entries(handler, stream)
    assert [json.loads(f[b"level"])["available"] for _, f in entries] == [3, 5, 2]


async def test_webhooks_are_routed_per_shop_and_orders_noted_as_its_sales(handler_for):
    handler = await handler_for(shopify_shops=[SHOP_A, SHOP_B])
    body = level_body(9, 4)
    r = await handler.handle(delivery(body, "inventory_levels/update", domain="brand-us.myshopify.com", secret="secret-us-new", webhook_id="r1"), body)
    assert r.body["stream"].endswith(":shopify:us:levels")
    assert await stream_entries(handler, handler.keys(handler.shops[0]).levels_stream) == []
    await handler.handle(delivery(ORDER, "orders/create", domain="brand-us.myshopify.com", secret="secret-us-new", webhook_id="r2"), ORDER)
    from tests.ingest.test_http_intake import published

    [event] = await published(handler.runtime)
    assert (event.type, event.sku, event.quantity, event.channel) == ("reserve", "TEE", 2, "marketplace")
    us, uk = handler.keys(handler.shops[1]), handler.keys(handler.shops[0])
    noted = await handler.redis.hgetall(us.sales("TEE"))
    assert list(noted) == [f"o|{event.event_id}".encode()] and noted[list(noted)[0]].startswith(b"2|")
    assert await handler.redis.hgetall(uk.sales("TEE")) == {}
