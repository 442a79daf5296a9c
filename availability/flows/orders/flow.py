"""The order-to-ERP flow: Shopify order webhooks in, one ERP sale per order out.

Intake (`OrderIntake.enqueue_order_webhook`; the composition root builds it and hands it
to the webhook route, `availability/bootstrap.py` `open_erp_flows`, and to the CLI) is
durable before it answers: the webhook id is recorded (a redelivery storm is dropped), the
order's document is merged in SQL (newest `updated_at` wins), then the order is marked
urgent in the flow's `WorkQueue`. Nothing is posted in the request.

The worker (`OrderWorker.run_once` / `run`) claims a batch of marked orders with a lease
(one worker per order at a time), writes an outbox message *before* touching the ERP, and
settles the batch in a few ERP calls (`_settle_batch`: one lookup by reference, one create
of the new sales, one confirm of the paid ones: per-call costs dominate an ERP like Tryton,
docs/performance.md); what needs more than create-and-confirm is settled one order at a
time from its document:

- no order content yet (only `orders/paid`): stays `awaiting_order`, nothing is posted;
- cancelled: cancel the ERP sale if there is one (never create one to cancel it);
- otherwise look the ERP sale up by reference *before* creating it (its party comes from
  the customer identity flow, flows/customers/; a crash after the
  ERP's create and before our bookkeeping is therefore harmless), update it while it is a
  quotation when a newer edit arrived, confirm it once the order is paid.

The outbox message is removed when the order is settled. A worker killed mid-post leaves
it behind; once its lease lapses another worker takes it over and settles the same order
again, with the same reference as its idempotency key, so the ERP ends with one sale.

Failures: `ErpUnavailable` is retried with backoff (never given up; after a few attempts
an `erp_down` exception is opened so people see it, closed again when it posts);
`UnknownSku`, `ErpValidationError` and an unreadable order park the order in state
`exception` with an exception of that reason, until someone retries or resolves it, or a
newer edit of the order arrives. Other orders keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio import Redis

from adapters.erp.port import Erp, ErpError, ErpSale, SaleDraft, UnknownSku
from availability.flows.customers.identity import CustomerIdentity
from availability.flows.customers.store import CustomerStore
from availability.flows.machinery import (
    Backoff,
    FlowQueue,
    OutboxMessage,
    current_correlation_id,
    new_correlation_id,
    now_ms,
)
from availability.flows.orders import mapping
from availability.flows.orders import metrics as m
from availability.flows.orders.store import Document, OrderStore

log = logging.getLogger(__name__)

FLOW = "orders"
#: `_settle`'s "look the sale up yourself" (None is an answer: the ERP has no such sale)
_LOOKUP = object()
#: states the flow still has work for
OPEN_STATES = ("received", "posted", "awaiting_order")


@contextlib.contextmanager
def _correlated(doc: Document):
    """Log and call with the order's correlation id (the batch works on several orders)."""
    token = current_correlation_id.set(doc.correlation_id)
    try:
        yield
    finally:
        current_correlation_id.reset(token)


class OrderQueue(FlowQueue):
    """The flow's Redis side (flows/machinery.py `FlowQueue`) under `{prefix}:{orders}`; the
    fulfilment flow has its own, `flow="fulfilment"`, also one group per order."""

    def __init__(self, redis: Redis, prefix: str, flow: str = FLOW) -> None:
        super().__init__(redis, prefix, flow, member="order")


class OrderIntake:
    def __init__(self, store: OrderStore, queue: OrderQueue, *, shop: str) -> None:
        self.store = store
        self.queue = queue
        self.shop = shop

    async def enqueue_order_webhook(self, topic: str, payload: dict, headers: dict[str, str] | None = None) -> dict:
        """Take one Shopify order webhook in. Returns what happened ({"outcome": queued |
        duplicate, "reference": ...}); raises `mapping.InvalidOrder` for a payload that
        names no order (the route answers 422)."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if topic not in mapping.ORDER_TOPICS:
            raise mapping.InvalidOrder(f"not an order topic: {topic!r}")
        if not isinstance(payload, dict):
            raise mapping.InvalidOrder("the payload is not a JSON object")
        shop = headers.get("x-shopify-shop-domain") or self.shop
        reference = mapping.reference(shop, payload)
        webhook_id = headers.get("x-shopify-webhook-id") or headers.get("x-shopify-event-id")
        if webhook_id and await self.store.seen_webhook(webhook_id, topic, reference):
            m.WEBHOOKS.labels(topic, "duplicate").inc()
            return {"outcome": "duplicate", "reference": reference}
        correlation_id = headers.get("x-correlation-id") or new_correlation_id()
        paid = topic == "orders/paid" or mapping.is_paid(payload)
        cancelled = topic == "orders/cancelled" or mapping.is_cancelled(payload)
        await self.store.receive(reference=reference, shop=shop, topic=topic, payload=payload, paid=paid,
                                 cancelled=cancelled, correlation_id=correlation_id)
        await self.queue.wake(reference)
        m.WEBHOOKS.labels(topic, "queued").inc()
        return {"outcome": "queued", "reference": reference, "correlation_id": correlation_id}


@dataclass
class WorkerConfig:
    lease_ms: int = 60_000
    batch: int = 20
    retry_cap_s: float = 30.0
    erp_down_exception_after: int = 5
    idle_sleep_s: float = 0.2
    #: AVAILABILITY_GUEST_PARTY: "create" (guests become parties by the matching rules) or
    #: the name of the one party every guest order goes to
    guest_party: str = "create"
    phone_region: str = "US"
    #: Shopify location id -> ERP warehouse code (AVAILABILITY_ERP_WAREHOUSES); empty = the
    #: ERP's default warehouse for every order
    warehouses: dict[str, str] = field(default_factory=dict)


class OrderWorker:
    #: the flow's metrics module (the returns worker reuses this loop with its own)
    metrics = m

    def __init__(self, store: OrderStore, queue: OrderQueue, erp: Erp, *, config: WorkerConfig | None = None,
                 owner: str | None = None, identity: CustomerIdentity | None = None) -> None:
        self.store = store
        self.queue = queue
        self.erp = erp
        self.config = config or WorkerConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        #: which party each order's sale goes to (flows/customers/): same database as the orders
        self.identity = identity or CustomerIdentity(CustomerStore(store.engine), erp,
                                                     guest_party=self.config.guest_party,
                                                     default_region=self.config.phone_region, owner=self.owner)
        self.backoff = Backoff(base=0.5, cap=self.config.retry_cap_s, max_attempts=1_000_000)

    # --- loop -------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One round: recover lapsed outbox messages, promote due retries, settle claimed orders."""
        done = 0
        for message in await self.queue.outbox.take_over(self.config.lease_ms):
            reference = message.payload.get("reference")
            if reference and await self.queue.leases.acquire([reference], self.owner, self.config.lease_ms):
                log.info("order %s: resending after its worker stopped (key %s)", reference, message.idempotency_key)
                await self._holding([reference], [message.id], self.settle(reference, message))
                await self.queue.leases.release([reference], self.owner)
                done += 1
            else:
                await self.queue.outbox.renew(message.id, 0)  # let whoever holds the order finish
        await self.queue.promote_due_retries()
        claimed = await self.queue.work.claim(self.owner, window_ms=None, limit=self.config.batch,
                                              lease_ms=self.config.lease_ms)
        # An outbox message for every claimed order before working on any: claiming took
        # their marks away, so a worker killed on the first must not lose the others.
        messages = {}
        for item in claimed:
            messages[item.group] = self._message(item.group)
            await self.queue.outbox.put(messages[item.group], self.config.lease_ms)
        if type(self).settle is OrderWorker.settle:
            done += await self._settle_batch([item.group for item in claimed], messages)
        else:  # the fulfilment and returns workers settle their own documents one by one
            done += await self._settle_each([item.group for item in claimed], messages)
        await self._gauges()
        return done

    async def _settle_each(self, groups: list[str], messages: dict[str, OutboxMessage]) -> int:
        done = 0
        for group in groups:
            # The batch is settled one order after the other: an order further down may have
            # outlived its lease meanwhile and been taken over (its outbox message too) by
            # another worker. Still ours: renewed, and kept renewed while it is settled.
            if not await self.queue.leases.renew([group], self.owner, self.config.lease_ms):
                log.info("order %s: lease lapsed and taken over by another worker; left to it", group)
                continue
            try:
                await self.queue.outbox.renew(messages[group].id, self.config.lease_ms)
                await self._holding([group], [messages[group].id], self.settle(group, messages[group]))
            finally:
                await self.queue.leases.release([group], self.owner)
            done += 1
        return done

    async def _holding(self, groups: list[str], message_ids: list[str], work):
        """Run `work` while renewing the groups' leases and their outbox messages every third
        of the lease, so a slow ERP (a call near the client timeout, several calls per order
        or per batch) never lets another worker take an order over while this one posts it."""
        async def beat() -> None:
            while True:
                await asyncio.sleep(self.config.lease_ms / 3000)
                await self.queue.leases.renew(groups, self.owner, self.config.lease_ms)
                for message_id in message_ids:
                    await self.queue.outbox.renew(message_id, self.config.lease_ms)

        keeper = asyncio.create_task(beat())
        try:
            return await work
        finally:
            keeper.cancel()
            try:
                await keeper
            except (asyncio.CancelledError, Exception):  # a failed renewal: the lease lapses, as on a crash
                pass

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                worked = await self.run_once()
            except Exception:  # a store/Redis hiccup must not end the worker
                log.exception("order worker round failed")
                worked = 0
            if not worked:
                try:
                    await asyncio.wait_for(stop.wait(), self.config.idle_sleep_s)
                except TimeoutError:
                    pass

    async def drain(self, *, timeout: float = 60.0) -> None:
        """Run rounds until nothing is marked, in the outbox or due (tests, `flows orders run --once`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            await self.run_once()
            marks, urgent = await self.queue.work.pending()
            outbox = await self.queue.outbox.pending()
            retry = await self.queue.redis.zcard(self.queue.keys.retry)
            if not (marks or urgent or outbox or retry):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("order flow did not drain")

    async def _gauges(self) -> None:
        counts = await self.store.counts()
        for state in OPEN_STATES + ("exception",):
            m.BACKLOG.labels(state).set(counts.get(state, 0))

    # --- one order ----------------------------------------------------------------------------

    def _message(self, reference: str, correlation_id: str | None = None) -> OutboxMessage:
        # The reference is the idempotency key: a resend looks the sale up by it first.
        return OutboxMessage(id=f"order:{reference}", flow=FLOW, idempotency_key=reference,
                             payload={"reference": reference}, correlation_id=correlation_id or "",
                             created_ms=now_ms(), owner=self.owner)

    async def settle(self, reference: str, message: OutboxMessage | None = None) -> str:
        """Bring the ERP in line with the order's document; returns the document's new state."""
        doc = await self.store.get(reference)
        if doc is None:
            if message is not None:
                await self.queue.outbox.done(message.id)
            return "unknown"
        if message is None:
            message = self._message(reference, doc.correlation_id)
            await self.queue.outbox.put(message, self.config.lease_ms)
        state = await self._settle_doc(doc)
        await self.queue.outbox.done(message.id)
        return state

    async def _settle_doc(self, doc: Document, found: Any = _LOOKUP) -> str:
        """`_settle` with the order's failures turned into its retry or exception."""
        with _correlated(doc):
            try:
                return await self._settle(doc, found)
            except ErpError as exc:
                return await self._failed(doc, exc)
            except mapping.InvalidOrder as exc:
                return await self._park(doc, "invalid_order", str(exc))

    async def _settle_batch(self, groups: list[str], messages: dict[str, OutboxMessage]) -> int:
        """Settle a claimed batch with as few ERP calls as the batch allows: one lookup by
        reference for all of it, one create for the orders the ERP does not have yet, one
        confirm for those paid (`Erp.create_sales`, `confirm_sales`), where one order at a
        time costs each ERP call per order. The lookup before the create is what keeps a
        resend exactly-once, as for one order. Orders that need more than create-and-confirm
        (found in the ERP, cancelled, awaiting the order) are settled one by one with the
        lookup's answer; an order the ERP refuses fails alone, the others post."""
        ours = []
        for group in groups:
            if await self.queue.leases.renew([group], self.owner, self.config.lease_ms):
                ours.append(group)
            else:
                log.info("order %s: lease lapsed and taken over by another worker; left to it", group)
        if not ours:
            return 0
        ids = [messages[g].id for g in ours]
        try:
            for message_id in ids:
                await self.queue.outbox.renew(message_id, self.config.lease_ms)
            await self._holding(ours, ids, self._post_batch(ours))
            for message_id in ids:
                await self.queue.outbox.done(message_id)
        finally:
            await self.queue.leases.release(ours, self.owner)
        return len(ours)

    async def _post_batch(self, references: list[str]) -> None:
        docs = [doc for doc in [await self.store.get(ref) for ref in references] if doc is not None]
        try:
            found = await self.erp.find_sales_by_reference([doc.reference for doc in docs])
        except ErpError as exc:
            for doc in docs:
                with _correlated(doc):
                    await self._failed(doc, exc)
            return
        alone = [doc for doc in docs if doc.reference in found or doc.cancel_requested or doc.payload is None
                 or doc.state in ("cancelled", "awaiting_order")]
        by_itself = {doc.reference for doc in alone}
        drafts: list[tuple[Document, SaleDraft]] = []
        for doc in docs:
            if doc.reference in by_itself:
                continue
            with _correlated(doc):
                try:
                    drafts.append((doc, mapping.to_sale(doc.shop, doc.payload, self.config.warehouses)))
                except mapping.InvalidOrder as exc:
                    await self._park(doc, "invalid_order", str(exc))
                except ErpError as exc:  # e.g. a store with no ERP warehouse: this order alone
                    await self._failed(doc, exc)
        # their parties (customer identity): a flash sale's guests in one ERP create
        parties = await self.identity.parties_for_orders([(d.shop, d.reference, d.payload) for d, _ in drafts])
        orders: list[tuple[Document, SaleDraft, int]] = []
        for (doc, draft), party in zip(drafts, parties):
            if isinstance(party, ErpError):
                with _correlated(doc):
                    await self._failed(doc, party)
            else:
                orders.append((doc, draft, party))
        created = await self._batch_call([doc for doc, _, _ in orders], self.erp.create_sales,
                                         [(draft, party) for _, draft, party in orders])
        for doc, sale in created:
            m.ERP_CALLS.labels("create", "ok").inc()
            with _correlated(doc):
                await self._record_created(doc, sale)
        paid = [(doc, sale) for doc, sale in created if doc.paid and sale.state in ("draft", "quotation")]
        confirmed = {doc.reference: sale for doc, sale in await self._batch_call(
            [doc for doc, _ in paid], self.erp.confirm_sales, [sale.id for _, sale in paid])}
        for doc, sale in created:
            if doc.paid and sale.state in ("draft", "quotation"):
                if doc.reference not in confirmed:
                    continue  # failed: retried or parked by _batch_call
                sale = confirmed[doc.reference]
                m.ERP_CALLS.labels("confirm", "ok").inc()
            with _correlated(doc):
                await self._settled(doc, sale)
        for doc in alone:
            await self._settle_doc(doc, found.get(doc.reference))

    async def _batch_call(self, docs: list[Document], call, args: list) -> list[tuple[Document, ErpSale]]:
        """One batch ERP call; each order's error (or the batch's transient one) goes to that
        order's retry or exception. Returns (doc, sale) of those that succeeded."""
        if not docs:
            return []
        try:
            results = await call(args)
        except ErpError as exc:
            results = [exc] * len(docs)
        out = []
        for doc, result in zip(docs, results):
            if isinstance(result, ErpError):
                with _correlated(doc):
                    await self._failed(doc, result)
            else:
                out.append((doc, result))
        return out

    async def _record_created(self, doc: Document, sale: ErpSale) -> None:
        await self.store.transition(doc.reference, "posted", detail=f"ERP sale {sale.id} created as a quotation",
                                    correlation_id=doc.correlation_id or "", erp_sale_id=sale.id, posted_ms=now_ms(),
                                    posted_version=doc.payload_updated_at, reason=None, last_error=None)

    async def _settled(self, doc: Document, sale: ErpSale) -> str:
        """Record where the order's sale stands after posting: confirmed, or posted (unpaid)."""
        ref = doc.reference
        if sale.state in ("confirmed", "processing", "done"):
            if doc.state != "confirmed":
                stamp = now_ms()
                await self.store.transition(ref, "confirmed", detail=f"ERP sale {sale.id} confirmed ({sale.state})",
                                            correlation_id=doc.correlation_id or "", erp_sale_id=sale.id,
                                            confirmed_ms=stamp, posted_ms=doc.posted_ms or stamp, reason=None)
                m.POSTING_LATENCY.observe(max(0, stamp - doc.received_ms) / 1000)
            await self.store.close_exceptions(ref, by="flow", note="posted")
            return "confirmed"
        await self.store.close_exceptions(ref, by="flow", note="posted")
        return "posted"

    async def _settle(self, doc: Document, found: Any = _LOOKUP) -> str:
        """One order; `found` is the ERP's sale for it when the caller looked it up already."""
        ref = doc.reference
        if doc.state == "cancelled":
            return "cancelled"
        if doc.cancel_requested:
            sale = await self._find(doc) if found is _LOOKUP else found
            if sale is None:
                await self.store.transition(ref, "cancelled", detail="cancelled before it reached the ERP",
                                            correlation_id=doc.correlation_id or "")
                return "cancelled"
            if sale.state != "cancelled":
                try:
                    sale = await self.erp.cancel_sale(sale.id)
                except ErpError as exc:
                    if sale.shipped and not exc.transient:
                        return await self._park(doc, "shipped_before_cancel", str(exc))
                    raise
                m.ERP_CALLS.labels("cancel", "ok").inc()
            await self.store.transition(ref, "cancelled", detail=f"ERP sale {sale.id} cancelled",
                                        correlation_id=doc.correlation_id or "", erp_sale_id=sale.id)
            await self.store.close_exceptions(ref, by="flow", note="order cancelled")
            return "cancelled"
        if doc.state == "awaiting_order" or doc.payload is None:
            return "awaiting_order"  # orders/paid came first: wait for orders/create
        draft = mapping.to_sale(doc.shop, doc.payload, self.config.warehouses)
        sale = await self._find(doc) if found is _LOOKUP else found
        if sale is None:
            party_id = await self.identity.party_for_order(doc.shop, ref, doc.payload)
            sale = await self.erp.create_sale(draft, party_id)
            m.ERP_CALLS.labels("create", "ok").inc()
            await self._record_created(doc, sale)
        else:
            if doc.erp_sale_id != sale.id or doc.state in ("received", "exception"):
                # created by a worker that stopped before recording it: adopt, never recreate
                await self.store.transition(ref, "posted", detail=f"ERP sale {sale.id} found by reference",
                                            erp_sale_id=sale.id, posted_ms=doc.posted_ms or now_ms(),
                                            correlation_id=doc.correlation_id or "")
            if doc.posted_version != doc.payload_updated_at and sale.state in ("draft", "quotation"):
                sale = await self.erp.update_quotation(sale.id, draft)
                m.ERP_CALLS.labels("update", "ok").inc()
                await self.store.transition(ref, "posted", detail=f"ERP quotation {sale.id} set to order version "
                                            f"{doc.payload_updated_at}", correlation_id=doc.correlation_id or "",
                                            erp_sale_id=sale.id, posted_version=doc.payload_updated_at)
            elif doc.posted_version != doc.payload_updated_at and doc.state == "confirmed":
                # Shopify allows edits after payment; a confirmed ERP sale is not rewritten
                await self.store.open_exception(ref, "edited_after_confirmation",
                                                f"order edited ({doc.payload_updated_at}) after ERP sale {sale.id} "
                                                f"was confirmed from version {doc.posted_version}")
                await self.store.transition(ref, "confirmed", detail="edit after confirmation not applied",
                                            posted_version=doc.payload_updated_at)
                m.EXCEPTIONS.labels("edited_after_confirmation").inc()
                return "confirmed"
        if doc.paid and sale.state in ("draft", "quotation"):
            sale = await self.erp.confirm_sale(sale.id)
            m.ERP_CALLS.labels("confirm", "ok").inc()
        return await self._settled(doc, sale)

    async def _find(self, doc: Document) -> ErpSale | None:
        return await self.erp.find_sale_by_reference(doc.reference)

    async def _failed(self, doc: Document, exc: ErpError) -> str:
        if exc.transient:
            attempts = await self.store.note_failure(doc.reference, exc.reason, str(exc))
            delay = self.backoff.delay(attempts)
            await self.queue.schedule_retry(doc.reference, delay)
            self.metrics.ERP_CALLS.labels("any", "unavailable").inc()
            log.warning("%s: ERP unavailable (attempt %d, retry in %.1fs): %s", doc.reference, attempts, delay,
                        exc)
            if attempts >= self.config.erp_down_exception_after:
                if await self.store.open_exception(doc.reference, exc.reason, str(exc)):
                    self.metrics.EXCEPTIONS.labels(exc.reason).inc()
            return doc.state
        detail = str(exc)
        if isinstance(exc, UnknownSku):
            detail = f"unknown SKU(s) {', '.join(exc.skus)}: {exc}"
        self.metrics.ERP_CALLS.labels("any", exc.reason).inc()
        return await self._park(doc, exc.reason, detail)

    async def _park(self, doc: Document, reason: str, detail: str) -> str:
        await self.store.note_failure(doc.reference, reason, detail)
        await self.store.transition(doc.reference, "exception", detail=f"{reason}: {detail}",
                                    correlation_id=doc.correlation_id or "")
        await self.store.open_exception(doc.reference, reason, detail)
        self.metrics.EXCEPTIONS.labels(reason).inc()
        log.warning("%s: exception %s: %s", doc.reference, reason, detail)
        return "exception"


# --- exception queue operations (CLI, API) ----------------------------------------------------


async def retry_exception(store: OrderStore, queue: OrderQueue, exception_id: int, *, by: str,
                          back_to: Any = lambda doc: "received") -> dict:
    """Close the exception and settle its order again (after the SKU was created, the ERP
    fixed, ...). The order returns to `received` (`back_to(doc)` for another flow's
    documents); the next round decides what it needs."""
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    await store.close_exceptions(exc["reference"], by=by, note="retried", ids=[exception_id])
    doc = await store.get(exc["reference"])
    if doc is not None and doc.state == "exception":
        await store.transition(doc.reference, back_to(doc), detail=f"retried by {by} (exception {exception_id})")
    await queue.wake(exc["reference"])
    return exc


class NotReplayable(Exception):
    """The exception's order is already settled for good (confirmed or cancelled)."""


async def replay_exception(store: OrderStore, queue: OrderQueue, exception_id: int, *, by: str) -> dict:
    """Post the exception's order again from its stored document, whatever the
    exception's status (a resolved one too: "we fixed it outside, post it after all").
    Open exceptions of the order are closed; the order returns to `received`."""
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    doc = await store.get(exc["reference"])
    if doc is None or doc.state in ("confirmed", "cancelled"):
        raise NotReplayable(f"order {exc['reference']} is {doc.state if doc else 'unknown'}: nothing to replay")
    await store.close_exceptions(exc["reference"], by=by, note=f"replayed (exception {exception_id})")
    await store.transition(doc.reference, "received", detail=f"replayed by {by} (exception {exception_id})")
    await queue.wake(exc["reference"])
    return exc


async def resolve_exception(store: OrderStore, exception_id: int, *, by: str, note: str) -> dict:
    """Close the exception without posting (handled outside the flow); the order stays as it is."""
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    await store.close_exceptions(exc["reference"], by=by, note=note or "resolved", ids=[exception_id])
    return exc


def dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()
