"""A shop for the return-to-refund tests: the Shopify simulator's state (in process: its
orders, refunds, returns and the webhook payloads they produce), the order flow that
posts the order to the real Tryton, the returns flow under test and a real ledger."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from adapters.shopify.simulator import SimulatorConfig
from adapters.shopify.simulator.state import SimulatorState
from adapters.shopify.webhooks import map_webhook
from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker
from availability.flows.orders.flow import WorkerConfig as OrderWorkerConfig
from availability.flows.returns.flow import (
    LedgerSink, ReturnsIntake, ReturnsQueue, ReturnsWorker, SaleLookup, WorkerConfig, static_locations,
)
from availability.flows.returns.store import ReturnStore
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger

DC, STORE = 7001, 7002
LOCATIONS = {DC: "DC1", STORE: "STORE-12"}
DEFAULT_LOCATION = "DC1"
FLOW_TOPICS = ("refunds/create", "returns/request", "returns/approve", "returns/decline", "returns/close",
               "reverse_fulfillment_orders/dispose")


@dataclass
class World:
    shop: str
    sim: SimulatorState
    ledger: Ledger
    order_intake: OrderIntake
    order_worker: OrderWorker
    store: ReturnStore
    queue: ReturnsQueue
    intake: ReturnsIntake
    worker: ReturnsWorker
    #: webhooks the simulator sent, in order: (topic, payload)
    sent: list[tuple[str, dict]] = field(default_factory=list)

    # --- Shopify side (the simulator) ---------------------------------------------------------

    def order(self, lines: dict[str, int], location: int = DC, source: str = "web") -> dict:
        body, events = self.sim.checkout([{"sku": sku, "quantity": q} for sku, q in lines.items()],
                                         location, source)
        self.sent += [(t, p) for t, p in events if t == "orders/create"]
        return body

    def line(self, order: dict, sku: str) -> dict:
        return next(li for li in order["line_items"] if li["sku"] == sku)

    def refund(self, order: dict, lines: list[tuple[str, int, str, int | None]], amount: str | None = None,
               **extra: Any) -> dict:
        """refundCreate on the simulator; lines (sku, quantity, restock type, location)."""
        inp: dict[str, Any] = {"orderId": order["admin_graphql_api_id"], "refundLineItems": [
            {"lineItemId": self.line(order, sku)["admin_graphql_api_id"], "quantity": q, "restockType": restock,
             **({"locationId": f"gid://shopify/Location/{loc}"} if loc else {})}
            for sku, q, restock, loc in lines], **extra}
        if amount is not None:
            inp["transactions"] = [{"orderId": order["admin_graphql_api_id"], "amount": amount,
                                    "gateway": "shopify_payments", "kind": "REFUND"}]
        answer = self.sim.refunds.refund_create(inp)
        assert answer["userErrors"] == [], answer
        return answer["refund"]

    def request_return(self, order: dict, lines: dict[str, int], *, approve: bool = True) -> dict:
        inp = {"orderId": order["admin_graphql_api_id"], "returnLineItems": [
            {"fulfillmentLineItemId": f"gid://shopify/FulfillmentLineItem/{self.line(order, sku)['id']}",
             "quantity": q, "returnReason": "DEFECTIVE"} for sku, q in lines.items()]}
        ret = self.sim.refunds.return_open(inp, requested=True)["return"]
        if approve:
            ret = self.sim.refunds.return_status(ret["id"], "OPEN")["return"]
        return ret

    def dispose(self, ret: dict, sku: str, dispositions: list[tuple[str, int, int | None]]) -> None:
        rfo = self.sim.refunds.return_node(int(ret["id"].rsplit("/", 1)[1]))["_rfos"][0]
        rfo_line = next(ln for ln in rfo["_lines"] if ln["fulfillmentLineItem"]["lineItem"]["sku"] == sku)
        answer = self.sim.refunds.dispose([
            {"reverseFulfillmentOrderLineItemId": rfo_line["id"], "quantity": q, "dispositionType": kind,
             **({"locationId": f"gid://shopify/Location/{loc}"} if loc else {})} for kind, q, loc in dispositions])
        assert answer["userErrors"] == [], answer

    def flow_webhooks(self) -> list[tuple[str, dict, dict]]:
        """What the simulator sent for the returns flow, with delivery headers (ids unique)."""
        # webhook ids are unique across shops, as Shopify's are (tests share one database)
        return [(t, p, {"X-Shopify-Webhook-Id": f"{self.shop}:wh-{i}", "X-Shopify-Shop-Domain": self.shop})
                for i, (t, p) in enumerate(self.sent) if t in FLOW_TOPICS]

    # --- our side --------------------------------------------------------------------------------

    async def post_order(self, order: dict) -> None:
        """The order through the order flow into Tryton, and its reservation into the ledger."""
        await self.order_intake.enqueue_order_webhook("orders/create", order)
        await self.order_worker.drain()
        await self.ledger.apply_batch(list(map_webhook("orders/create", order, LOCATIONS,
                                                       default_location=DEFAULT_LOCATION)))

    async def deliver(self, webhooks=None) -> list[dict]:
        return [await self.intake.enqueue_webhook(t, p, h) for t, p, h in (webhooks or self.flow_webhooks())]

    async def stock(self, *skus: str) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(sku, location) -> (on_hand, reserved, unsellable)."""
        out = {}
        for sku, by_location in (await self.ledger.stock_many(skus)).items():
            for location, b in by_location.items():
                out[(sku, location)] = (b.on_hand, b.reserved, b.unsellable)
        return out


def new_sim(skus: list[str], available: int = 20, currency: str = "USD") -> SimulatorState:
    sim = SimulatorState(SimulatorConfig(currency=currency))
    for loc, name in LOCATIONS.items():
        sim.add_location(name, id=loc)
    for sku in skus:
        item = sim.add_item(sku)
        for loc in LOCATIONS:
            sim.stock(item, f"gid://shopify/Location/{loc}", available)
    return sim


async def make_world(redis_client, key_prefix: str, db_url: str, erp, shop: str, skus: list[str],
                     config: WorkerConfig | None = None, currency: str = "USD") -> World:
    """`currency`: the shop's (its orders' and refunds' shop money)."""
    from availability.flows.orders.store import OrderStore

    sim = new_sim(skus, currency=currency)
    world_sent: list[tuple[str, dict]] = []
    sim.refunds.emit = lambda events: world_sent.extend(events)
    order_store = await OrderStore(db_url).open()
    order_queue = OrderQueue(redis_client, key_prefix)
    store = await ReturnStore(db_url).open()
    queue = ReturnsQueue(redis_client, key_prefix)
    ledger = Ledger(redis_client, keys=KeyLayout(key_prefix))
    await ledger.load_scripts()
    worker = ReturnsWorker(store, queue, erp, LedgerSink(ledger), SaleLookup(db_url),
                           static_locations(LOCATIONS, DEFAULT_LOCATION),
                           config=config or WorkerConfig(lease_ms=5000, retry_cap_s=0.3))
    world = World(shop, sim, ledger, OrderIntake(order_store, order_queue, shop=shop),
                  OrderWorker(order_store, order_queue, erp, config=OrderWorkerConfig(lease_ms=5000)),
                  store, queue, ReturnsIntake(store, queue, shop=shop), worker, sent=world_sent)
    return world


def fresh_shop() -> str:
    return f"shop-{uuid.uuid4().hex[:8]}.myshopify.com"


async def credit_notes(erp, shop: str) -> dict[str, Decimal]:
    """reference -> booked total of the shop's posted credit notes."""
    notes = await erp.list_credit_notes(f"{shop}#refund-")
    return {n.reference: n.total for n in notes if n.state in ("posted", "paid")}
