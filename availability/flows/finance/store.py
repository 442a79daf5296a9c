"""Durable per-payout state of the finance flow, in the SQL store (survives a Redis loss).

Tables:

    finance_payouts           one row per Shopify payout: its status at Shopify, the flow's
                              state, the ERP entries (payout, reversal), attempts, last error
    finance_payout_history    every state change with when and why
    finance_transactions      every balance transaction posted, keyed by its id: a
                              transaction is posted once, in one payout, ever
    (exceptions: the shared flow_exceptions, flow `finance`, with the documents involved;
    availability/flows/documents.py)

States (`STATES`, transitions checked on every change):

    scheduled   Shopify has not sent it yet (SCHEDULED): nothing to post
    pending     to post (IN_TRANSIT, PAID, FAILED, CANCELED) or being retried (ERP down)
    unbalanced  its transactions do not add up to its net yet (a partial listing): retried
                each poll, an exception after a few
    posted      the payout's entry is posted in the ERP
    reversed    the payout failed or was cancelled after posting: the reversal is posted too
    exception   parked (an unknown transaction type, a transaction already posted in
                another payout, the ERP refused the entry) until someone retries or resolves
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger, Column, Integer, MetaData, String, Table, Text, func, insert, select, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.shopify.payments import BalanceTransaction, Payout
from availability.flows.documents import ExceptionQueue, FlowExceptionMethods, flow_exceptions, sql_engine

metadata = MetaData()

#: state -> states it may move to (the flow's state machine, as data)
STATES: dict[str, set[str]] = {
    "scheduled": {"scheduled", "pending"},
    "pending": {"pending", "unbalanced", "posted", "exception"},
    "unbalanced": {"unbalanced", "pending", "posted", "exception"},
    "posted": {"posted", "reversed", "exception"},
    "reversed": {"reversed"},
    "exception": {"exception", "pending", "posted", "reversed"},
}
#: states with work left for the worker
OPEN_STATES = ("pending", "unbalanced")

#: who works an exception of each reason (all of them are finance's but a down ERP)
OWNERS = {
    "payout_unbalanced": "finance",
    "transaction_in_two_payouts": "finance",
    "unknown_transaction_type": "finance",
    "duplicate_entry": "finance",
    "erp_validation": "finance",
    "erp_error": "platform",
    "erp_down": "platform",
    "shopify_error": "platform",
    # reconciliation (reconcile.py)
    "payout_net_mismatch": "finance",
    "payout_not_posted": "finance",
    "erp_amount_mismatch": "finance",
    "reversal_missing": "finance",
    "captured_mismatch": "finance",
    "refunds_mismatch": "finance",
}

payouts = Table(
    "finance_payouts", metadata,
    Column("payout_id", String(100), primary_key=True),
    Column("shop", String(200), nullable=False),
    Column("legacy_id", BigInteger, nullable=False),
    Column("issued_at", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("net", String(40), nullable=False),
    Column("currency", String(8), nullable=False),
    Column("state", String(20), nullable=False),
    Column("entry_id", Integer),
    Column("reversal_id", Integer),
    Column("transactions", Integer),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", String(64)),
    Column("last_error", Text),
    Column("seen_ms", BigInteger, nullable=False),
    Column("posted_ms", BigInteger),
    Column("reversed_ms", BigInteger),
    Column("updated_ms", BigInteger, nullable=False),
)

history = Table(
    "finance_payout_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payout_id", String(100), nullable=False, index=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("detail", Text),
)

transactions = Table(
    "finance_transactions", metadata,
    Column("transaction_id", String(100), primary_key=True),
    Column("payout_id", String(100), nullable=False, index=True),
    Column("type", String(40), nullable=False),
    Column("amount", String(40), nullable=False),
    Column("fee", String(40), nullable=False),
    Column("net", String(40), nullable=False),
    Column("processed_at", String(40), nullable=False),
    Column("order_id", String(100)),
    Column("entry_id", Integer),
)

class IllegalTransition(RuntimeError):
    """A state change the flow's state machine does not allow (a bug, never data)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PayoutDoc:
    payout_id: str
    shop: str
    legacy_id: int
    issued_at: str
    status: str
    net: str
    currency: str
    state: str
    entry_id: int | None
    reversal_id: int | None
    transactions: int | None
    attempts: int
    reason: str | None
    last_error: str | None
    seen_ms: int
    posted_ms: int | None
    reversed_ms: int | None
    updated_ms: int

    def payout(self) -> Payout:
        return Payout(id=self.payout_id, legacy_id=self.legacy_id, issued_at=self.issued_at, status=self.status,
                      net=Decimal(self.net), currency=self.currency)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FinanceStore(FlowExceptionMethods):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = sql_engine(url)
        self.exceptions = ExceptionQueue(self.engine, flow_exceptions, "reference", OWNERS, flow="finance",
                                         default_owner="finance")

    async def open(self) -> "FinanceStore":
        from availability.migrations import upgrade  # noqa: PLC0415

        await upgrade(self.engine)  # the schema is Alembic's (availability/migrations/)
        return self

    async def close(self) -> None:
        await self.engine.dispose()

    # --- payouts --------------------------------------------------------------------------

    async def get(self, payout_id: str) -> PayoutDoc | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(payouts).where(payouts.c.payout_id == payout_id))).mappings().first()
        return PayoutDoc(**dict(row)) if row else None

    async def observe(self, shop: str, payout: Payout) -> tuple[PayoutDoc, bool]:
        """Record what a poll saw; returns (document, whether the worker has work for it)."""
        stamp = now_ms()
        initial = "scheduled" if payout.status == "SCHEDULED" else "pending"
        for _ in range(3):
            async with self.engine.begin() as conn:
                row = (await conn.execute(select(payouts).where(payouts.c.payout_id == payout.id))).mappings().first()
                if row is None:
                    try:
                        await conn.execute(insert(payouts).values(
                            payout_id=payout.id, shop=shop, legacy_id=payout.legacy_id, issued_at=payout.issued_at,
                            status=payout.status, net=str(payout.net), currency=payout.currency, state=initial,
                            attempts=0, seen_ms=stamp, updated_ms=stamp))
                    except IntegrityError:
                        continue  # another poller inserted it first
                    await self._history(conn, payout.id, None, initial, f"seen {payout.status} net {payout.net}")
                    doc = await self._get(conn, payout.id)
                    return doc, initial == "pending"
                doc = PayoutDoc(**dict(row))
                values: dict[str, Any] = {}
                if doc.status != payout.status:
                    values.update(status=payout.status, updated_ms=stamp)
                if doc.net != str(payout.net):
                    values.update(net=str(payout.net), updated_ms=stamp)
                new_state = doc.state
                if doc.state == "scheduled" and payout.status != "SCHEDULED":
                    new_state = "pending"
                if values or new_state != doc.state:
                    self._check(doc.state, new_state)
                    await conn.execute(update(payouts).where(payouts.c.payout_id == payout.id)
                                       .values(state=new_state, **values))
                    await self._history(conn, payout.id, doc.state, new_state,
                                        f"Shopify status {doc.status} -> {payout.status}" if "status" in values
                                        else f"net {doc.net} -> {payout.net}")
                doc = await self._get(conn, payout.id)
                needs_reversal = doc.state == "posted" and doc.status in ("FAILED", "CANCELED")
                return doc, doc.state in OPEN_STATES or needs_reversal
        raise RuntimeError(f"could not record payout {payout.id}")

    async def _get(self, conn, payout_id: str) -> PayoutDoc:
        row = (await conn.execute(select(payouts).where(payouts.c.payout_id == payout_id))).mappings().first()
        return PayoutDoc(**dict(row))

    @staticmethod
    def _check(from_state: str | None, to_state: str) -> None:
        if from_state is not None and to_state not in STATES[from_state]:
            raise IllegalTransition(f"payout state {from_state} -> {to_state} is not allowed")

    async def transition(self, payout_id: str, to_state: str, *, detail: str = "", **values: Any) -> None:
        async with self.engine.begin() as conn:
            doc = await self._get(conn, payout_id)
            self._check(doc.state, to_state)
            await conn.execute(update(payouts).where(payouts.c.payout_id == payout_id)
                               .values(state=to_state, updated_ms=now_ms(), **values))
            if doc.state != to_state or detail:
                await self._history(conn, payout_id, doc.state, to_state, detail)

    async def note_failure(self, payout_id: str, reason: str, error: str) -> int:
        async with self.engine.begin() as conn:
            await conn.execute(update(payouts).where(payouts.c.payout_id == payout_id).values(
                attempts=payouts.c.attempts + 1, reason=reason, last_error=error[:2000], updated_ms=now_ms()))
            return (await self._get(conn, payout_id)).attempts

    async def record_posted(self, payout_id: str, rows: list[BalanceTransaction], entry_id: int, *,
                            detail: str) -> None:
        """The entry is in the ERP: its transactions and the state change, in one transaction."""
        async with self.engine.begin() as conn:
            doc = await self._get(conn, payout_id)
            self._check(doc.state, "posted")
            known = {r[0] for r in await conn.execute(select(transactions.c.transaction_id).where(
                transactions.c.payout_id == payout_id))}
            fresh = [t for t in rows if t.id not in known]
            if fresh:
                await conn.execute(insert(transactions), [
                    {"transaction_id": t.id, "payout_id": payout_id, "type": t.type, "amount": str(t.amount),
                     "fee": str(t.fee), "net": str(t.net), "processed_at": t.processed_at, "order_id": t.order_id,
                     "entry_id": entry_id} for t in fresh])
            stamp = now_ms()
            await conn.execute(update(payouts).where(payouts.c.payout_id == payout_id).values(
                state="posted", entry_id=entry_id, transactions=len(rows), posted_ms=doc.posted_ms or stamp,
                reason=None, last_error=None, updated_ms=stamp))
            await self._history(conn, payout_id, doc.state, "posted", detail)

    async def claimed_elsewhere(self, payout_id: str, transaction_ids: list[str]) -> dict[str, str]:
        """transaction id -> the other payout it was already posted with."""
        out: dict[str, str] = {}
        async with self.engine.connect() as conn:
            for i in range(0, len(transaction_ids), 500):
                chunk = transaction_ids[i:i + 500]
                rows = await conn.execute(select(transactions.c.transaction_id, transactions.c.payout_id).where(
                    transactions.c.transaction_id.in_(chunk), transactions.c.payout_id != payout_id))
                out.update({tid: pid for tid, pid in rows})
        return out

    async def _history(self, conn, payout_id, from_state, to_state, detail) -> None:
        await conn.execute(insert(history).values(payout_id=payout_id, at_ms=now_ms(), from_state=from_state,
                                                  to_state=to_state, detail=detail))

    async def history(self, payout_id: str) -> list[dict]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(history).where(history.c.payout_id == payout_id).order_by(history.c.id))
            return [dict(r) for r in rows.mappings()]

    async def documents(self, *, states: list[str] | None = None, shop: str | None = None) -> list[PayoutDoc]:
        async with self.engine.connect() as conn:
            stmt = select(payouts).order_by(payouts.c.issued_at, payouts.c.legacy_id)
            if states:
                stmt = stmt.where(payouts.c.state.in_(states))
            if shop:
                stmt = stmt.where(payouts.c.shop == shop)
            return [PayoutDoc(**dict(r)) for r in (await conn.execute(stmt)).mappings()]

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(payouts.c.state, func.count()).group_by(payouts.c.state))
            return {state: int(n) for state, n in rows}

    async def transaction_count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(transactions))).scalar() or 0)
