"""Durable state of the return-to-refund flow: one document per Shopify refund and per
Shopify return, their history, and the flow's exception queue (SQL, like the order flow's
`availability/flows/orders/store.py`, so it survives a Redis loss and can be audited).

    return_documents         one row per refund (`kind` refund) or return (`kind` return):
                             state, the latest payload, for refunds the ERP credit note and
                             the shop / presentment amounts, for returns the dispositions
    return_document_history  every state change with when, why and the correlation id
    return_webhooks          X-Shopify-Webhook-Id values seen (a redelivery storm is dropped)
    (exceptions: the shared flow_exceptions, flow `returns`; availability/flows/documents.py)

The state machines are data (`REFUND_STATES`, `RETURN_STATES`), checked on every
transition. Tables come from the Alembic migrations (revision 0003), applied on open as the order flow's are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer, MetaData, Numeric, String, Table, Text, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from availability.flows.machinery import now_ms
from availability.flows.orders import store as orders_store
from availability.flows.orders.store import OrderStore

metadata = MetaData()

documents = Table(
    "return_documents", metadata,
    Column("key", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),  # refund | return
    Column("shop", String(200), nullable=False),
    Column("source_id", String(64), nullable=False),
    Column("order_id", String(64)),
    Column("state", String(32), nullable=False),
    Column("payload", JSON),
    #: for returns: disposition id -> disposition (merged over deliveries); sku by line item
    Column("extra", JSON),
    Column("sale_reference", String(200)),
    Column("erp_credit_note_id", Integer),
    Column("credit_note_number", String(64)),
    #: what the books get (shop currency) and what the customer saw (presentment), apart
    Column("total_shop", Numeric(18, 4)),
    Column("shop_currency", String(8)),
    Column("total_presentment", Numeric(18, 4)),
    Column("presentment_currency", String(8)),
    #: when Shopify created the refund (its created_at): the completion-time metric's start
    Column("created_ms", BigInteger),
    Column("received_ms", BigInteger, nullable=False),
    Column("posted_ms", BigInteger),
    Column("credited_ms", BigInteger),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", String(64)),
    Column("last_error", Text),
    Column("correlation_id", String(64)),
    Column("updated_ms", BigInteger, nullable=False),
)




# history and webhook ids have the order flow's columns (the history's `reference` holds
# the document key, as the shared flow_exceptions' does for this flow's rows)
history = orders_store.history.to_metadata(metadata, name="return_document_history")
webhooks = orders_store.webhooks.to_metadata(metadata, name="return_webhooks")

#: a refund's life: state -> the states it may go to
REFUND_STATES: dict[str, tuple[str, ...]] = {
    # known, not yet in the ERP (or the ERP is down)
    "received": ("awaiting_sale", "posted", "credited", "exception"),
    # the order's sale is not in the ERP (or not invoiced) yet: wait for the order flow
    "awaiting_sale": ("received", "posted", "credited", "exception"),
    # the credit note exists in the ERP, not posted yet
    "posted": ("credited", "exception"),
    # the credit note is posted (numbered, in the books): done
    "credited": (),
    "exception": ("received", "awaiting_sale", "posted", "credited"),
}
#: a return's life follows Shopify's status; stock effects come from its dispositions
RETURN_STATES: dict[str, tuple[str, ...]] = {
    "requested": ("open", "declined", "cancelled", "closed", "exception"),
    "open": ("closed", "cancelled", "exception", "open"),
    "declined": ("requested", "open"),
    "cancelled": ("open",),
    "closed": ("open",),
    "exception": ("requested", "open", "closed", "cancelled", "declined"),
}

#: who works an exception of each reason
OWNERS = {
    "unknown_sku": "commerce",
    "invalid_refund": "commerce",
    "sale_not_found": "commerce",
    "unknown_location": "operations",
    "sale_cancelled": "finance",
    "amount_mismatch": "finance",
    "erp_validation": "finance",
    "erp_error": "platform",
    "erp_down": "platform",
    "ledger_down": "platform",
}


class IllegalTransition(RuntimeError):
    """A transition the document's state machine does not allow (a bug, never data)."""


def allowed(kind: str, from_state: str | None, to_state: str) -> bool:
    machine = REFUND_STATES if kind == "refund" else RETURN_STATES
    if to_state not in machine:
        return False
    return from_state is None or from_state == to_state or to_state in machine.get(from_state, ())


@dataclass
class Document:
    key: str
    kind: str
    shop: str
    source_id: str
    order_id: str | None
    state: str
    payload: dict | None
    extra: dict | None
    sale_reference: str | None
    erp_credit_note_id: int | None
    credit_note_number: str | None
    total_shop: Any
    shop_currency: str | None
    total_presentment: Any
    presentment_currency: str | None
    created_ms: int | None
    received_ms: int
    posted_ms: int | None
    credited_ms: int | None
    attempts: int
    reason: str | None
    last_error: str | None
    correlation_id: str | None
    updated_ms: int

    @property
    def reference(self) -> str:
        """The key, under the name the order flow's shared code uses."""
        return self.key

    def as_dict(self, *, with_payload: bool = False) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not with_payload:
            out.pop("payload")
        for name in ("total_shop", "total_presentment"):
            if out[name] is not None:
                out[name] = str(out[name])
        return out


def _row(row: Any) -> Document:
    data = dict(row)
    for name in ("payload", "extra"):
        if isinstance(data.get(name), str):
            data[name] = json.loads(data[name])
    return Document(**data)


class ReturnStore(OrderStore):
    """The order flow's store machinery (engine, SQLite pragmas, webhook ids, the exception
    queue) over this flow's own tables; documents are keyed by `key` (shop + refund/return id)."""

    metadata = metadata
    webhooks_table = webhooks
    flow = "returns"
    owners = OWNERS

    # --- intake -----------------------------------------------------------------------------

    async def receive_refund(self, *, key: str, shop: str, refund_id: str, order_id: str, payload: dict,
                             created_ms: int | None, correlation_id: str, topic: str) -> Document:
        """A refund is immutable in Shopify: the first delivery is kept, later ones only noted."""
        stamp = now_ms()
        for _ in range(3):
            async with self.engine.begin() as conn:
                doc = await self._get(conn, key)
                if doc is not None:
                    await self._history(conn, key, doc.state, doc.state, f"{topic} received again", correlation_id)
                    return doc
                try:
                    await conn.execute(insert(documents).values(
                        key=key, kind="refund", shop=shop, source_id=refund_id, order_id=order_id, state="received",
                        payload=payload, extra={}, created_ms=created_ms, received_ms=stamp, attempts=0,
                        correlation_id=correlation_id, updated_ms=stamp))
                except IntegrityError:
                    continue
                await self._history(conn, key, None, "received", f"{topic} received", correlation_id)
                return await self._get(conn, key)
        raise RuntimeError(f"could not record {topic} for {key}")

    async def receive_return(self, *, key: str, shop: str, return_id: str, order_id: str | None, topic: str,
                             status: str | None, payload: dict | None, dispositions: dict[str, dict],
                             skus: dict[str, str], correlation_id: str) -> Document:
        """Merge one returns/* or reverse_fulfillment_orders/dispose delivery into the
        return's document: dispositions and line SKUs are a union (each disposition is its
        own fact), the status follows the state machine (a late older status is noted and
        ignored)."""
        stamp = now_ms()
        for _ in range(3):
            async with self.engine.begin() as conn:
                doc = await self._get(conn, key)
                if doc is None:
                    state = status if status in RETURN_STATES else "requested"
                    try:
                        await conn.execute(insert(documents).values(
                            key=key, kind="return", shop=shop, source_id=return_id, order_id=order_id, state=state,
                            payload=payload, extra={"dispositions": dispositions, "skus": skus}, received_ms=stamp,
                            attempts=0, correlation_id=correlation_id, updated_ms=stamp))
                    except IntegrityError:
                        continue
                    await self._history(conn, key, None, state, f"{topic} received", correlation_id)
                    return await self._get(conn, key)
                extra = dict(doc.extra or {})
                extra["dispositions"] = {**(extra.get("dispositions") or {}), **dispositions}
                extra["skus"] = {**(extra.get("skus") or {}), **skus}
                values: dict[str, Any] = {"extra": extra, "updated_ms": stamp}
                if payload is not None:
                    values["payload"] = payload
                if order_id and not doc.order_id:
                    values["order_id"] = order_id
                new_state = doc.state
                detail = f"{topic} received"
                if status in RETURN_STATES and status != doc.state:
                    if allowed("return", doc.state, status):
                        new_state = status
                    else:
                        detail += f" (status {status} after {doc.state}: not applied)"
                values["state"] = new_state
                await conn.execute(update(documents).where(documents.c.key == key).values(**values))
                await self._history(conn, key, doc.state, new_state, detail, correlation_id)
                return await self._get(conn, key)
        raise RuntimeError(f"could not record {topic} for {key}")

    # --- state ------------------------------------------------------------------------------

    async def get(self, key: str) -> Document | None:
        async with self.engine.connect() as conn:
            return await self._get(conn, key)

    async def _get(self, conn: AsyncConnection, key: str) -> Document | None:
        row = (await conn.execute(select(documents).where(documents.c.key == key))).mappings().first()
        return _row(row) if row is not None else None

    async def transition(self, key: str, to_state: str, *, detail: str = "", correlation_id: str = "",
                         **values: Any) -> None:
        async with self.engine.begin() as conn:
            doc = await self._get(conn, key)
            from_state = doc.state if doc else None
            if doc is not None and not allowed(doc.kind, from_state, to_state):
                raise IllegalTransition(f"{key}: {from_state} -> {to_state} is not a {doc.kind} transition")
            await conn.execute(update(documents).where(documents.c.key == key)
                               .values(state=to_state, updated_ms=now_ms(), **values))
            if from_state != to_state or detail:
                await self._history(conn, key, from_state, to_state, detail, correlation_id)

    async def note_failure(self, key: str, reason: str, error: str) -> int:
        """Count a failed attempt; returns the attempts so far."""
        async with self.engine.begin() as conn:
            await conn.execute(update(documents).where(documents.c.key == key).values(
                attempts=documents.c.attempts + 1, reason=reason, last_error=error[:2000], updated_ms=now_ms()))
            doc = await self._get(conn, key)
            return doc.attempts if doc else 0

    async def _history(self, conn, key, from_state, to_state, detail, correlation_id) -> None:
        await conn.execute(insert(history).values(reference=key, at_ms=now_ms(), from_state=from_state,
                                                  to_state=to_state, detail=detail, correlation_id=correlation_id))

    async def history(self, key: str) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(history).where(history.c.reference == key).order_by(history.c.id))
            return [dict(r) for r in rows.mappings()]

    async def documents(self, *, kind: str | None = None, states: list[str] | None = None,
                        shop: str | None = None, order_id: str | None = None) -> list[Document]:
        async with self.engine.connect() as conn:
            stmt = select(documents).order_by(documents.c.received_ms, documents.c.key)
            if kind:
                stmt = stmt.where(documents.c.kind == kind)
            if states:
                stmt = stmt.where(documents.c.state.in_(states))
            if shop:
                stmt = stmt.where(documents.c.shop == shop)
            if order_id:
                stmt = stmt.where(documents.c.order_id == order_id)
            return [_row(r) for r in (await conn.execute(stmt)).mappings().all()]

    async def counts(self, kind: str = "refund") -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(documents.c.state, func.count()).where(documents.c.kind == kind)
                                      .group_by(documents.c.state))
            return {state: int(n) for state, n in rows}
