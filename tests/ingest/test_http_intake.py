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
from availability.flows.inventory.state import PushKeys
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
    assert response.json() == {
        "format": "erp-csv", "events": rows, "rejected": 0, "dead_lettered": 0, "not_kept": 0, "rejects": []
    }
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
    # the push's stream, named by its keys (partition-tagged: availability/flows/inventory/state.py)
    stream = PushKeys(intake.runtime.ledger.keys).levels_stream
    assert response.json()["stream"] == stream
    [(_, fields)] = await intake.runtime.redis.xrange(stream)
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


# --- hostile uploads: not the format, caps on dead letters ------------------------------------

from prometheus_client import REGISTRY  # noqa: E402

GOOD_ROW = b'{"sku": "TEE-BLK-M", "location": "DC1", "on_hand": 5, "as_of": "2026-11-20T02:00:00Z"}\n'
ERP_PATHS = ("/v1/ingest/erp/snapshot", "/v1/ingest/erp/purchase-orders", "/v1/ingest/erp/transfers")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest_asyncio.fixture
async def make_intake(redis_url, key_prefix, tmp_path):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def factory(prefix_suffix: str = "", **overrides):
        settings = make_settings(redis_url, key_prefix + prefix_suffix, tmp_path, **overrides)
        async with open_runtime(settings) as runtime:
            app = Litestar(route_handlers=[intake_router(runtime)])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as client:
                client.runtime = runtime
                yield client

    return factory


async def dlq_length(runtime) -> int:
    return await runtime.redis.xlen(StreamNames.from_settings(runtime.settings).dlq)


@pytest.mark.parametrize("path", ERP_PATHS)
@pytest.mark.parametrize("body", [b"hello", b"null", b"42", b"[1, 2, 3]", b'"a string"', b"\x00\xff\xfe", b"{]"])
@pytest.mark.parametrize("how", ["?format=jsonl", "?format=csv", "", "json-type"])
async def test_a_body_that_is_not_the_format_at_all_is_422_and_leaves_no_dead_letter(intake, path, body, how):
    headers = {"content-type": "application/json"} if how == "json-type" else {}
    response = await intake.post(path + (how if how.startswith("?") else ""), content=body, headers=headers)
    assert_problem(response, 422)
    assert await dlq_length(intake.runtime) == 0
    assert await published(intake.runtime) == []


@pytest.mark.parametrize("path", ("/v1/ingest/pos", "/v1/ingest/oms"))
@pytest.mark.parametrize("body", [b"hello", b"null", b"42", b"[1, 2]", b"[]", b'"x"', b"{}"])
async def test_pos_and_oms_refuse_what_is_not_a_document(intake, path, body):
    response = await intake.post(path, content=body, headers={"content-type": "application/json"})
    if body == b"[]":  # an empty batch is the format, with nothing in it
        assert response.status_code == 202 and response.json()["events"] == 0
    else:
        assert_problem(response, 422)
    assert await dlq_length(intake.runtime) == 0


async def test_a_pretty_printed_pos_transaction_is_one_document(intake):
    response = await intake.post("/v1/ingest/pos", content=json.dumps(SALE, indent=2).encode())
    assert response.status_code == 202, response.text
    assert response.json()["events"] == 1


async def test_an_upload_keeps_at_most_its_cap_of_dead_letters_and_says_how_many_it_did_not(make_intake):
    before = metric("availability_ingest_dead_letters_not_kept_total", cause="request_cap")
    hits = metric("availability_ingest_dead_letter_cap_hits_total", cap="request")
    async with make_intake(dlq_max_per_request=50) as intake:
        body = GOOD_ROW + b"".join(b"not a row %d\n" % i for i in range(5000))
        response = await intake.post("/v1/ingest/erp/snapshot?format=jsonl", content=body)
        assert response.status_code == 202, response.text
        report = response.json()
        assert (report["events"], report["rejected"]) == (1, 5000)
        assert (report["dead_lettered"], report["not_kept"], report["dead_letter_cap"]) == (50, 4950, 50)
        assert len(report["rejects"]) == 20 and report["rejects"][0]["where"] == "line 2"
        assert await dlq_length(intake.runtime) == 50
        letters = await dead_letters(intake.runtime)
        assert letters[0].entry_id == "http:erp-snapshot:line 2" and letters[-1].entry_id == "http:erp-snapshot:line 51"
    assert metric("availability_ingest_dead_letters_not_kept_total", cause="request_cap") - before == 4950
    assert metric("availability_ingest_dead_letter_cap_hits_total", cap="request") - hits == 1


@pytest.mark.parametrize("rows", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
async def test_a_file_of_only_bad_rows_is_refused_whole_and_writes_nothing(make_intake, rows):
    # The 12 MB of 1,000,000 bad rows answered 202 and wrote 1,000,000 letters.
    async with make_intake(ingest_max_body_bytes=16 * 1024 * 1024) as intake:
        body = b"{}\n" * rows
        response = await intake.post("/v1/ingest/erp/snapshot?format=jsonl", content=body)
        problem = assert_problem(response, 422)
        assert str(rows) in problem["detail"] and len(problem["rejects"]) == 20
        assert await dlq_length(intake.runtime) == 0


async def test_an_oversized_row_is_stored_truncated_with_its_size(make_intake):
    truncated = metric("availability_ingest_dead_letters_truncated_total")
    async with make_intake(dlq_max_payload_bytes=1024, ingest_max_body_bytes=8 * 1024 * 1024, ingest_worker_bytes=0) as intake:
        junk = b'{"sku": "' + b"J" * 3_000_000 + b'"}\n'
        response = await intake.post("/v1/ingest/erp/snapshot?format=jsonl", content=GOOD_ROW + junk)
        assert response.status_code == 202, response.text
        assert response.json()["dead_lettered"] == 1
        [letter] = await dead_letters(intake.runtime)
        assert letter.truncated and letter.payload_bytes == len(junk) - 1  # the row without its newline
        assert letter.payload == junk[:1024]
        memory = await intake.runtime.redis.memory_usage(StreamNames.from_settings(intake.runtime.settings).dlq)
        assert memory < 64 * 1024, memory
    assert metric("availability_ingest_dead_letters_truncated_total") - truncated == 1


async def test_the_dead_letter_stream_is_capped_and_what_it_trims_is_counted(make_intake):
    trimmed = metric("availability_ingest_dead_letters_not_kept_total", cause="stream_maxlen")
    async with make_intake(dlq_stream_maxlen=200) as intake:
        for n in range(10):
            body = GOOD_ROW + b"".join(b"bad %d-%d\n" % (n, i) for i in range(100))
            response = await intake.post("/v1/ingest/erp/snapshot?format=jsonl", content=body)
            assert response.status_code == 202 and response.json()["dead_lettered"] == 100
        length = await dlq_length(intake.runtime)
        assert 200 <= length <= 400, length  # MAXLEN ~ trims whole stream nodes (100 entries)
        assert metric("availability_ingest_dead_letters_not_kept_total", cause="stream_maxlen") - trimmed == 1000 - length
        # the newest are the ones kept
        letters = await DeadLetters(intake.runtime.redis, StreamNames.from_settings(intake.runtime.settings)).list(limit=1000)
        assert letters[-1].payload == b"bad 9-99"


async def test_a_deep_json_lines_row_is_dead_lettered_alone(intake):
    deep = b"[" * 5000 + b"\n"
    response = await intake.post("/v1/ingest/erp/snapshot?format=jsonl", content=GOOD_ROW + deep)
    assert response.status_code == 202, response.text
    assert (response.json()["events"], response.json()["rejected"]) == (1, 1)
    [letter] = await dead_letters(intake.runtime)
    assert "5000 levels" in letter.detail and letter.reason == "row_error"


@pytest.mark.parametrize("path", ("/v1/ingest/pos", "/v1/ingest/oms"))
async def test_a_deep_pos_or_oms_body_is_400_naming_the_limit(intake, path):
    response = await intake.post(path, content=b"[" * 5000, headers={"content-type": "application/json"})
    problem = assert_problem(response, 400)
    assert problem["type"].endswith("nesting-too-deep") and problem["max_depth"] == 64


async def test_a_deep_signed_webhook_is_400_not_500(intake):
    body = b'{"id": 1, "line_items": ' + b"[" * 5000 + b"}"
    response = await intake.post("/webhooks/shopify", content=body, headers=signed(body, "orders/create", "wh-deep"))
    assert assert_problem(response, 400)["type"].endswith("nesting-too-deep")


async def test_a_worker_process_loads_an_upload_exactly_as_the_api_process_does(make_intake):
    """Uploads over Settings.ingest_worker_bytes load in a worker process: same answers,
    same events and dead letters, same metrics (counted in the worker, added here)."""
    bad_pos = {**SALE, "transaction_id": "T03-BAD", "lines": [{"sku": "X", "quantity": "two"}]}
    cases = [
        ("/v1/ingest/pos", json.dumps([SALE, bad_pos]).encode()),
        ("/v1/ingest/pos", b"[" * 5000),
        ("/v1/ingest/oms", b"hello"),
        ("/v1/ingest/erp/snapshot?format=jsonl", GOOD_ROW + b"".join(b"bad %d\n" % i for i in range(30))),
        ("/v1/ingest/erp/snapshot?format=jsonl", b"null\n42\n"),
        ("/v1/ingest/wms/x12", (SAMPLES / "wms_bad_se_count.edi").read_bytes()),
    ]
    answers = {}
    for where, threshold in (("api", 0), ("worker", 1)):
        published_before = metric("availability_ingest_published_total", source="pos")
        not_kept_before = metric("availability_ingest_dead_letters_not_kept_total", cause="request_cap")
        async with make_intake(where, ingest_worker_bytes=threshold, dlq_max_per_request=10) as intake:
            assert (intake_workers(intake) is None) == (threshold == 0)
            answers[where] = [
                ((r := await intake.post(path, content=body)).status_code, _without_paths(r.json())) for path, body in cases
            ]
            answers[where].append(sorted((e.event_id, e.quantity) for e in await published(intake.runtime)))
            answers[where].append(sorted((d.entry_id, d.payload) for d in await dead_letters(intake.runtime)))
        answers[where].append(metric("availability_ingest_published_total", source="pos") - published_before)
        answers[where].append(metric("availability_ingest_dead_letters_not_kept_total", cause="request_cap") - not_kept_before)
    assert answers["worker"] == answers["api"]
    statuses = [status for status, _ in answers["api"][: len(cases)]]
    assert statuses == [202, 400, 422, 202, 422, 422]
    assert answers["api"][-2:] == [1.0, 20.0]


def intake_workers(client):
    for route in client._transport.app.routes:
        for handler in getattr(route, "route_handlers", []):
            closure = getattr(handler.fn, "__closure__", None) or ()
            for cell in closure:
                if type(cell.cell_contents).__name__ == "HttpIntake":
                    return cell.cell_contents.workers
    raise AssertionError("no HttpIntake found")


def _without_paths(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "instance"}


@pytest.mark.slow
async def test_an_upload_whose_worker_process_is_killed_is_503_and_the_next_one_works(make_intake):
    """(slow: two worker processes spawn, ~10 s on a loaded machine)"""
    import asyncio
    import os
    import signal

    async with make_intake(ingest_worker_bytes=1, ingest_max_body_bytes=64 * 1024 * 1024) as intake:
        workers = intake_workers(intake)
        # A first upload starts the pool; then a big one, killed while it parses.
        assert (await intake.post("/v1/ingest/pos", json=SALE)).status_code == 202
        body = b"[" + b",".join([json.dumps(SALE).encode()] * 300_000) + b"]"  # ~2 s of parsing
        upload = asyncio.create_task(intake.post("/v1/ingest/pos", content=body))
        await asyncio.sleep(0.5)
        [pid] = list(workers._pool._processes)
        os.kill(pid, signal.SIGKILL)
        response = await upload
        problem = assert_problem(response, 503)
        assert "worker" in problem["detail"]
        # A new worker takes the next upload.
        again = await intake.post("/v1/ingest/pos", json={**SALE, "transaction_id": "after-kill"})
        assert again.status_code == 202 and again.json()["events"] == 1
        assert pid not in workers._pool._processes
