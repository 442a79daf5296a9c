"""The fulfilment flow: shipments in (WMS 945s, the ERP's done shipments), Shopify
fulfillments out, the ERP shipment marked done when the goods left through the WMS.

Intake (`FulfilmentIntake.take` / `take_945`) records each shipment in SQL under its
shipment id (a resent 945 or a re-read ERP shipment is dropped there) and marks its
**order** in the flow's work queue: the worker holds one order at a time (a lease), so the
shipments of one order are posted one after the other and the "already on Shopify?"
check below cannot race with another worker.

Settling one shipment (`FulfilmentWorker`, on the order worker's loop: outbox message
before any call, a killed worker's order taken over once its lease lapses):

1. find the Shopify order (the order flow's document of the reference) and read its
   fulfillment orders and fulfilments;
2. already there? a fulfillment with one of the shipment's tracking numbers, or, for a
   shipment that was `posting` (a create may have been sent before a crash or a timeout)
   without tracking, units fulfilled on Shopify beyond what the flow's other shipments of
   the order account for: adopt it, never create a second one;
3. else plan the fulfillment order lines (open ones, up to their remaining quantity:
   `line_not_open` otherwise), record `posting`, `fulfillmentCreate`; userErrors are a
   `shopify_rejected` exception;
4. `fulfilled`; for a WMS shipment, mark the sale's open ERP shipment done once the WMS
   shipments of the order cover it (a partial 945 leaves it open until the rest ships);
   the ERP shipment id is recorded first so the watcher never reads it back as a
   shipment of its own; then `done`.

Shopify or ERP unavailable: retried with backoff, an exception opened after a few
attempts (closed when it goes through). Everything else parks the shipment in
`exception` until someone retries or resolves it; other orders keep flowing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.erp.port import ErpError
from adapters.shopify.client import ShopifyError, ShopifyTransientError
from adapters.shopify.fulfillments import create_fulfillment, read_order_fulfilment
from availability.flows.fulfilment import metrics as m
from availability.flows.fulfilment.mapping import (
    FulfilmentProblem,
    InvalidShipment,
    Shipment,
    already_fulfilled,
    plan_fulfillment,
    shipment_from_erp,
    shipments_from_945,
)
from availability.flows.fulfilment.store import (
    OPEN_STATES,
    FulfilmentStore,
    ShipmentDoc,
)
from availability.flows.machinery import (
    OutboxMessage,
    current_correlation_id,
    new_correlation_id,
    now_ms,
)
from availability.flows.orders.flow import OrderQueue, OrderWorker, WorkerConfig

log = logging.getLogger(__name__)

FLOW = "fulfilment"


class _ErpShipmentMissing(Exception):
    """The sale has no ERP shipment yet (the order flow has not confirmed it): try later."""

    reason = "erp_shipment_missing"


class FulfilmentIntake:
    def __init__(self, store: FulfilmentStore, queue: OrderQueue, *, shop: str) -> None:
        self.store = store
        self.queue = queue
        self.shop = shop

    async def take(self, shipment: Shipment, correlation_id: str | None = None) -> dict:
        if not shipment.reference or not shipment.lines:
            raise InvalidShipment(f"shipment {shipment.shipment_id} names no order or ships nothing")
        new = await self.store.receive(shipment, correlation_id or new_correlation_id())
        m.SHIPMENTS.labels(shipment.source, "queued" if new else "duplicate").inc()
        if new or await self._still_open(shipment.shipment_id):
            # a resent file of a shipment not settled yet wakes its order again: the first
            # delivery may have reached SQL and failed at the queue (Redis down, 503)
            await self.queue.wake(shipment.reference)
        return {"outcome": "queued" if new else "duplicate", "shipment_id": shipment.shipment_id,
                "reference": shipment.reference}

    async def _still_open(self, shipment_id: str) -> bool:
        doc = await self.store.get(shipment_id)
        return doc is not None and doc.state in OPEN_STATES

    async def take_945(self, data: str | bytes, correlation_id: str | None = None) -> list[dict]:
        """Every shipment of a 945 file (raises `InvalidShipment` for the whole file)."""
        return [await self.take(s, correlation_id) for s in shipments_from_945(data, self.shop)]


class ErpShipmentWatcher:
    """Reads the ERP's done customer shipments every `poll_s` and takes the new ones in."""

    def __init__(self, intake: FulfilmentIntake, store: FulfilmentStore, erp: Any, *, poll_s: float = 5.0,
                 lookback_days: int = 2) -> None:
        self.intake, self.store, self.erp = intake, store, erp
        self.poll_s, self.lookback_days = poll_s, lookback_days

    async def poll_once(self) -> int:
        since = dt.date.today() - dt.timedelta(days=self.lookback_days)
        taken = 0
        for shipment in await self.erp.done_shipments(since):
            if not shipment.sale_reference or await self.store.erp_shipment_known(shipment.id):
                continue  # not a sale of ours, or already stands for a shipment of the flow
            try:
                answer = await self.intake.take(shipment_from_erp(shipment))
            except InvalidShipment as exc:
                log.warning("ERP shipment %s skipped: %s", shipment.number, exc)
                continue
            taken += answer["outcome"] == "queued"
        m.ERP_CALLS.labels("read", "ok").inc()
        return taken

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.poll_once()
            except ErpError as exc:
                m.ERP_CALLS.labels("read", exc.reason).inc()
                log.warning("reading the ERP's done shipments failed: %s", exc)
            except Exception:  # a store hiccup must not end the watcher
                log.exception("ERP shipment watcher round failed")
            try:
                await asyncio.wait_for(stop.wait(), self.poll_s)
            except TimeoutError:
                pass


class FulfilmentWorker(OrderWorker):
    """The order worker's loop (claim an order with a lease, outbox, take-over, retries),
    settling the order's open shipments instead of its sale."""

    def __init__(self, store: FulfilmentStore, queue: OrderQueue, erp: Any, shopify: Any, orders: Any, *,
                 config: WorkerConfig | None = None, owner: str | None = None) -> None:
        super().__init__(store, queue, erp, config=config, owner=owner)  # type: ignore[arg-type]
        self.shopify = shopify
        self.orders = orders

    def _message(self, reference: str, correlation_id: str | None = None) -> OutboxMessage:
        return OutboxMessage(id=f"{FLOW}:{reference}", flow=FLOW, idempotency_key=reference,
                             payload={"reference": reference}, correlation_id=correlation_id or "",
                             created_ms=now_ms(), owner=self.owner)

    async def _gauges(self) -> None:
        counts = await self.store.counts()
        for state in OPEN_STATES + ("exception",):
            m.BACKLOG.labels(state).set(counts.get(state, 0))

    async def settle(self, reference: str, message: OutboxMessage | None = None) -> str:
        """Settle every open shipment of the order, oldest first; returns the last one's state."""
        if message is None:
            message = self._message(reference)
            await self.queue.outbox.put(message, self.config.lease_ms)
        state = "none"
        try:
            for doc in await self.store.of_order(reference):
                if doc.state in OPEN_STATES:
                    state = await self._settle_one(doc)
        finally:
            await self.queue.outbox.done(message.id)
        return state

    async def _settle_one(self, doc: ShipmentDoc) -> str:
        token = current_correlation_id.set(doc.correlation_id or "")
        try:
            return await self._post(doc)
        except FulfilmentProblem as problem:
            return await self._park(doc, problem.reason, problem.detail)
        except ShopifyTransientError as exc:
            m.SHOPIFY_CALLS.labels("any", "unavailable").inc()
            return await self._later(doc, "shopify_down", str(exc), exc.retry_after)
        except ShopifyError as exc:  # auth, a request Shopify refuses as sent
            m.SHOPIFY_CALLS.labels("any", "refused").inc()
            return await self._park(doc, "shopify_rejected", str(exc))
        except _ErpShipmentMissing as exc:
            return await self._later(doc, exc.reason, str(exc), None)
        except ErpError as exc:
            m.ERP_CALLS.labels("any", exc.reason).inc()
            if exc.transient:
                return await self._later(doc, exc.reason, str(exc), None)
            return await self._park(doc, exc.reason, str(exc))
        finally:
            current_correlation_id.reset(token)

    async def _order_gid(self, reference: str) -> str | None:
        order = await self.orders.get(reference) if self.orders is not None else None
        if order is None or not order.order_id:
            return None
        return f"gid://shopify/Order/{order.order_id}"

    async def _units_elsewhere(self, doc: ShipmentDoc) -> dict[str, int]:
        out: dict[str, int] = {}
        for other in await self.store.of_order(doc.reference):
            if other.shipment_id != doc.shipment_id and other.shopify_fulfillment_id:
                for sku, qty in other.lines:
                    out[sku] = out.get(sku, 0) + int(qty)
        return out

    async def _post(self, doc: ShipmentDoc) -> str:
        shipment = doc.shipment()
        sid, cid = doc.shipment_id, doc.correlation_id or ""
        if doc.state in ("received", "posting"):
            order_gid = await self._order_gid(doc.reference)
            if order_gid is None:
                raise FulfilmentProblem("unknown_order", f"no Shopify order {doc.reference} known to the order flow")
            view = await read_order_fulfilment(self.shopify, order_gid)
            m.SHOPIFY_CALLS.labels("read", "ok").inc()
            if view is None:
                raise FulfilmentProblem("unknown_order", f"Shopify has no order {order_gid} ({doc.reference})")
            found = None
            if shipment.tracking_numbers or doc.state == "posting":
                found = already_fulfilled(view, shipment, await self._units_elsewhere(doc))
            if found:
                await self.store.transition(sid, "fulfilled", detail=f"Shopify fulfillment {found} found (not sent again)",
                                            correlation_id=cid, shopify_fulfillment_id=found,
                                            fulfilled_ms=doc.fulfilled_ms or now_ms(), reason=None, last_error=None)
            else:
                plan = plan_fulfillment(view, shipment.units())
                await self.store.transition(sid, "posting", detail=f"fulfillmentCreate on {', '.join(plan)}",
                                            correlation_id=cid)
                fulfillment, errors = await create_fulfillment(
                    self.shopify, plan, tracking_numbers=list(shipment.tracking_numbers), company=shipment.carrier)
                if errors or not fulfillment:
                    m.SHOPIFY_CALLS.labels("create", "rejected").inc()
                    raise FulfilmentProblem("shopify_rejected", "; ".join(
                        f"{'.'.join(e.get('field') or [])}: {e.get('message')}" for e in errors) or "no fulfillment")
                m.SHOPIFY_CALLS.labels("create", "ok").inc()
                stamp = now_ms()
                await self.store.transition(sid, "fulfilled", detail=f"Shopify fulfillment {fulfillment['id']} "
                                            f"({fulfillment.get('name')}) created", correlation_id=cid,
                                            shopify_fulfillment_id=fulfillment["id"], fulfilled_ms=stamp, reason=None,
                                            last_error=None)
                m.LATENCY.observe(max(0, stamp - doc.received_ms) / 1000)
        doc = await self.store.get(sid) or doc
        if doc.state == "fulfilled":
            detail = await self._settle_erp(doc)
            await self.store.transition(sid, "done", detail=detail, correlation_id=cid, done_ms=now_ms())
        await self.store.close_exceptions(sid, by="flow", note="posted")
        return "done"

    async def _settle_erp(self, doc: ShipmentDoc) -> str:
        if doc.source != "wms":
            return "shipped in the ERP: nothing to mark there"
        if self.erp is None:
            return "no ERP configured: ERP shipment not marked"
        shipments = await self.erp.sale_shipments(doc.reference)
        if not shipments:
            raise _ErpShipmentMissing(f"the ERP has no shipment for sale {doc.reference} yet")
        wms_units: dict[str, int] = {}
        for other in await self.store.of_order(doc.reference):
            if other.source == "wms" and (other.shopify_fulfillment_id or other.shipment_id == doc.shipment_id):
                for sku, qty in other.lines:
                    wms_units[sku] = wms_units.get(sku, 0) + int(qty)
        for done in (s for s in shipments if s.state == "done"):
            for sku, qty in done.lines:
                wms_units[sku] = wms_units.get(sku, 0) - int(qty)
        target = next((s for s in shipments if s.open), None)
        if target is None:
            return "the ERP shipment(s) of the sale are already done or cancelled"
        need: dict[str, int] = {}
        for sku, qty in target.lines:
            need[sku] = need.get(sku, 0) + int(qty)
        if not all(wms_units.get(sku, 0) >= qty for sku, qty in need.items()):
            return f"partial shipment: ERP shipment {target.number} stays open until the rest ships"
        # recorded first: the watcher must not read this shipment back as one of its own
        await self.store.transition(doc.shipment_id, "fulfilled", detail=f"marking ERP shipment {target.number} done",
                                    erp_shipment_id=target.id, correlation_id=doc.correlation_id or "")
        await self.erp.mark_shipment_done(target.id, (doc.tracking or [None])[0])
        m.ERP_CALLS.labels("mark_done", "ok").inc()
        return f"ERP shipment {target.number} marked done"

    async def _later(self, doc: ShipmentDoc, reason: str, detail: str, retry_after: float | None) -> str:
        attempts = await self.store.note_failure(doc.shipment_id, reason, detail)
        delay = self.backoff.delay(attempts, retry_after)
        await self.queue.schedule_retry(doc.reference, delay)
        log.warning("shipment %s: %s (attempt %d, retry in %.1fs): %s", doc.shipment_id, reason, attempts, delay,
                    detail)
        if attempts >= self.config.erp_down_exception_after:
            if await self.store.open_exception(doc.shipment_id, doc.reference, reason, detail):
                m.EXCEPTIONS.labels(reason).inc()
        return doc.state

    async def _park(self, doc: ShipmentDoc, reason: str, detail: str) -> str:  # type: ignore[override]
        await self.store.note_failure(doc.shipment_id, reason, detail)
        await self.store.transition(doc.shipment_id, "exception", detail=f"{reason}: {detail}",
                                    correlation_id=doc.correlation_id or "")
        if await self.store.open_exception(doc.shipment_id, doc.reference, reason, detail):
            m.EXCEPTIONS.labels(reason).inc()
        log.warning("shipment %s: exception %s: %s", doc.shipment_id, reason, detail)
        return "exception"


# --- exception queue operations (CLI, API, console: availability/flows/desk.py) ---------------------------------------------------------


async def retry_exception(store: FulfilmentStore, queue: OrderQueue, exception_id: int, *, by: str) -> dict:
    """Close the exception and settle its shipment again: back to `fulfilled` when Shopify
    already has it (only the ERP step failed), else `received`."""
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    await store.close_exceptions(exc["shipment_id"], by=by, note="retried", ids=[exception_id])
    doc = await store.get(exc["shipment_id"])
    if doc is not None and doc.state == "exception":
        back = "fulfilled" if doc.shopify_fulfillment_id else "received"
        await store.transition(doc.shipment_id, back, detail=f"retried by {by} (exception {exception_id})")
    # the work queue is per order: the order's worker picks up all its shipments
    await queue.wake(doc.reference if doc is not None else exc["order"])
    return exc


async def resolve_exception(store: FulfilmentStore, exception_id: int, *, by: str, note: str) -> dict:
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    await store.close_exceptions(exc["shipment_id"], by=by, note=note or "resolved", ids=[exception_id])
    return exc


# --- composition (called by availability/bootstrap.py) ----------------------------------------


def fulfilment_queue(redis: Any, prefix: str) -> OrderQueue:
    """The flow's Redis side (one group per order, under the flow's own keys); the exception
    desk builds it for a retry from the API or the console."""
    return OrderQueue(redis, prefix, flow=FLOW)


@dataclass
class FulfilmentParts:
    store: FulfilmentStore
    queue: OrderQueue
    intake: FulfilmentIntake
    worker: FulfilmentWorker | None = None
    watcher: ErpShipmentWatcher | None = None


@asynccontextmanager
async def build_fulfilment(settings: Any, redis: Any, *, orders: Any, erp: Any, shopify: Any = None,
                           with_erp: bool = True) -> AsyncIterator[FulfilmentParts]:
    from availability.flows.orders.mapping import default_shop

    store = await FulfilmentStore(settings.resolved_database_url()).open()
    queue = fulfilment_queue(redis, settings.key_prefix)
    shop = default_shop(settings.erp_shop, settings.shopify_url, settings.shopify_shop_domain)
    parts = FulfilmentParts(store, queue, FulfilmentIntake(store, queue, shop=shop))
    own_client = None
    try:
        if with_erp:
            if shopify is None:
                from availability.flows.inventory.service import build_client, select_shop

                shop = select_shop(settings)
                if not shop.url or not shop.token:
                    raise SystemExit("the fulfilment flow needs a Shopify shop: AVAILABILITY_SHOPIFY_URL and "
                                     "AVAILABILITY_SHOPIFY_TOKEN (or AVAILABILITY_SHOPIFY_SHOPS)")
                shopify = own_client = build_client(settings, shop=shop)
            config = WorkerConfig(lease_ms=int(settings.fulfilment_lease_seconds * 1000),
                                  retry_cap_s=settings.orders_retry_cap_seconds,
                                  erp_down_exception_after=settings.orders_erp_down_exception_after)
            parts.worker = FulfilmentWorker(store, queue, erp, shopify, orders, config=config)
            if erp is not None:
                parts.watcher = ErpShipmentWatcher(parts.intake, store, erp, poll_s=settings.fulfilment_poll_seconds)
        yield parts
    finally:
        if own_client is not None:
            await own_client.aclose()
        await store.close()
