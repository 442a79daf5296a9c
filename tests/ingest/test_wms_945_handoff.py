"""WMS 945s reach the fulfilment flow from the ingest entry points (POST /v1/ingest/wms/x12,
the drop folder): recorded in the flow's SQL store and its order queued, exactly once per
945 whatever the entry point or the number of uploads; a 945 naming no readable order is
dead-lettered with the reason; without the fulfilment flow the answer says so. (The flow's
worker, Shopify and the ERP: tests/flows_erp/test_wms_945_fulfilment.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest_asyncio
from litestar import Litestar

from availability.bootstrap import open_runtime
from availability.flows.fulfilment import metrics as fm
from availability.ingest.deadletters import DeadLetters
from availability.ingest.dropfolder import DropFolderWatcher
from availability.ingest.http import intake_router
from availability.ingest.streams import StreamNames
from tests.flows_erp.fulfilment_helpers import edi_945
from tests.ingest.conftest import make_settings

SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "samples"
SHOP = "retailco.myshopify.com"
SHIPMENT = "wms:ACME3PL:SHP-5001"  # both samples: the same 945, two encodings


@pytest_asyncio.fixture
async def flows_intake(redis_url, key_prefix, tmp_path):
    # an ingest-only node: the flows' intakes are built, no ERP or Shopify client
    settings = make_settings(redis_url, key_prefix, tmp_path, flows=["orders", "fulfilment"], services=["consumer"],
                             erp_shop=SHOP)
    async with open_runtime(settings, flows=True) as runtime:
        app = Litestar(route_handlers=[intake_router(runtime)])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake.test") as client:
            client.runtime = runtime
            yield client


def _count(outcome: str) -> float:
    return fm.SHIPMENTS.labels("wms", outcome)._value.get()


async def test_an_uploaded_945_is_queued_once_for_every_entry_point(flows_intake, tmp_path):
    runtime = flows_intake.runtime
    parts = runtime.erp_flows.fulfilment
    body = (SAMPLES / "wms_945_shipment.edi").read_bytes()
    first = await flows_intake.post("/v1/ingest/wms/x12", content=body)
    assert first.status_code == 202, first.text
    answer = first.json()
    assert answer["events"] == 2  # the ledger's ship events, as before
    assert answer["fulfilment"] == {"outcome": "queued", "shipments": [
        {"outcome": "queued", "shipment_id": SHIPMENT, "reference": f"{SHOP}#1001"}]}
    again = await flows_intake.post("/v1/ingest/wms/x12", content=body)
    assert again.status_code == 202 and again.json()["fulfilment"]["outcome"] == "duplicate", again.text

    # the same 945 in X12 5010 with other delimiters, landing in the drop folder
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(SAMPLES / "wms_945_pipe_delimited.x12", folder / "a_945.x12")
    shutil.copy(SAMPLES / "wms_944_receipt.edi", folder / "b_944.edi")  # no 945: nothing for the flow
    duplicates = _count("duplicate")
    results = await DropFolderWatcher(runtime, folder, min_age_seconds=0).scan_once()
    assert [r.ok for r in results] == [True, True]
    assert (folder / "processed" / "a_945.x12").exists()
    assert _count("duplicate") == duplicates + 1

    [doc] = await parts.store.of_order(f"{SHOP}#1001")
    assert (doc.shipment_id, doc.state, doc.lines, doc.tracking, doc.carrier) == (
        SHIPMENT, "received", [["CAP-RED", 1], ["TEE-BLK-M", 2]], ["BOL-99120"], "UPS GROUND")
    marks, urgent = await parts.queue.work.pending()
    assert marks + urgent == 1  # one order to settle


async def test_a_945_the_flow_cannot_read_is_dead_lettered_and_its_stock_still_moves(flows_intake):
    runtime = flows_intake.runtime
    body = edi_945("NO-NUMBER", "SHP-X", [("TEE-BLK-M", 1)], control=7)
    response = await flows_intake.post("/v1/ingest/wms/x12", content=body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["events"] == 1
    assert answer["fulfilment"]["outcome"] == "dead_lettered" and "names no order" in answer["fulfilment"]["reason"]
    [letter] = await DeadLetters(runtime.redis, StreamNames.from_settings(runtime.settings)).list(
        reason="fulfilment_rejected")
    assert letter.payload == body and letter.stream == "intake:x12" and "NO-NUMBER" in letter.detail
    assert await runtime.erp_flows.fulfilment.store.documents() == []


async def test_a_944_upload_says_nothing_about_fulfilment(flows_intake):
    response = await flows_intake.post("/v1/ingest/wms/x12", content=(SAMPLES / "wms_944_receipt.edi").read_bytes())
    assert response.status_code == 202 and "fulfilment" not in response.json(), response.text


async def test_without_the_fulfilment_flow_the_answer_says_so(redis_url, key_prefix, tmp_path):
    async with open_runtime(make_settings(redis_url, key_prefix, tmp_path), flows=True) as runtime:
        assert runtime.erp_flows is None
        app = Litestar(route_handlers=[intake_router(runtime)])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            before = _count("not_configured")
            response = await client.post("/v1/ingest/wms/x12",
                                         content=(SAMPLES / "wms_945_shipment.edi").read_bytes())
            assert response.status_code == 202, response.text
            answer = response.json()
            assert answer["events"] == 2
            assert answer["fulfilment"]["outcome"] == "not_configured"
            assert "AVAILABILITY_FLOWS" in answer["fulfilment"]["detail"]
            assert _count("not_configured") == before + 1


def test_the_drop_folder_command_hands_945s_to_the_configured_flow(redis_url, key_prefix, tmp_path, monkeypatch,
                                                                     capsys):
    """`availability ingest dropfolder --once` builds the fulfilment intake when
    AVAILABILITY_FLOWS names the flow (intakes only: no ERP, no Shopify client)."""
    import asyncio

    from availability.cli import main as cli
    from availability.flows.fulfilment.store import FulfilmentStore

    database = f"sqlite+aiosqlite:///{tmp_path}/flows.db"
    for name, value in {"AVAILABILITY_REDIS_URL": redis_url, "AVAILABILITY_KEY_PREFIX": key_prefix,
                        "AVAILABILITY_DATA_DIR": str(tmp_path), "AVAILABILITY_DATABASE_URL": database,
                        "AVAILABILITY_FLOWS": "orders,fulfilment", "AVAILABILITY_ERP_SHOP": SHOP}.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(SAMPLES / "wms_945_shipment.edi", folder / "shp.edi")
    assert cli(["ingest", "dropfolder", "--once", str(folder)]) == 0
    assert "shp.edi: 2 events" in capsys.readouterr().out

    async def stored():
        store = await FulfilmentStore(database).open()
        try:
            return [d.shipment_id for d in await store.of_order(f"{SHOP}#1001")]
        finally:
            await store.close()

    assert asyncio.run(stored()) == [SHIPMENT]
