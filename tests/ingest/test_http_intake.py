"""HTTP intake: every endpoint with good and malformed input; Shopify webhooks signed,
forged, replayed; bad input answered with a 4xx problem or a dead letter, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import msgspec
import pytest
import pytest_asyncio
from litestar import Litestar

from adapters.shopify.webhooks import compute_hmac
from availability.bootstrap import open_runtime
from availability.domain.events import decode_event
from availability.ingest.deadletters import DeadLetters
from availability.ingest.http import intake_router
from availability.ingest.streams import EVENT_FIELD, StreamNames
from tests.ingest.conftest import make_settings

SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "samples"
SECRET, OLD_SECRET = "shpss_new", "shpss_old"


@pytest_asyncio.fixture
async def intake(redis_url, key_prefix, tmp_path):
    settings = make_settings(
        redis_url, key_prefix, tmp_path,
        shopify_webhook_secrets=[SECRET, OLD_SECRET], shopify_default_location="DC1",
        shopify_shop_domain="retailco.myshopify.com",
        ingest_max_body_bytes=200_000,
    )
    async with open_runtime(settings) as runtime:
        app = Litestar(route_handlers=[intake_router(runtime)])
        # In the test's own event loop (the runtime's Redis connections belong to it).
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake.test") as client:
            client.runtime = runtime
            yield client


async def published(runtime) -> list:
    names = StreamNames.from_settings(runtime.settings)
    out = []
    for stream in names.all_partitions():
        for _, fields in await runtime.redis.xrange(stream):
            out.append(decode_event(fields[EVENT_FIELD]))
    return out


async def dead_letters(runtime):
    return await DeadLetters(runtime.redis, StreamNames.from_settings(runtime.settings)).list(limit=100)


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


# --- WMS X12 ---------------------------------------------------------------------------------


async def test_x12_upload_publishes_the_files_events(intake):
    response = await intake.post("/v1/ingest/wms/x12", content=(SAMPLES / "wms_944_receipt.edi").read_bytes())
    assert response.status_code == 202, response.text
    assert response.json()["events"] == 3
    events = await published(intake.runtime)
    assert sorted((e.type, e.sku, e.quantity) for e in events) == [
        ("receipt", "CAP-RED", 24), ("receipt", "TEE-BLK-L", 36), ("receipt", "TEE-BLK-M", 48)
    ]


@pytest.mark.parametrize("sample", ["wms_bad_se_count.edi", "wms_bad_quantity.edi", "wms_bad_isa_length.edi"])
async def test_a_malformed_x12_file_is_refused_whole_with_a_422_naming_the_segment(intake, sample):
    response = await intake.post("/v1/ingest/wms/x12", content=(SAMPLES / sample).read_bytes())
    body = assert_problem(response, 422)
    assert "segment" in body["detail"] or "ISA" in body["detail"]
    assert await published(intake.runtime) == []


async def test_garbage_and_empty_bodies_are_4xx(intake):
    assert_problem(await intake.post("/v1/ingest/wms/x12", content=b"\x00\xffnot edi at all"), 422)
    assert_problem(await intake.post("/v1/ingest/wms/x12", content=b""), 400)


async def test_an_oversized_body_is_413(intake):
    assert_problem(await intake.post("/v1/ingest/wms/x12", content=b"x" * 300_000), 413)


# --- ERP -------------------------------------------------------------------------------------


async def test_erp_snapshot_csv_and_jsonl(intake):
    csv_body = (SAMPLES / "erp_snapshot.csv").read_bytes()
    response = await intake.post("/v1/ingest/erp/snapshot", content=csv_body, headers={"content-type": "text/csv"})
    assert response.status_code == 202, response.text
    rows = len([line for line in csv_body.splitlines()[1:] if line.strip()])
    assert response.json() == {"format": "erp-csv", "events": rows, "rejected": 0, "rejects": []}
    jsonl_body = (SAMPLES / "erp_snapshot.jsonl").read_bytes()
    response = await intake.post("/v1/ingest/erp/snapshot", content=jsonl_body)  # sniffed
    assert response.status_code == 202 and response.json()["format"] == "erp-jsonl"
    assert all(e.type == "snapshot" for e in await published(intake.runtime))


async def test_erp_bad_rows_go_to_the_dlq_and_replay_alone(intake):
    body = (SAMPLES / "erp_snapshot_bad_rows.csv").read_bytes()
    response = await intake.post("/v1/ingest/erp/snapshot?format=csv", content=body)
    assert response.status_code == 202, response.text
    report = response.json()
    assert report["events"] >= 1 and report["rejected"] >= 2
    letters = await dead_letters(intake.runtime)
    assert len(letters) == report["rejected"]
    assert {letter.reason for letter in letters} == {"row_error"}
    assert all(letter.stream == "intake:erp-csv" for letter in letters)
    # The payload is the header plus the row: a 2-line CSV that parses (or fails) by itself.
    assert letters[0].payload.decode().splitlines()[0].lower().startswith("sku,location")


async def test_erp_csv_without_the_required_columns_is_422(intake):
    response = await intake.post("/v1/ingest/erp/snapshot?format=csv", content=b"foo,bar\n1,2\n")
    body = assert_problem(response, 422)
    assert "header" in body["detail"]
    assert_problem(await intake.post("/v1/ingest/erp/snapshot?format=xml", content=b"<a/>"), 415)


async def test_erp_purchase_orders(intake):
    body = (SAMPLES / "erp_purchase_orders.csv").read_bytes()
    response = await intake.post("/v1/ingest/erp/purchase-orders", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 202, response.text
    assert {e.type for e in await published(intake.runtime)} == {"purchase_order"}


# --- POS / OMS -------------------------------------------------------------------------------

SALE = {"till_id": "T03", "store": "STORE-12", "transaction_id": "T03-000123", "kind": "sale",
        "recorded_at": "2026-11-20T10:15:02Z", "lines": [{"sku": "TEE-BLK-M", "quantity": 2}]}
ORDER = {"action": "reserve", "order_id": "ORD-1001", "occurred_at": "2026-11-20T10:15:00Z",
         "lines": [{"sku": "TEE-BLK-M", "quantity": 2, "location": "DC1"}]}


async def test_pos_transaction_and_batch(intake):
    response = await intake.post("/v1/ingest/pos", json=SALE)
    assert response.status_code == 202 and response.json()["events"] == 1
    bad = {**SALE, "transaction_id": "T03-000124", "lines": [{"sku": "X", "quantity": "two"}]}
    response = await intake.post("/v1/ingest/pos", json=[{**SALE, "transaction_id": "T03-000125"}, bad])
    assert response.status_code == 202 and response.json()["rejected"] == 1
    letters = await dead_letters(intake.runtime)
    assert [letter.stream for letter in letters] == ["intake:pos"]
    assert json.loads(letters[0].payload)["transaction_id"] == "T03-000124"


async def test_pos_malformed_is_422(intake):
    assert_problem(await intake.post("/v1/ingest/pos", content=b"{not json"), 422)
    body = assert_problem(await intake.post("/v1/ingest/pos", json={**SALE, "kind": "steal"}), 422)
    assert "kind" in body["detail"] or "steal" in body["detail"]
    assert await dead_letters(intake.runtime) == []  # refused whole: the client fixes it


async def test_oms_messages(intake):
    response = await intake.post("/v1/ingest/oms", json=ORDER)
    assert response.status_code == 202 and response.json()["events"] == 1
    [event] = await published(intake.runtime)
    assert (event.type, event.reference, event.source) == ("reserve", "ORD-1001", "oms")
    assert_problem(await intake.post("/v1/ingest/oms", json={**ORDER, "lines": [{"sku": "A", "quantity": -1, "location": "DC1"}]}), 422)
    assert_problem(await intake.post("/v1/ingest/oms", content=b"[1, 2"), 422)


# --- Shopify webhooks ------------------------------------------------------------------------

ORDER_CREATED = {
    "id": 820982911946154508, "created_at": "2026-11-20T10:00:00Z", "source_name": "web",
    "line_items": [{"id": 866550311766439020, "sku": "TEE-BLK-M", "quantity": 2},
                   {"id": 141249953214522974, "sku": None, "quantity": 1}],
}


def signed(body: bytes, topic: str, webhook_id: str, secret: str = SECRET) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-shopify-topic": topic,
        "x-shopify-hmac-sha256": compute_hmac(body, secret),
        "x-shopify-shop-domain": "retailco.myshopify.com",
        "x-shopify-webhook-id": webhook_id,
        "x-shopify-api-version": "2026-04",
        "x-shopify-event-id": f"evt-{webhook_id}",  # one event per delivery here
        "x-shopify-triggered-at": "2026-11-20T10:00:01Z",
    }


async def test_a_signed_webhook_is_published_and_a_redelivery_is_dropped(intake):
    body = msgspec.json.encode(ORDER_CREATED)
    response = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-1"))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "events": 1, "skipped_without_sku": 1}
    [event] = await published(intake.runtime)
    assert (event.type, event.sku, event.location, event.quantity) == ("reserve", "TEE-BLK-M", "DC1", 2)

    again = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-1"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(await published(intake.runtime)) == 1


async def test_the_previous_secret_still_verifies_during_rotation(intake):
    body = msgspec.json.encode(ORDER_CREATED)
    response = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-2", OLD_SECRET))
    assert response.status_code == 200 and response.json()["status"] == "accepted"


async def test_a_forged_webhook_is_401_and_publishes_nothing(intake):
    body = msgspec.json.encode(ORDER_CREATED)
    headers = signed(body, "orders/create", "wh-3", secret="not-our-secret")
    assert_problem(await intake.post("/webhooks/shopify", content=body, headers=headers), 401)
    tampered = signed(body, "orders/create", "wh-4")
    assert_problem(await intake.post("/webhooks/shopify", content=body.replace(b"2", b"9"), headers=tampered), 401)
    no_header = {k: v for k, v in signed(body, "orders/create", "wh-5").items() if k != "x-shopify-hmac-sha256"}
    assert_problem(await intake.post("/webhooks/shopify", content=body, headers=no_header), 401)
    assert await published(intake.runtime) == []
    # a forged delivery does not burn the webhook id: the genuine one still goes through
    genuine = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-3"))
    assert genuine.json()["status"] == "accepted"


async def test_webhook_without_required_headers_is_400(intake):
    body = msgspec.json.encode(ORDER_CREATED)
    headers = {k: v for k, v in signed(body, "orders/create", "wh-6").items() if k != "x-shopify-webhook-id"}
    assert_problem(await intake.post("/webhooks/shopify", content=body, headers=headers), 400)


async def test_inventory_level_updates_go_to_the_drift_stream(intake):
    body = msgspec.json.encode({"inventory_item_id": 271878346596884015, "location_id": 24826418,
                                "available": 7, "updated_at": "2026-11-20T10:00:00Z"})
    response = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "inventory_levels/update", "wh-7"))
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    names = StreamNames.from_settings(intake.runtime.settings)
    [(_, fields)] = await intake.runtime.redis.xrange(names.shopify_levels)
    level = msgspec.json.decode(fields[b"level"])
    assert level["available"] == 7 and fields[b"webhook_id"] == b"wh-7"
    assert await published(intake.runtime) == []


async def test_a_signed_but_unmappable_webhook_is_200_and_dead_lettered(intake):
    body = msgspec.json.encode({**ORDER_CREATED, "line_items": [{"id": 1, "sku": "A", "quantity": "lots"}]})
    response = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-8"))
    assert response.status_code == 200 and response.json()["status"] == "dead_lettered"
    [letter] = await dead_letters(intake.runtime)
    assert (letter.reason, letter.stream, letter.entry_id) == ("unmapped", "intake:shopify:orders/create", "wh-8")
    assert letter.payload == body
    unknown = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "carts/update", "wh-9"))
    assert unknown.status_code == 200 and unknown.json()["status"] == "ignored"
