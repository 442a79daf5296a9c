"""The fulfilment tests' parts: a simulator shop, the order flow that posts its orders to
the real Tryton, the fulfilment flow over both, and 945 files written like a WMS writes them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from adapters.shopify.client import ShopifyAdminClient
from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.flows.fulfilment.flow import (
    ErpShipmentWatcher,
    FulfilmentIntake,
    FulfilmentWorker,
)
from availability.flows.fulfilment.store import FulfilmentStore
from availability.flows.orders.flow import (
    OrderIntake,
    OrderQueue,
    OrderWorker,
    WorkerConfig,
)

SKUS = ("TEE-BLK-M", "CAP-RED", "MUG-CLASSIC")


def edi_945(order_number: str, shipment: str, lines: list[tuple[str, int]], *, tracking: str | None = None,
            control: int = 1) -> bytes:
    """A 945 as adapters/samples/wms_945_shipment.edi, with these lines (W03 totals them)."""
    segs = [f"ST*945*{control:04d}", f"W06*N*{order_number}*20261120*{shipment}**PO-{order_number}",
            "N1*SF*ACME 3PL DALLAS*9*DC1", "N9*BM*BOL-" + shipment]
    if tracking:
        segs.append(f"N9*CN*{tracking}")
    segs.append("W27*M*UPSN*UPS GROUND")
    for i, (sku, qty) in enumerate(lines, start=1):
        segs += [f"LX*{i}", f"W12*CC*{qty}*{qty}*0*EA**SK*{sku}"]
    segs.append(f"W03*{sum(q for _, q in lines)}*1.2*LB")
    segs.append(f"SE*{len(segs) + 1}*{control:04d}")
    body = "~".join(segs)
    isa = ("ISA*00*          *00*          *ZZ*ACME3PL        *ZZ*RETAILCO       *261120*1015*U*00401*"
           f"{control:09d}*0*P*>")
    return (f"{isa}~GS*SW*ACME3PL*RETAILCO*20261120*1015*{control}*X*004010~{body}~GE*1*{control}~"
            f"IEA*1*{control:09d}~").encode()


@dataclass
class Shop:
    sim: SimulatorServer
    location: str
    items: dict[str, str]
    client: ShopifyAdminClient

    def checkout(self, lines: list[tuple[str, int]]) -> dict:
        body, _events = self.sim.state.checkout([{"sku": s, "quantity": q} for s, q in lines])
        return body

    def order(self, order_id: int) -> dict:
        return self.sim.state.order_webhook_body(self.sim.state.order(order_id))


@contextlib.asynccontextmanager
async def simulator_shop(**config):
    sim = SimulatorServer(SimulatorConfig(**config))
    sim.start()
    try:
        loc = sim.state.add_location("DC1")
        items = {sku: sim.state.add_item(sku) for sku in SKUS}
        for gid in items.values():
            sim.state.stock(gid, loc, 100)
        client = ShopifyAdminClient(sim.base_url, sim.config.access_token, "2026-04")
        try:
            yield Shop(sim, loc, items, client)
        finally:
            await client.aclose()
    finally:
        sim.stop()


@dataclass
class Flows:
    shop: str
    order_intake: OrderIntake
    order_worker: OrderWorker
    store: FulfilmentStore
    queue: OrderQueue
    intake: FulfilmentIntake
    worker: FulfilmentWorker
    watcher: ErpShipmentWatcher

    async def post_order(self, body: dict) -> str:
        """Take the order in through the order flow and post it to the ERP (paid: confirmed)."""
        answer = await self.order_intake.enqueue_order_webhook("orders/create", body,
                                                               {"X-Shopify-Shop-Domain": self.shop})
        await self.order_worker.drain(timeout=120)
        return answer["reference"]


@contextlib.asynccontextmanager
async def fulfilment_flows(shop: str, redis, prefix: str, db_url: str, order_store, erp, shopify, *,
                           lease_ms: int = 60_000):
    store = await FulfilmentStore(db_url).open()
    try:
        oqueue = OrderQueue(redis, prefix)
        queue = OrderQueue(redis, prefix, flow="fulfilment")
        intake = FulfilmentIntake(store, queue, shop=shop)
        config = WorkerConfig(lease_ms=lease_ms, retry_cap_s=1.0, erp_down_exception_after=3)
        yield Flows(shop, OrderIntake(order_store, oqueue, shop=shop), OrderWorker(order_store, oqueue, erp),
                    store, queue, intake, FulfilmentWorker(store, queue, erp, shopify, order_store, config=config),
                    ErpShipmentWatcher(intake, store, erp, poll_s=0.2))
    finally:
        await store.close()
