"""Durable per-order state of the order-to-ERP flow, its history, and its exception queue.

SQL (SQLite or PostgreSQL, the service's database URL), not Redis: an order's state must
survive a Redis loss and be auditable. Redis holds only the work marks, leases and the
outbox (availability/flows/machinery.py); everything those would need to rebuild is here.

    order_documents         one row per Shopify order: state, the latest order payload
                            (newest `updated_at` wins), paid / cancel flags, the ERP sale id
    order_document_history  every state change with when, why and the correlation id
    order_webhooks          X-Shopify-Webhook-Id values seen (a redelivery storm is dropped)
    flow_exceptions         what people must look at: reason, owner, open/resolved (shared
                            with the returns and finance flows, availability/flows/documents.py)

States: received -> posted (ERP quotation) -> confirmed (paid: ERP sale confirmed);
awaiting_order (orders/paid came before orders/create); cancelled; exception.
The tables are Alembic's (availability/migrations/): `open()` upgrades the database to
the code's head.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text, insert, select, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from availability.flows.documents import (
    ExceptionQueue, FlowExceptionMethods, flow_exceptions, history_table, sql_engine,
)

metadata = MetaData()

documents = Table(
    "order_documents", metadata,
    Column("reference", String(200), primary_key=True),
    Column("shop", String(200), nullable=False),
    Column("order_id", String(64)),
    Column("state", String(32), nullable=False),
    Column("payload", JSON),
    Column("payload_updated_at", String(64)),
    Column("paid", Boolean, nullable=False, default=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("erp_sale_id", Integer),
    #: the payload version last written to the ERP (an edit after it updates the quotation)
    Column("posted_version", String(64)),
    Column("received_ms", BigInteger, nullable=False),
    Column("posted_ms", BigInteger),
    Column("confirmed_ms", BigInteger),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", String(64)),
    Column("last_error", Text),
    Column("correlation_id", String(64)),
    Column("updated_ms", BigInteger, nullable=False),
)

history = history_table("order_document_history", metadata, "reference")

webhooks = Table(
    "order_webhooks", metadata,
    Column("webhook_id", String(200), primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("reference", String(200)),
    Column("at_ms", BigInteger, nullable=False),
)

#: who works an exception of each reason
OWNERS = {
    "unknown_sku": "commerce",
    "unknown_location": "operations",
    "invalid_order": "commerce",
    "erp_validation": "finance",
    "erp_error": "platform",
    "erp_down": "platform",
    "shipped_before_cancel": "operations",
    "edited_after_confirmation": "operations",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Document:
    reference: str
    shop: str
    order_id: str | None
    state: str
    payload: dict | None
    payload_updated_at: str | None
    paid: bool
    cancel_requested: bool
    erp_sale_id: int | None
    posted_version: str | None
    received_ms: int
    posted_ms: int | None
    confirmed_ms: int | None
    attempts: int
    reason: str | None
    last_error: str | None
    correlation_id: str | None
    updated_ms: int

    def as_dict(self, *, with_payload: bool = False) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not with_payload:
            out.pop("payload")
        return out


def _newer(incoming: str | None, stored: str | None) -> bool:
    """Shopify's `updated_at` strings carry an offset; compare as instants."""
    from datetime import datetime  # noqa: PLC0415

    if stored is None:
        return True
    if incoming is None:
        return False
    try:
        return datetime.fromisoformat(incoming) >= datetime.fromisoformat(stored)
    except ValueError:
        return incoming >= stored


class OrderStore(FlowExceptionMethods):
    # the tables, flow name and owners the shared parts below (open, webhooks, the
    # exception queue) use: the returns flow's store reuses them with its own
    metadata = metadata
    webhooks_table = webhooks
    flow = "orders"
    owners = OWNERS

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = sql_engine(url)
        self.exceptions = ExceptionQueue(self.engine, flow_exceptions, "reference", self.owners, flow=self.flow)

    async def open(self) -> "OrderStore":
        from availability.migrations import upgrade  # noqa: PLC0415

        await upgrade(self.engine)
        return self

    async def close(self) -> None:
        await self.engine.dispose()

    # --- intake -----------------------------------------------------------------------------

    async def seen_webhook(self, webhook_id: str, topic: str, reference: str | None) -> bool:
        """Record a webhook id; True when it was seen before (a redelivery)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(self.webhooks_table).values(webhook_id=webhook_id, topic=topic, reference=reference,
                                                           at_ms=now_ms()))
            return False
        except IntegrityError:
            return True

    async def receive(self, *, reference: str, shop: str, topic: str, payload: dict, paid: bool, cancelled: bool,
                      correlation_id: str) -> Document:
        """Merge one order webhook into the order's document (one transaction)."""
        stamp = now_ms()
        # every order topic carries the whole order (newest wins), but only create, updated
        # or cancelled say the order exists: orders/paid alone leaves it awaiting the order
        is_content = True
        is_order = topic in ("orders/create", "orders/updated", "orders/cancelled")
        version = payload.get("updated_at")
        for _ in range(3):
            async with self.engine.begin() as conn:
                doc = await self._get(conn, reference, lock=True)
                if doc is None:
                    state = "received" if is_order else "awaiting_order"
                    try:
                        await conn.execute(insert(documents).values(
                            reference=reference, shop=shop, order_id=str(payload.get("id") or ""), state=state,
                            payload=payload, payload_updated_at=version, paid=paid,
                            cancel_requested=cancelled, received_ms=stamp, attempts=0,
                            correlation_id=correlation_id, updated_ms=stamp,
                        ))
                    except IntegrityError:
                        continue  # another process inserted it first: merge into theirs
                    await self._history(conn, reference, None, state, f"{topic} received", correlation_id)
                    return await self._get(conn, reference)
                values: dict[str, Any] = {"updated_ms": stamp}
                if is_content and _newer(version, doc.payload_updated_at):
                    values.update(payload=payload, payload_updated_at=version)
                if paid and not doc.paid:
                    values["paid"] = True
                if cancelled and not doc.cancel_requested:
                    values["cancel_requested"] = True
                new_state = doc.state
                if doc.state == "awaiting_order" and is_order:
                    new_state = "received"
                    values["state"] = new_state
                await conn.execute(update(documents).where(documents.c.reference == reference).values(**values))
                detail = f"{topic} received" + ("" if "payload" in values or not is_content else " (older than held)")
                await self._history(conn, reference, doc.state, new_state, detail, correlation_id)
                return await self._get(conn, reference)
        raise RuntimeError(f"could not record {topic} for {reference}")

    # --- state ------------------------------------------------------------------------------

    async def get(self, reference: str) -> Document | None:
        async with self.engine.connect() as conn:
            return await self._get(conn, reference)

    async def _get(self, conn: AsyncConnection, reference: str, *, lock: bool = False) -> Document | None:
        stmt = select(documents).where(documents.c.reference == reference)
        if lock and not self.url.startswith("sqlite"):
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            return None
        data = dict(row)
        if isinstance(data.get("payload"), str):
            data["payload"] = json.loads(data["payload"])
        return Document(**data)

    async def transition(self, reference: str, to_state: str, *, detail: str = "", correlation_id: str = "",
                         **values: Any) -> None:
        async with self.engine.begin() as conn:
            doc = await self._get(conn, reference, lock=True)
            from_state = doc.state if doc else None
            await conn.execute(update(documents).where(documents.c.reference == reference)
                               .values(state=to_state, updated_ms=now_ms(), **values))
            if from_state != to_state or detail:
                await self._history(conn, reference, from_state, to_state, detail, correlation_id)

    async def note_failure(self, reference: str, reason: str, error: str) -> int:
        """Count a failed attempt; returns the attempts so far."""
        async with self.engine.begin() as conn:
            await conn.execute(update(documents).where(documents.c.reference == reference).values(
                attempts=documents.c.attempts + 1, reason=reason, last_error=error[:2000], updated_ms=now_ms()))
            doc = await self._get(conn, reference)
            return doc.attempts if doc else 0

    async def _history(self, conn, reference, from_state, to_state, detail, correlation_id) -> None:
        await conn.execute(insert(history).values(reference=reference, at_ms=now_ms(), from_state=from_state,
                                                  to_state=to_state, detail=detail, correlation_id=correlation_id))

    async def history(self, reference: str) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(history).where(history.c.reference == reference)
                                      .order_by(history.c.id))
            return [dict(r) for r in rows.mappings()]

    async def documents(self, *, states: list[str] | None = None, shop: str | None = None) -> list[Document]:
        async with self.engine.connect() as conn:
            stmt = select(documents).order_by(documents.c.received_ms)
            if states:
                stmt = stmt.where(documents.c.state.in_(states))
            if shop:
                stmt = stmt.where(documents.c.shop == shop)
            rows = (await conn.execute(stmt)).mappings().all()
        out = []
        for row in rows:
            data = dict(row)
            if isinstance(data.get("payload"), str):
                data["payload"] = json.loads(data["payload"])
            out.append(Document(**data))
        return out

    async def counts(self) -> dict[str, int]:
        from sqlalchemy import func  # noqa: PLC0415

        async with self.engine.connect() as conn:
            rows = await conn.execute(select(documents.c.state, func.count()).group_by(documents.c.state))
            return {state: int(n) for state, n in rows}

