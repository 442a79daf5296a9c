"""The return-to-refund flow: Shopify refund and return webhooks in; one ERP credit note per
refund and the ledger events of the stock that came back out.

Intake (`ReturnsIntake.enqueue_webhook`) is durable before it answers: the webhook id is
recorded (a redelivery storm is dropped), the refund's or return's document is written in
SQL, and the document is marked urgent in the flow's `WorkQueue`. Nothing is posted in the
request.

The worker (`ReturnsWorker`) claims documents with a lease, writes an outbox message
before touching the ERP or the ledger, and settles each document:

- a refund: its restocks go to the ledger first (`return` / `release` events with the
  webhook route's ids, so they are applied once however often they are sent); then the
  credit note: find the order's sale (the order flow's document gives its reference), look
  the credit note up by the refund's key *before* creating it, create it, post it. A
  refund whose sale is not in the ERP yet (or not invoiced) waits in `awaiting_sale`;
- a return: its dispositions' ledger events (restocked, damaged, quality hold), with ids
  derived from Shopify's disposition ids; a disposition whose SKU is not known yet waits
  for the returns/request that names it. A return has no ERP document of its own: the
  money goes back through its refund.

Failures: `ErpUnavailable` (and a ledger/stream hiccup) is retried with backoff, never
given up (an `erp_down` exception after a few attempts, closed when it posts); a bad
payload, an amount mismatch, an unknown SKU or location, a cancelled sale, an ERP refusal
park the document in `exception` until someone retries or resolves it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from adapters.erp.port import Erp, ErpError
from availability.domain.events import StockEvent
from availability.flows.machinery import FlowQueue, OutboxMessage, current_correlation_id, new_correlation_id, now_ms
from availability.flows.orders import flow as orders_flow
from availability.flows.orders.flow import OrderWorker
from availability.flows.orders.flow import WorkerConfig as OrderWorkerConfig
from availability.flows.returns import mapping
from availability.flows.returns import metrics as m
from availability.flows.returns.store import Document, ReturnStore

log = logging.getLogger(__name__)

FLOW = "returns"
#: refund states the flow still has work for
OPEN_STATES = ("received", "awaiting_sale", "posted")


class ReturnsQueue(FlowQueue):
    """The flow's Redis side (marks, leases, outbox, retry schedule), under `{prefix}:{returns}` (machinery.py `FlowKeys`)."""

    def __init__(self, redis, prefix: str) -> None:
        super().__init__(redis, prefix, FLOW, member="doc")


class StockSink(Protocol):
    """Where the flow's stock events go, and whether the ledger has an event yet."""

    async def publish(self, events: list[StockEvent]) -> Any: ...

    async def applied(self, sku: str, event_ids: Sequence[str]) -> set[str]: ...


class LedgerSink:
    """Apply events with the ledger's own script (what the stream consumer runs): for one
    process set-ups and tests. Idempotent by event id, like the consumer."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger

    async def publish(self, events: list[StockEvent]) -> list:
        return await self.ledger.apply_batch(events) if events else []

    async def applied(self, sku: str, event_ids: Sequence[str]) -> set[str]:
        return await self.ledger.applied(sku, event_ids)


class StreamSink(LedgerSink):
    """Publish to the ingest stream (`availability.ingest.publisher.EventPublisher`): the
    consumer applies them, dead-letters what it must, like any source's events."""

    def __init__(self, publisher, ledger) -> None:
        super().__init__(ledger)
        self.publisher = publisher

    async def publish(self, events: list[StockEvent]) -> int:
        return await self.publisher.publish(events) if events else 0


class SaleLookup:
    """The sale reference of a Shopify order, from the order flow's documents (read only):
    the refund payload names the order by id, the ERP sale by the shop's order number."""

    def __init__(self, order_store_url: str | None = None, engine=None) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

        self.engine = engine or create_async_engine(order_store_url)

    async def reference(self, shop: str, order_id: str) -> str | None:
        from availability.flows.orders.store import documents  # noqa: PLC0415

        async with self.engine.connect() as conn:
            try:
                row = (await conn.execute(select(documents.c.reference).where(
                    documents.c.shop == shop, documents.c.order_id == str(order_id)))).first()
            except Exception:  # the order flow's table is not there (yet): nothing known
                log.debug("order documents unreadable", exc_info=True)
                return None
        return row[0] if row else None


#: location map and default location (the rule store's Shopify location mappings)
Locations = Callable[[], Awaitable[tuple[Mapping[int | str, str], str]]]


def static_locations(location_map: Mapping[int | str, str], default_location: str) -> Locations:
    async def get() -> tuple[Mapping[int | str, str], str]:
        return location_map, default_location

    return get


class ReturnsIntake:
    def __init__(self, store: ReturnStore, queue: ReturnsQueue, *, shop: str) -> None:
        self.store = store
        self.queue = queue
        self.shop = shop

    async def enqueue_webhook(self, topic: str, payload: dict, headers: dict[str, str] | None = None) -> dict:
        """Take one refunds/create, returns/* or reverse_fulfillment_orders/dispose webhook
        in. Raises `mapping.InvalidRefund` for a payload that names no refund or return
        (the route answers 422)."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if topic not in mapping.REFUND_TOPICS + mapping.RETURN_TOPICS:
            raise mapping.InvalidRefund(f"not a refund or return topic: {topic!r}")
        shop = headers.get("x-shopify-shop-domain") or self.shop
        if topic in mapping.REFUND_TOPICS:
            refund_id, order_id = mapping.refund_ids(payload)
            key = mapping.refund_key(shop, refund_id)
        else:
            return_id, order_id = mapping.return_ids(topic, payload)
            key = mapping.return_key(shop, return_id)
        webhook_id = headers.get("x-shopify-webhook-id") or headers.get("x-shopify-event-id")
        if webhook_id and await self.store.seen_webhook(webhook_id, topic, key):
            m.WEBHOOKS.labels(topic, "duplicate").inc()
            return {"outcome": "duplicate", "key": key}
        correlation_id = headers.get("x-correlation-id") or new_correlation_id()
        if topic in mapping.REFUND_TOPICS:
            created = int(mapping.refund_created(payload).timestamp() * 1000)
            await self.store.receive_refund(key=key, shop=shop, refund_id=refund_id, order_id=order_id,
                                            payload=payload, created_ms=created, correlation_id=correlation_id,
                                            topic=topic)
        else:
            disposed = mapping.dispositions(payload) if topic == "reverse_fulfillment_orders/dispose" else {}
            status = None
            if topic != "reverse_fulfillment_orders/dispose":
                status = mapping.RETURN_STATUS.get(str(payload.get("status") or "").lower())
            await self.store.receive_return(
                key=key, shop=shop, return_id=return_id, order_id=order_id, topic=topic, status=status,
                payload=payload if topic != "reverse_fulfillment_orders/dispose" else None, dispositions=disposed,
                skus=mapping.return_skus(payload), correlation_id=correlation_id)
        await self.queue.wake(key)
        m.WEBHOOKS.labels(topic, "queued").inc()
        return {"outcome": "queued", "key": key, "correlation_id": correlation_id}


@dataclass
class WorkerConfig(OrderWorkerConfig):
    #: rounds a refund may wait for its sale before a `sale_not_found` exception is opened
    sale_wait_exception_after: int = 10
    #: the books' currency when a payload carries no shop money currency
    shop_currency: str = "USD"
    #: rounds a CANCEL release waits for its order's reserve to reach the ledger
    release_wait_rounds: int = 20


class _Wait(Exception):
    """The document cannot move yet (its sale is not in the ERP): retry later."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ReturnsWorker(OrderWorker):
    """The order worker's loop (outbox take-over, due retries, claim with leases, drain)
    and failure handling (ERP down retried, other errors parked as exceptions), settling
    refund and return documents instead of orders."""

    metrics = m

    def __init__(self, store: ReturnStore, queue: ReturnsQueue, erp: Erp, sink: StockSink, sales: SaleLookup,
                 locations: Locations, *, config: WorkerConfig | None = None, owner: str | None = None) -> None:
        super().__init__(store, queue, erp, config=config or WorkerConfig(), owner=owner)
        self.sink = sink
        self.sales = sales
        self.locations = locations

    async def _gauges(self) -> None:
        counts = await self.store.counts("refund")
        for state in OPEN_STATES + ("exception",):
            m.BACKLOG.labels(state).set(counts.get(state, 0))

    # --- one document -------------------------------------------------------------------------

    def _message(self, key: str, correlation_id: str | None = None) -> OutboxMessage:
        # The refund's key is the credit note's reference: a resend looks it up first.
        return OutboxMessage(id=f"returns:{key}", flow=FLOW, idempotency_key=key, payload={"reference": key},
                             correlation_id=correlation_id or "", created_ms=now_ms(), owner=self.owner)

    async def settle(self, key: str, message: OutboxMessage | None = None) -> str:
        """Bring the ledger and the ERP in line with the document; returns its new state."""
        doc = await self.store.get(key)
        if doc is None:
            if message is not None:
                await self.queue.outbox.done(message.id)
            return "unknown"
        token = current_correlation_id.set(doc.correlation_id)
        if message is None:
            message = self._message(key)
            await self.queue.outbox.put(message, self.config.lease_ms)
        try:
            if doc.kind == "refund":
                state = await self._settle_refund(doc)
            else:
                state = await self._settle_return(doc)
        except _Wait as wait:
            state = await self._wait(doc, wait)
        except ErpError as exc:
            state = await self._failed(doc, exc)
        except (mapping.InvalidRefund, mapping.AmountMismatch) as exc:
            state = await self._park(doc, exc.reason, str(exc))
        except OSError as exc:  # the ledger / stream is unreachable: like an ERP outage
            await self._retry_later(doc, "ledger_down", str(exc))
            state = doc.state
        finally:
            current_correlation_id.reset(token)
        await self.queue.outbox.done(message.id)
        return state

    async def _publish(self, doc: Document, events: Sequence[StockEvent]) -> None:
        if events:
            from redis.exceptions import RedisError  # noqa: PLC0415

            try:
                await self.sink.publish(list(events))
            except RedisError as exc:
                raise OSError(f"ledger unreachable: {exc}") from exc
            for event in events:
                m.STOCK_EVENTS.labels(event.type).inc()

    async def _settle_refund(self, doc: Document) -> str:
        payload = doc.payload or {}
        location_map, default_location = await self.locations()
        # stock first: it does not wait for the ERP (the ledger drops what it has applied)
        events = mapping.refund_stock_events(payload, location_map, default_location)
        held = await self._releases_ahead_of_their_order(doc, events)
        await self._publish(doc, [e for e in events if e.event_id not in held])
        if held:
            await self._retry_later(doc, doc.reason or "order_not_in_ledger",
                                    f"{len(held)} CANCEL release(s) wait for the order's reserve in the ledger")
        if doc.state == "credited":
            return "credited"
        sale_reference = doc.sale_reference or await self.sales.reference(doc.shop, doc.order_id or "")
        if sale_reference is None:
            raise _Wait("sale_not_found", f"order {doc.order_id} is not known to the order flow yet")
        sale = await self.erp.find_sale_by_reference(sale_reference)
        if sale is None or sale.state in ("draft", "quotation"):
            raise _Wait("sale_not_found", f"the ERP sale {sale_reference} is "
                                          f"{'missing' if sale is None else 'not confirmed'} yet")
        if sale.state == "cancelled":
            return await self._park(doc, "sale_cancelled", f"the ERP sale {sale_reference} is cancelled: "
                                                           "nothing was invoiced to credit")
        shop_total, presentment_total, presentment_currency = mapping.refunded_money(payload)
        currency = _shop_currency(payload) or self.config.shop_currency
        draft = mapping.credit_note(doc.shop, payload, sale_reference, currency)
        amounts = dict(sale_reference=sale_reference, total_shop=shop_total, shop_currency=currency,
                       total_presentment=presentment_total, presentment_currency=presentment_currency or currency)
        note = await self.erp.find_credit_note_by_reference(draft.reference)
        if note is None:
            note = await self.erp.create_credit_note(draft, sale)
            m.ERP_CALLS.labels("create", "ok").inc()
            await self.store.transition(doc.key, "posted", detail=f"ERP credit note {note.id} created for "
                                        f"{sale_reference}", correlation_id=doc.correlation_id or "",
                                        erp_credit_note_id=note.id, posted_ms=now_ms(), reason=None,
                                        last_error=None, **amounts)
        elif doc.erp_credit_note_id != note.id:
            # created by a worker that stopped before recording it: adopt, never recreate
            await self.store.transition(doc.key, "posted", detail=f"ERP credit note {note.id} found by reference",
                                        correlation_id=doc.correlation_id or "", erp_credit_note_id=note.id,
                                        posted_ms=doc.posted_ms or now_ms(), **amounts)
        if note.state in ("draft", "validated"):
            note = await self.erp.post_credit_note(note.id)
            m.ERP_CALLS.labels("post", "ok").inc()
        if note.state not in ("posted", "paid"):
            return await self._park(doc, "erp_validation", f"credit note {note.id} is {note.state} after posting")
        stamp = now_ms()
        await self.store.transition(doc.key, "credited", detail=f"ERP credit note {note.id} ({note.number}) posted, "
                                    f"{note.total} {currency}", correlation_id=doc.correlation_id or "",
                                    erp_credit_note_id=note.id, credit_note_number=note.number, credited_ms=stamp,
                                    reason=None)
        m.COMPLETION.observe(max(0, stamp - (doc.created_ms or doc.received_ms)) / 1000)
        await self.store.close_exceptions(doc.key, by="flow", note="credit note posted")
        return "credited"

    async def _releases_ahead_of_their_order(self, doc: Document, events: Sequence[StockEvent]) -> set[str]:
        """Release events whose order reserve the ledger has not applied yet (sent anyway
        after `release_wait_rounds`: the order may never reach the ledger)."""
        waiting_for = mapping.releases_waiting_for(doc.payload or {})
        if not waiting_for or doc.attempts >= self.config.release_wait_rounds:
            return set()
        held = set()
        for event in events:
            reserve = waiting_for.get(event.event_id)
            if reserve and reserve not in await self.sink.applied(event.sku, [reserve]):
                held.add(event.event_id)
        return held

    async def _settle_return(self, doc: Document) -> str:
        extra = doc.extra or {}
        location_map, default_location = await self.locations()
        events, waiting = mapping.disposition_events(doc.source_id, extra.get("dispositions") or {},
                                                     extra.get("skus") or {}, location_map, default_location)
        await self._publish(doc, events)
        if waiting:
            await self.store.transition(doc.key, doc.state, detail=f"dispositions {', '.join(waiting)} wait for "
                                        "the return's line items (returns/request)")
        else:
            await self.store.close_exceptions(doc.key, by="flow", note="stock booked")
        return doc.state

    # --- failures -----------------------------------------------------------------------------

    async def _retry_later(self, doc: Document, reason: str, detail: str) -> int:
        """Count the attempt and schedule the next one with backoff; returns the attempts."""
        attempts = await self.store.note_failure(doc.key, reason, detail)
        delay = self.backoff.delay(attempts)
        await self.queue.schedule_retry(doc.key, delay)
        log.warning("%s: %s (attempt %d, retry in %.1fs): %s", doc.key, reason, attempts, delay, detail)
        return attempts

    async def _wait(self, doc: Document, wait: _Wait) -> str:
        attempts = await self._retry_later(doc, wait.reason, str(wait))
        if doc.state != "awaiting_sale":
            await self.store.transition(doc.key, "awaiting_sale", detail=str(wait),
                                        correlation_id=doc.correlation_id or "")
        if attempts >= self.config.sale_wait_exception_after:
            if await self.store.open_exception(doc.key, wait.reason, str(wait)):
                m.EXCEPTIONS.labels(wait.reason).inc()
        return "awaiting_sale"



def _shop_currency(payload: dict) -> str | None:
    """The shop currency a refund's money sets name (none for single-currency payloads)."""
    for tx in payload.get("transactions") or []:
        code = ((tx.get("amount_set") or {}).get("shop_money") or {}).get("currency_code")
        if code:
            return code
    for item in payload.get("refund_line_items") or []:
        code = ((item.get("subtotal_set") or {}).get("shop_money") or {}).get("currency_code")
        if code:
            return code
    return None


# --- exception queue operations: the order flow's, over this flow's documents ---------------------

async def retry_exception(store: ReturnStore, queue: ReturnsQueue, exception_id: int, *, by: str) -> dict:
    """Close the exception and settle its document again (after the SKU was created, the
    sale confirmed, the amounts corrected in Shopify...)."""
    return await orders_flow.retry_exception(store, queue, exception_id, by=by,
                                             back_to=lambda doc: "received" if doc.kind == "refund" else "open")


#: close the exception without posting (handled outside the flow)
resolve_exception = orders_flow.resolve_exception
