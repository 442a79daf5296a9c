"""A WMS 945 uploaded to `POST /v1/ingest/wms/x12` (and the same 945 dropped in the WMS
drop folder) reaches the fulfilment flow the composition root built: the Shopify order gets
one fulfillment on its fulfillment orders with the 945's tracking number and carrier, the
ERP shipment of its sale is done in the real Tryton, and a 945 for an order nobody knows
is a fulfilment exception with its reason. The sample files of adapters/samples/."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.flows.desk import ExceptionDesk
from availability.ingest.dropfolder import DropFolderWatcher
from availability.ingest.http import intake_router
from tests.flows_erp.fulfilment_helpers import edi_945, simulator_shop

pytestmark = pytest.mark.timeout(600)
SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "samples"


async def test_an_uploaded_945_becomes_the_orders_fulfillment_and_the_erp_shipment_is_done(
        redis_url, key_prefix, tmp_path, tryton, erp, shop):
    async with simulator_shop() as sim_shop:
        settings = Settings(
            _env_file=None, redis_url=redis_url, key_prefix=key_prefix, data_dir=str(tmp_path / "var"),
            database_url=f"sqlite+aiosqlite:///{tmp_path}/flows.db", events_mode="direct",
            flows=["orders", "fulfilment"], erp_url=tryton.url, erp_password=tryton.password(), erp_shop=shop,
            shopify_url=sim_shop.sim.base_url, shopify_token=sim_shop.sim.config.access_token,
            orders_retry_cap_seconds=1.0, orders_erp_down_exception_after=2)
        async with open_runtime(settings, flows=True) as runtime:
            flows = runtime.erp_flows
            # the sample 945 ships order ORD-1001: the simulator's first order, posted to Tryton
            body = sim_shop.checkout([("TEE-BLK-M", 2), ("CAP-RED", 1)])
            assert body["order_number"] == 1001
            reference = f"{shop}#1001"
            await flows.order_intake.enqueue_order_webhook("orders/create", body, {"X-Shopify-Shop-Domain": shop})
            await flows.order_worker.drain(timeout=120)
            assert (await erp.find_sale_by_reference(reference)).state == "processing"

            app = Litestar(route_handlers=[intake_router(runtime)])
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                sample = (SAMPLES / "wms_945_shipment.edi").read_bytes()
                uploaded = await client.post("/v1/ingest/wms/x12", content=sample)
                assert uploaded.status_code == 202, uploaded.text
                assert uploaded.json()["fulfilment"]["shipments"][0] == {
                    "outcome": "queued", "shipment_id": "wms:ACME3PL:SHP-5001", "reference": reference}
                await flows.fulfilment.worker.drain(timeout=120)
                # the WMS sends the file again, then the same 945 lands in the drop folder
                again = await client.post("/v1/ingest/wms/x12", content=sample)
                assert again.json()["fulfilment"]["outcome"] == "duplicate", again.text
                folder = tmp_path / "drop"
                folder.mkdir()
                shutil.copy(SAMPLES / "wms_945_pipe_delimited.x12", folder / "shp-5001.x12")
                [dropped] = await DropFolderWatcher(runtime, folder, min_age_seconds=0).scan_once()
                assert dropped.ok and (folder / "processed" / "shp-5001.x12").exists()
                await flows.fulfilment.worker.drain(timeout=120)

                [fulfillment] = sim_shop.sim.state.fulfillments_of(body["id"])
                assert fulfillment["tracking_numbers"] == ["BOL-99120"]  # the 945's bill of lading
                assert fulfillment["tracking_company"] == "UPS GROUND"
                assert {li["sku"]: li["quantity"] for li in fulfillment["line_items"]} == {"TEE-BLK-M": 2, "CAP-RED": 1}
                assert sim_shop.sim.state.order_node(body["id"])["_fos"][0]["status"] == "CLOSED"
                [shipment] = await erp.sale_shipments(reference)
                assert shipment.state == "done" and shipment.tracking == "BOL-99120"
                doc = await flows.fulfilment.store.get("wms:ACME3PL:SHP-5001")
                assert doc.state == "done" and doc.erp_shipment_id == shipment.id

                # a 945 for an order the order flow never saw: an exception with its reason
                unknown = await client.post("/v1/ingest/wms/x12", content=edi_945(
                    "ORD-4242", "SHP-9", [("TEE-BLK-M", 1)], control=42))
                assert unknown.json()["fulfilment"]["outcome"] == "queued", unknown.text
                await flows.fulfilment.worker.drain(timeout=120)
                [exc] = await flows.fulfilment.store.list_exceptions()
                assert (exc["reason"], exc["owner"], exc["shipment_id"], exc["order"]) == (
                    "unknown_order", "operations", "wms:ACME3PL:SHP-9", f"{shop}#4242")
                # the same exception is on the shared desk (the API's and the console's list)
                desk = ExceptionDesk(settings.resolved_database_url(), runtime.redis, key_prefix)
                try:
                    [listed] = await desk.list(flow="fulfilment")
                    assert (listed["id"], listed["reference"], listed["documents"]) == (
                        exc["id"], "wms:ACME3PL:SHP-9", {"order": f"{shop}#4242"})
                finally:
                    await desk.close()
                assert len(sim_shop.sim.state.fulfillments_of(body["id"])) == 1
