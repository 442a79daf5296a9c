"""What the sibling flows' SQL stores share (availability/flows/*/store.py): the engine
(several worker processes on one SQLite file need WAL and a busy timeout), the
per-document history table and the exception queue people work (reason, owner,
open/resolved, who resolved it and why).

`flow_exceptions` is the one exception table of the order, returns, finance and fulfilment
flows (column `flow`; migration 0004 moved the returns' and finance's own tables into it,
0005 the fulfilment flow's, whose `reference` is the shipment id), so the operations view
and `GET /v1/flows/exceptions` list them together with one id space."""

from __future__ import annotations

import json
import time
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
    event,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def now_ms() -> int:
    return int(time.time() * 1000)


def sql_engine(url: str) -> AsyncEngine:
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # several worker processes share the file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    return engine


def history_table(name: str, metadata: MetaData, key: str) -> Table:
    """Every state change of a document: when, from, to, why, under which correlation id."""
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column(key, String(200), nullable=False, index=True),
        Column("at_ms", BigInteger, nullable=False),
        Column("from_state", String(32)),
        Column("to_state", String(32), nullable=False),
        Column("detail", Text),
        Column("correlation_id", String(64)),
    )


def exceptions_table(name: str, metadata: MetaData, *key_columns: Column) -> Table:
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        *key_columns,
        Column("reason", String(64), nullable=False),
        Column("owner", String(32), nullable=False),
        Column("detail", Text),
        Column("status", String(16), nullable=False),  # open | resolved
        Column("created_ms", BigInteger, nullable=False),
        Column("resolved_ms", BigInteger),
        Column("resolved_by", String(100)),
        Column("note", Text),
    )


metadata = MetaData()

flow_exceptions = exceptions_table(
    "flow_exceptions", metadata,
    Column("flow", String(32), nullable=False, index=True),
    #: the document the exception is about: an order's "shop#1001", a refund's key, a payout's reference,
    #: a shipment's id
    Column("reference", String(200), nullable=False, index=True),
    #: the documents involved (finance: the payout, its transactions, the ERP entry, amounts;
    #: fulfilment: the shipment's order)
    Column("documents", JSON),
)


class ExceptionQueue:
    """A flow's exceptions: at most one open exception per (document, reason). With `flow`,
    a queue over the shared `flow_exceptions` sees that flow's rows only; without, all."""

    def __init__(self, engine: AsyncEngine, table: Table, key: str, owners: dict[str, str], *,
                 flow: str | None = None, default_owner: str = "platform") -> None:
        self.engine, self.table, self.key, self.owners = engine, table, key, owners
        self.flow, self.default_owner = flow, default_owner

    def _scoped(self, stmt):
        return stmt.where(self.table.c.flow == self.flow) if self.flow and "flow" in self.table.c else stmt

    async def open(self, document: str, reason: str, detail: str, **values: Any) -> tuple[int, bool]:
        """Open (or refresh the detail and documents of) the open exception of this reason:
        (id, newly opened)."""
        t = self.table
        if self.flow and "flow" in t.c:
            values.setdefault("flow", self.flow)
        async with self.engine.begin() as conn:
            row = (await conn.execute(self._scoped(select(t.c.id).where(
                t.c[self.key] == document, t.c.reason == reason, t.c.status == "open")))).first()
            if row:
                fresh = {"documents": values["documents"]} if "documents" in values else {}
                await conn.execute(update(t).where(t.c.id == row[0]).values(detail=detail[:4000], **fresh))
                return int(row[0]), False
            result = await conn.execute(insert(t).values(
                **{self.key: document}, reason=reason, owner=self.owners.get(reason, self.default_owner),
                detail=detail[:4000], status="open", created_ms=now_ms(), **values))
            return int(result.inserted_primary_key[0]), True

    async def close(self, document: str, *, by: str, note: str, reasons: list[str] | None = None,
                    ids: list[int] | None = None) -> int:
        t = self.table
        async with self.engine.begin() as conn:
            stmt = self._scoped(update(t).where(t.c[self.key] == document, t.c.status == "open"))
            if reasons:
                stmt = stmt.where(t.c.reason.in_(reasons))
            if ids:
                stmt = stmt.where(t.c.id.in_(ids))
            result = await conn.execute(stmt.values(status="resolved", resolved_ms=now_ms(), resolved_by=by,
                                                    note=note))
            return int(result.rowcount or 0)

    async def list(self, *, status: str | None = "open", reason: str | None = None, flow: str | None = None,
                   owner: str | None = None, limit: int | None = None, after_id: int | None = None) -> list[dict]:
        t = self.table
        async with self.engine.connect() as conn:
            stmt = self._scoped(select(t).order_by(t.c.id))
            if status:
                stmt = stmt.where(t.c.status == status)
            if reason:
                stmt = stmt.where(t.c.reason == reason)
            if flow and "flow" in t.c:
                stmt = stmt.where(t.c.flow == flow)
            if owner:
                stmt = stmt.where(t.c.owner == owner)
            if after_id is not None:
                stmt = stmt.where(t.c.id > after_id)
            if limit is not None:
                stmt = stmt.limit(limit)
            return [_row(r) for r in (await conn.execute(stmt)).mappings()]

    async def get(self, exception_id: int) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(self._scoped(select(self.table).where(self.table.c.id == exception_id)))
                   ).mappings().first()
            return _row(row) if row else None


def _row(row: Any) -> dict:
    out = dict(row)
    if isinstance(out.get("documents"), str):  # a JSON column read back as text (some drivers)
        out["documents"] = json.loads(out["documents"])
    return out


class FlowExceptionMethods:
    """The exception-queue methods of a flow's store (the order, returns and finance stores):
    `self.exceptions` is their `ExceptionQueue` over `flow_exceptions`, scoped to the flow."""

    exceptions: ExceptionQueue

    async def open_exception(self, reference: str, reason: str, detail: str, documents: dict | None = None) -> int:
        """Open (or refresh) the one open exception of this reason for the document."""
        extra = {"documents": documents} if documents is not None else {}
        return (await self.exceptions.open(reference, reason, detail, **extra))[0]

    async def close_exceptions(self, reference: str, *, by: str, note: str, reasons: list[str] | None = None,
                               ids: list[int] | None = None) -> int:
        return await self.exceptions.close(reference, by=by, note=note, reasons=reasons, ids=ids)

    async def list_exceptions(self, *, status: str | None = "open", reason: str | None = None,
                              flow: str | None = None, owner: str | None = None, limit: int | None = None,
                              after_id: int | None = None) -> list[dict]:
        return await self.exceptions.list(status=status, reason=reason, flow=flow, owner=owner, limit=limit,
                                          after_id=after_id)

    async def get_exception(self, exception_id: int) -> dict | None:
        return await self.exceptions.get(exception_id)
