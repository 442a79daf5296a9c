"""The finance posting flow: Shopify Payments payouts in, one ERP journal entry per payout out.

There is no payout webhook, so a **poll** (`FinanceFlow.poll`) reads the payouts of the
last `lookback_days` from Shopify, records each in its SQL document (status changes go to
its history) and marks the ones with work in the flow's `WorkQueue`: a payout that moves
money (IN_TRANSIT, PAID, FAILED, CANCELED) and is not posted yet, and a posted one that
Shopify now reports FAILED or CANCELED (it needs its reversal).

The **worker** (`run_once`) claims marked payouts with a lease (one worker per payout),
writes an outbox message for each before touching the ERP, and settles each:

1. read the payout's balance transactions from Shopify (all pages); if they do not add
   up to the payout's net the listing is partial: state `unbalanced`, tried again by the
   next poll, a `payout_unbalanced` exception after `unbalanced_exception_after` tries;
2. a transaction already posted with another payout, or of a type the mapping has no
   account for, parks the payout (`exception`): nothing is posted twice;
3. look the entry up in the ERP by the payout's reference *before* creating it (a crash
   after the ERP's create is therefore harmless: the next attempt adopts the entry, and
   posts it if it stayed a draft); else create and post it;
4. record the payout posted with its transactions (keyed by transaction id) in one SQL
   transaction; then, for FAILED / CANCELED, the reversal entry the same way.

`ErpUnavailable` and Shopify's transient errors are retried with backoff, never given up
(an `erp_down` exception is opened after a few attempts and closed when it posts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from adapters.erp.port import Erp, ErpError, ErpJournalEntry, JournalEntryDraft
from adapters.shopify.client import ShopifyError, ShopifyTransientError
from adapters.shopify.payments import BalanceTransaction, Payout
from availability.flows.finance import mapping
from availability.flows.finance import metrics as m
from availability.flows.finance.store import OPEN_STATES, FinanceStore, PayoutDoc
from availability.flows.machinery import Backoff, FlowQueue, OutboxMessage, now_ms

log = logging.getLogger(__name__)

FLOW = "finance"


class LeaseLost(Exception):
    """Another worker took the payout over (this one was too slow): leave it to them."""


def finance_queue(redis: Redis, prefix: str) -> FlowQueue:
    """The flow's Redis side (marks, leases, outbox, retry schedule) under `{prefix}:{finance}`,
    one group per payout."""
    return FlowQueue(redis, prefix, FLOW, member="payout")


@dataclass
class FinanceConfig:
    lease_ms: int = 120_000
    batch: int = 10
    lookback_days: int = 45
    retry_cap_s: float = 30.0
    erp_down_exception_after: int = 5
    unbalanced_exception_after: int = 3
    idle_sleep_s: float = 1.0
    poll_interval_s: float = 60.0


class FinanceFlow:
    def __init__(self, store: FinanceStore, queue: FlowQueue, erp: Erp, payments: Any, *, shop: str,
                 config: FinanceConfig | None = None, owner: str | None = None) -> None:
        self.store = store
        self.queue = queue
        self.erp = erp
        #: `adapters.shopify.payments.ShopifyPayments` (or anything with its methods)
        self.payments = payments
        self.shop = shop
        self.config = config or FinanceConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.backoff = Backoff(base=0.5, cap=self.config.retry_cap_s, max_attempts=1_000_000)
        #: payouts this worker holds a lease on right now (checked again before an ERP write)
        self._held: set[str] = set()

    # --- poll --------------------------------------------------------------------------------

    async def poll(self, *, issued_from: dt.date | None = None) -> dict[str, int]:
        """Read the recent payouts, record them, mark those with work. Returns counts."""
        since = issued_from or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=self.config.lookback_days))
        seen = await self.payments.payouts(issued_from=since)
        work = []
        for payout in seen:
            _doc, needs_work = await self.store.observe(self.shop, payout)
            if needs_work:
                work.append(payout.id)
        await self.queue.wake(*work)
        await self._gauges()
        return {"payouts": len(seen), "marked": len(work)}

    # --- worker ------------------------------------------------------------------------------

    def _message(self, payout_id: str) -> OutboxMessage:
        # The payout id is the idempotency key: a resend looks the entry up by its reference.
        return OutboxMessage(id=f"payout:{payout_id}", flow=FLOW, idempotency_key=payout_id,
                             payload={"payout_id": payout_id}, correlation_id=payout_id, created_ms=now_ms(),
                             owner=self.owner)

    async def run_once(self) -> int:
        done = 0
        for message in await self.queue.outbox.take_over(self.config.lease_ms):
            payout_id = message.payload.get("payout_id")
            if payout_id and await self.queue.leases.acquire([payout_id], self.owner, self.config.lease_ms):
                log.info("payout %s: settling again after its worker stopped", payout_id)
                self._held.add(payout_id)
                try:
                    await self.settle(payout_id, message)
                finally:
                    self._held.discard(payout_id)
                    await self.queue.leases.release([payout_id], self.owner)
                done += 1
            else:
                await self.queue.outbox.renew(message.id, 0)  # whoever holds the payout finishes it
        await self.queue.promote_due_retries()
        claimed = await self.queue.work.claim(self.owner, window_ms=None, limit=self.config.batch,
                                              lease_ms=self.config.lease_ms)
        messages = {}
        for item in claimed:  # every message first: claiming took the marks away
            messages[item.group] = self._message(item.group)
            await self.queue.outbox.put(messages[item.group], self.config.lease_ms)
        for item in claimed:
            self._held.add(item.group)
            try:
                await self.queue.leases.renew([item.group], self.owner, self.config.lease_ms)
                await self.queue.outbox.renew(messages[item.group].id, self.config.lease_ms)
                await self.settle(item.group, messages[item.group])
            finally:
                self._held.discard(item.group)
                await self.queue.leases.release([item.group], self.owner)
            done += 1
        if done:
            await self._gauges()
        return done

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll every `poll_interval_s`, work in between, until `stop` is set."""
        stop = stop or asyncio.Event()
        next_poll = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            worked = 0
            try:
                if loop.time() >= next_poll:
                    await self.poll()
                    next_poll = loop.time() + self.config.poll_interval_s
                worked = await self.run_once()
            except ShopifyError as exc:
                log.warning("finance poll failed (retrying): %s", exc)
            except Exception:  # a store/Redis hiccup must not end the worker
                log.exception("finance worker round failed")
            if not worked:
                try:
                    await asyncio.wait_for(stop.wait(), self.config.idle_sleep_s)
                except TimeoutError:
                    pass

    async def drain(self, *, timeout: float = 120.0) -> None:
        """Run rounds until nothing is marked, in the outbox or due (tests, `--once`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.run_once()
            if await self.queue.idle():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("finance flow did not drain")

    async def _gauges(self) -> None:
        counts = await self.store.counts()
        for state in OPEN_STATES + ("exception", "scheduled"):
            m.BACKLOG.labels(state).set(counts.get(state, 0))
        moving = sum(n for s, n in counts.items() if s != "scheduled")
        done = counts.get("posted", 0) + counts.get("reversed", 0)
        m.COMPLETENESS.set(done / moving if moving else 1.0)

    # --- one payout --------------------------------------------------------------------------

    async def settle(self, payout_id: str, message: OutboxMessage | None = None) -> str:
        """Bring the ERP in line with the payout; returns the payout's new state."""
        doc = await self.store.get(payout_id)
        try:
            if doc is None:
                return "unknown"
            return await self._settle(doc)
        except LeaseLost:
            log.warning("payout %s: lease lapsed mid-settle, another worker has it", payout_id)
            message = None  # the message is the new holder's now
            return doc.state
        except ErpError as exc:
            return await self._failed(doc, exc.reason, str(exc), exc.transient)
        except ShopifyTransientError as exc:
            return await self._failed(doc, "shopify_error", str(exc), True)
        except ShopifyError as exc:
            return await self._park(doc, "shopify_error", str(exc), {"payout": payout_id})
        finally:
            if message is not None:
                await self.queue.outbox.done(message.id)

    async def _settle(self, doc: PayoutDoc) -> str:
        payout = doc.payout()
        if doc.state == "scheduled" or payout.status in mapping.NOT_YET:
            return doc.state
        if doc.state in ("pending", "unbalanced", "exception"):
            state = await self._post_payout(doc, payout)
            if state != "posted":
                return state
        if payout.status in mapping.REVERSED:
            return await self._reverse(doc, payout)
        return "posted"

    async def _post_payout(self, doc: PayoutDoc, payout: Payout) -> str:
        rows: list[BalanceTransaction] = await self.payments.payout_transactions(payout)
        ref = mapping.payout_reference(self.shop, payout)
        documents = {"payout": payout.id, "reference": ref, "transactions": [t.id for t in rows]}
        try:
            draft = mapping.payout_entry(self.shop, payout, rows)
        except mapping.IncompletePayout as exc:
            attempts = await self.store.note_failure(doc.payout_id, "payout_unbalanced", str(exc))
            await self.store.transition(doc.payout_id, "unbalanced", detail=str(exc))
            if attempts >= self.config.unbalanced_exception_after:
                await self._exception(ref, "payout_unbalanced", str(exc),
                                      documents | {"expected_net": str(exc.expected), "transactions_net": str(exc.total)})
            return "unbalanced"
        except mapping.UnknownTransactionType as exc:
            return await self._park(doc, "unknown_transaction_type", str(exc), documents)
        elsewhere = await self.store.claimed_elsewhere(doc.payout_id, [t.id for t in rows])
        if elsewhere:
            detail = "; ".join(f"{t} already posted with payout {p}" for t, p in sorted(elsewhere.items()))
            return await self._park(doc, "transaction_in_two_payouts", detail, documents | {"posted_with": elsewhere})
        entry = await self._post(draft, "post", documents)
        if entry is None:
            return "exception"
        await self.store.record_posted(doc.payout_id, rows, entry.id,
                                       detail=f"ERP entry {entry.id} ({len(rows)} transactions, net {payout.net})")
        for t in rows:
            m.TRANSACTIONS.labels(t.type).inc()
        m.POSTING_LATENCY.observe(max(0, now_ms() - doc.seen_ms) / 1000)
        await self.store.close_exceptions(ref, by="flow", note="posted")
        return "posted"

    async def _reverse(self, doc: PayoutDoc, payout: Payout) -> str:
        fresh = await self.store.get(doc.payout_id)
        if fresh is not None and fresh.state == "reversed":
            return "reversed"
        draft = mapping.reversal_entry(self.shop, payout)
        entry = await self._post(draft, "reverse", {"payout": payout.id, "reference": draft.reference})
        if entry is None:
            return "exception"
        await self.store.transition(doc.payout_id, "reversed", detail=f"payout {payout.status}: reversal entry "
                                    f"{entry.id}", reversal_id=entry.id, reversed_ms=now_ms(), reason=None,
                                    last_error=None)
        await self.store.close_exceptions(draft.reference, by="flow", note="reversed")
        return "reversed"

    async def _post(self, draft: JournalEntryDraft, operation: str, documents: dict) -> ErpJournalEntry | None:
        """Find by reference, else create and post. None (and an exception) on duplicates."""
        found = await self.erp.find_journal_entries(draft.reference)
        if len(found) > 1:
            await self._exception(draft.reference, "duplicate_entry",
                                  f"{len(found)} ERP entries carry reference {draft.reference}",
                                  documents | {"erp_entries": [e.id for e in found]})
            return None
        if found:
            entry = found[0]
            if entry.state != "posted":  # created by a worker that stopped before posting it
                entry = await self.erp.confirm_journal_entry(entry.id)
                m.ERP_CALLS.labels("confirm", "ok").inc()
            log.info("%s: ERP entry %d found by reference", draft.reference, entry.id)
            return entry
        await self._still_held(documents["payout"])
        entry = await self.erp.post_journal_entry(draft)
        m.ERP_CALLS.labels(operation, "ok").inc()
        return entry

    async def _still_held(self, payout_id: str) -> None:
        """Right before an ERP write: renew the lease, or stop if another worker took the
        payout over while this one was slow (two creates would make two entries)."""
        if payout_id in self._held:
            if not await self.queue.leases.renew([payout_id], self.owner, self.config.lease_ms):
                raise LeaseLost(payout_id)
            await self.queue.outbox.renew(f"payout:{payout_id}", self.config.lease_ms)

    async def _exception(self, reference: str, reason: str, detail: str, documents: dict) -> None:
        await self.store.open_exception(reference, reason, detail, documents)
        m.EXCEPTIONS.labels(reason).inc()
        log.warning("finance %s: exception %s: %s", reference, reason, detail)

    async def _failed(self, doc: PayoutDoc, reason: str, detail: str, transient: bool) -> str:
        ref = mapping.payout_reference(self.shop, str(doc.legacy_id))
        if not transient:
            m.ERP_CALLS.labels("any", reason).inc()
            return await self._park(doc, reason, detail, {"payout": doc.payout_id, "reference": ref})
        attempts = await self.store.note_failure(doc.payout_id, reason, detail)
        delay = self.backoff.delay(attempts)
        await self.queue.schedule_retry(doc.payout_id, delay)
        m.ERP_CALLS.labels("any", "unavailable").inc()
        log.warning("payout %s: %s (attempt %d, retry in %.1fs): %s", doc.payout_id, reason, attempts, delay, detail)
        if attempts >= self.config.erp_down_exception_after:
            await self._exception(ref, reason, detail, {"payout": doc.payout_id})
        return doc.state

    async def _park(self, doc: PayoutDoc, reason: str, detail: str, documents: dict) -> str:
        await self.store.note_failure(doc.payout_id, reason, detail)
        current = await self.store.get(doc.payout_id)
        if current is not None and current.state not in ("posted", "reversed"):
            await self.store.transition(doc.payout_id, "exception", detail=f"{reason}: {detail}")
        await self._exception(documents.get("reference") or doc.payout_id, reason, detail, documents)
        return "exception"


# --- exception queue operations (CLI) ---------------------------------------------------------


async def retry_exception(store: FinanceStore, queue: FlowQueue, exception_id: int, *, by: str) -> dict:
    """Close the exception and settle its payout again (after the fix was made)."""
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    await store.close_exceptions(exc["reference"], by=by, note="retried", ids=[exception_id])
    payout_id = (exc.get("documents") or {}).get("payout")
    if payout_id:
        doc = await store.get(payout_id)
        if doc is not None and doc.state == "exception":
            await store.transition(payout_id, "pending", detail=f"retried by {by} (exception {exception_id})")
        await queue.wake(payout_id)
    return exc


async def resolve_exception(store: FinanceStore, exception_id: int, *, by: str, note: str) -> dict:
    exc = await store.get_exception(exception_id)
    if exc is None:
        raise KeyError(exception_id)
    await store.close_exceptions(exc["reference"], by=by, note=note or "resolved", ids=[exception_id])
    return exc
