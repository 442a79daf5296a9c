"""Durable per-shipment state of the fulfilment flow, its history, and its exception queue.

SQL (the service's database, beside the order flow's tables), not Redis: which shipment
became which Shopify fulfillment must survive a Redis loss and be auditable.

    fulfilment_documents         one row per shipment (key: its shipment id): the order's
                                 reference, lines, tracking, state, the Shopify fulfillment
                                 id and the ERP shipment it settled
    fulfilment_document_history  every state change with when, why and the correlation id
    (exceptions: the shared flow_exceptions, flow `fulfilment`, `reference` the shipment id,
    the order's reference under `documents`; availability/flows/documents.py)

States: received -> posting (a fulfillmentCreate may be in flight: look before sending
again) -> fulfilled (on Shopify) -> done (the ERP shipment settled too); exception.
Tables come from the Alembic migrations (availability/migrations/, revisions 0003 and 0005), applied on open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from availability.flows.documents import (
    ExceptionQueue,
    flow_exceptions,
    history_table,
    now_ms,
    sql_engine,
)
from availability.flows.fulfilment.mapping import Shipment

metadata = MetaData()

documents = Table(
    "fulfilment_documents", metadata,
    Column("shipment_id", String(200), primary_key=True),
    Column("source", String(16), nullable=False),
    Column("reference", String(200), nullable=False, index=True),
    Column("state", String(32), nullable=False),
    Column("lines", JSON, nullable=False),
    Column("tracking", JSON),
    Column("carrier", String(100)),
    Column("erp_shipment_id", Integer, index=True),
    Column("shopify_fulfillment_id", String(100)),
    Column("received_ms", BigInteger, nullable=False),
    Column("fulfilled_ms", BigInteger),
    Column("done_ms", BigInteger),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", String(64)),
    Column("last_error", Text),
    Column("correlation_id", String(64)),
    Column("updated_ms", BigInteger, nullable=False),
)

history = history_table("fulfilment_document_history", metadata, "shipment_id")
FLOW = "fulfilment"

#: who works an exception of each reason
OWNERS = {
    "unknown_order": "operations",
    "line_not_open": "operations",
    "shopify_rejected": "operations",
    "shopify_down": "platform",
    "erp_down": "platform",
    "erp_validation": "operations",
    "erp_error": "platform",
    "invalid_shipment": "operations",
}
#: states the flow still has work for
OPEN_STATES = ("received", "posting", "fulfilled")


@dataclass
class ShipmentDoc:
    shipment_id: str
    source: str
    reference: str
    state: str
    lines: list
    tracking: list | None
    carrier: str | None
    erp_shipment_id: int | None
    shopify_fulfillment_id: str | None
    received_ms: int
    fulfilled_ms: int | None
    done_ms: int | None
    attempts: int
    reason: str | None
    last_error: str | None
    correlation_id: str | None
    updated_ms: int

    def shipment(self) -> Shipment:
        return Shipment(self.shipment_id, self.source, self.reference, tuple((s, int(q)) for s, q in self.lines),
                        tuple(self.tracking or ()), self.carrier, self.erp_shipment_id)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _doc(row: Any) -> ShipmentDoc:
    data = dict(row)
    for key in ("lines", "tracking"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return ShipmentDoc(**data)


class FulfilmentStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = sql_engine(url)
        # the shared table, scoped to this flow: the document is the shipment (one order can
        # ship in several, each with its own exception), the order rides in `documents`
        self.exceptions = ExceptionQueue(self.engine, flow_exceptions, "reference", OWNERS, flow=FLOW)

    async def open(self) -> FulfilmentStore:
        from availability.migrations import upgrade  # noqa: PLC0415

        await upgrade(self.engine)  # the schema is Alembic's (availability/migrations/)
        return self

    async def close(self) -> None:
        await self.engine.dispose()

    async def receive(self, shipment: Shipment, correlation_id: str) -> bool:
        """Record a shipment; False when its id was seen before (a resent 945, a re-read)."""
        stamp = now_ms()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(documents).values(
                    shipment_id=shipment.shipment_id, source=shipment.source, reference=shipment.reference,
                    state="received", lines=[list(x) for x in shipment.lines], tracking=list(shipment.tracking_numbers),
                    carrier=shipment.carrier, erp_shipment_id=shipment.erp_shipment_id, received_ms=stamp,
                    attempts=0, correlation_id=correlation_id, updated_ms=stamp))
                await self._history(conn, shipment.shipment_id, None, "received",
                                    f"{shipment.source} shipment of {shipment.reference} received", correlation_id)
            return True
        except IntegrityError:
            return False

    async def get(self, shipment_id: str) -> ShipmentDoc | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(documents).where(documents.c.shipment_id == shipment_id))).mappings().first()
            return _doc(row) if row else None

    async def of_order(self, reference: str) -> list[ShipmentDoc]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(documents).where(documents.c.reference == reference)
                                      .order_by(documents.c.received_ms, documents.c.shipment_id))
            return [_doc(r) for r in rows.mappings()]

    async def documents(self, *, states: list[str] | None = None) -> list[ShipmentDoc]:
        async with self.engine.connect() as conn:
            stmt = select(documents).order_by(documents.c.received_ms)
            if states:
                stmt = stmt.where(documents.c.state.in_(states))
            return [_doc(r) for r in (await conn.execute(stmt)).mappings()]

    async def erp_shipment_known(self, erp_shipment_id: int) -> bool:
        """True when a shipment of the flow already stands for this ERP shipment (one the
        flow marked done for a WMS shipment must not come back as a shipment of its own)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(documents.c.shipment_id)
                                      .where(documents.c.erp_shipment_id == erp_shipment_id).limit(1))).first()
            return row is not None

    async def transition(self, shipment_id: str, to_state: str, *, detail: str = "", correlation_id: str = "",
                         **values: Any) -> None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(documents.c.state).where(documents.c.shipment_id == shipment_id))).first()
            from_state = row[0] if row else None
            await conn.execute(update(documents).where(documents.c.shipment_id == shipment_id)
                               .values(state=to_state, updated_ms=now_ms(), **values))
            if from_state != to_state or detail:
                await self._history(conn, shipment_id, from_state, to_state, detail, correlation_id)

    async def note_failure(self, shipment_id: str, reason: str, error: str) -> int:
        async with self.engine.begin() as conn:
            await conn.execute(update(documents).where(documents.c.shipment_id == shipment_id).values(
                attempts=documents.c.attempts + 1, reason=reason, last_error=error[:2000], updated_ms=now_ms()))
            row = (await conn.execute(select(documents.c.attempts)
                                      .where(documents.c.shipment_id == shipment_id))).first()
            return int(row[0]) if row else 0

    async def _history(self, conn, shipment_id, from_state, to_state, detail, correlation_id) -> None:
        await conn.execute(insert(history).values(shipment_id=shipment_id, at_ms=now_ms(), from_state=from_state,
                                                  to_state=to_state, detail=detail, correlation_id=correlation_id))

    async def history(self, shipment_id: str) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(history).where(history.c.shipment_id == shipment_id)
                                      .order_by(history.c.id))
            return [dict(r) for r in rows.mappings()]

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(documents.c.state, func.count()).group_by(documents.c.state))
            return {state: int(n) for state, n in rows}

    # --- exceptions -------------------------------------------------------------------------

    async def open_exception(self, shipment_id: str, reference: str, reason: str, detail: str) -> bool:
        """Open (or refresh) the one open exception of this reason; True when newly opened."""
        return (await self.exceptions.open(shipment_id, reason, detail, documents={"order": reference}))[1]

    async def close_exceptions(self, shipment_id: str, *, by: str, note: str, ids: list[int] | None = None) -> int:
        return await self.exceptions.close(shipment_id, by=by, note=note, ids=ids)

    async def list_exceptions(self, *, status: str | None = "open", reason: str | None = None, **filters: Any
                              ) -> list[dict]:
        return [_exception(r) for r in await self.exceptions.list(status=status, reason=reason, **filters)]

    async def get_exception(self, exception_id: int) -> dict | None:
        row = await self.exceptions.get(exception_id)
        return _exception(row) if row else None


def _exception(row: dict) -> dict:
    """A shared-table row with the shipment and its order named as the flow names them
    (`shipment_id`, `order`): the CLI's lines and the retry's wake-up read them."""
    return {**row, "shipment_id": row["reference"], "order": (row.get("documents") or {}).get("order")}
