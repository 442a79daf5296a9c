"""Shopify Payments in the simulator: balance transactions and payouts.

What Shopify does (shopify.md, "Payouts"; shopify.dev ``ShopifyPaymentsAccount``): every
movement of money in or out of the Shopify Payments balance is a balance transaction
(the statement of account): a ``CHARGE`` when an order is paid (amount positive, Shopify's
processing fee taken from it), a ``REFUND`` (negative), ``DISPUTE_WITHDRAWAL`` when a
chargeback takes the money back (with a chargeback fee) and ``DISPUTE_REVERSAL`` when the
dispute is won, ``ADJUSTMENT`` (with an ``adjustmentReason``), funds held back in reserve
(``RESERVED_FUNDS_WITHDRAWAL``, released by ``RESERVED_FUNDS_REVERSAL``), and when a payout
fails or is cancelled its money comes back as ``PAYOUT_FAILURE`` / ``PAYOUT_CANCELLATION``.
``net = amount - fee``. Payouts group the pending transactions and move their net to the
bank (``DEPOSIT``) or take it from the bank (``WITHDRAWAL``); a payout goes SCHEDULED ->
IN_TRANSIT -> PAID, and may end FAILED (the bank declined it, even after PAID) or CANCELED.
There is no payout webhook: apps poll ``shopifyPaymentsAccount { payouts balanceTransactions }``.

The simulator's own choices:

* fees are ``fee_percent`` of a charge plus ``fee_fixed`` (2.9 % + 0.30 USD by default,
  configurable); refunds give no fee back; a chargeback costs ``chargeback_fee`` (15.00);
* one payout per calendar day (UTC) at its end, holding every pending transaction
  processed by then (Shopify's rolling delay of a few days is left out);
* the ``query`` filters honoured: on balance transactions ``payments_transfer_id:<payout
  legacy id>``, ``processed_at`` comparisons, ``transaction_type:``, ``payout_status:``; on
  payouts ``issued_at`` comparisons and ``status:``; other terms are ignored as Shopify
  ignores unknown ones;
* a test can alter a transaction's fee behind the payout's back (``alter_fee``), the way a
  reconciliation must catch it.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from ._util import gid, now_iso

CENT = Decimal("0.01")
TRANSACTION_TYPES = (
    "CHARGE", "REFUND", "DISPUTE_WITHDRAWAL", "DISPUTE_REVERSAL", "ADJUSTMENT", "RESERVED_FUNDS_WITHDRAWAL",
    "RESERVED_FUNDS_REVERSAL", "PAYOUT_FAILURE", "PAYOUT_CANCELLATION",
)
PAYOUT_STATUSES = ("SCHEDULED", "IN_TRANSIT", "PAID", "FAILED", "CANCELED")
#: status -> statuses it may move to (FAILED after PAID: the bank returned the money)
PAYOUT_MOVES = {
    "SCHEDULED": {"IN_TRANSIT", "PAID", "FAILED", "CANCELED"},
    "IN_TRANSIT": {"PAID", "FAILED"},
    "PAID": {"FAILED"},
    "FAILED": set(),
    "CANCELED": set(),
}
_SOURCE_TYPE = {
    "CHARGE": "CHARGE", "REFUND": "REFUND", "DISPUTE_WITHDRAWAL": "DISPUTE", "DISPUTE_REVERSAL": "DISPUTE",
    "ADJUSTMENT": "ADJUSTMENT", "RESERVED_FUNDS_WITHDRAWAL": "ADJUSTMENT", "RESERVED_FUNDS_REVERSAL": "ADJUSTMENT",
    "PAYOUT_FAILURE": "TRANSFER_FAILURE", "PAYOUT_CANCELLATION": "TRANSFER_CANCEL",
}


class PaymentsRefused(Exception):
    """A payments control call the simulated account would not do (400/404/409)."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def money(value: Decimal | str | int | float) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _day_end(day: dt.date) -> str:
    return f"{day.isoformat()}T23:59:59.000Z"


@dataclass
class _Transaction:
    id: int
    type: str
    amount: Decimal
    fee: Decimal
    processed_at: str
    order_id: int | None = None
    order_name: str | None = None
    source_id: int | None = None
    adjustment_reason: str | None = None
    payout_id: int | None = None

    @property
    def net(self) -> Decimal:
        return self.amount - self.fee


@dataclass
class _Payout:
    id: int
    issued_at: str
    status: str
    transaction_ids: list[int]
    #: fixed when the payout is issued (a fee altered later makes it disagree, as it should)
    net: Decimal
    summary: dict[str, Decimal] = field(default_factory=dict)


class PaymentsAccount:
    """The shop's Shopify Payments account (one currency). Thread-safe on its own lock."""

    def __init__(self, *, currency: str = "USD", fee_percent: Decimal | str = "0.029", fee_fixed: Decimal | str = "0.30",
                 chargeback_fee: Decimal | str = "15.00") -> None:
        self.currency = currency
        self.fee_percent = Decimal(str(fee_percent))
        self.fee_fixed = money(fee_fixed)
        self.chargeback_fee = money(chargeback_fee)
        self._lock = threading.RLock()
        self._transactions: dict[int, _Transaction] = {}
        self._payouts: dict[int, _Payout] = {}
        #: order id -> its transactions (refunds and disputes look up the order's charges)
        self._by_order: dict[int, list[_Transaction]] = {}
        #: transactions not in a payout yet, oldest first
        self._pending: dict[int, _Transaction] = {}
        self._next_transaction = 9_100_001
        self._next_payout = 5_200_001
        #: where "now" comes from (the activity generator backdates a month)
        self.clock: Callable[[], str] = now_iso

    def configure(self, **values: Any) -> None:
        with self._lock:
            for name in ("fee_percent", "fee_fixed", "chargeback_fee"):
                if values.get(name) is not None:
                    setattr(self, name, Decimal(str(values[name])) if name == "fee_percent" else money(values[name]))

    # ---- money movements ----------------------------------------------------------------

    def _add(self, type_: str, amount: Decimal, fee: Decimal, **kw: Any) -> _Transaction:
        with self._lock:
            txn = _Transaction(self._next_transaction, type_, money(amount), money(fee), kw.pop("at", None) or self.clock(), **kw)
            self._next_transaction += 1
            self._transactions[txn.id] = txn
            self._pending[txn.id] = txn
            if txn.order_id is not None:
                self._by_order.setdefault(txn.order_id, []).append(txn)
            return txn

    def charge(self, order_id: int, order_name: str, amount: Decimal | str, at: str | None = None) -> _Transaction:
        """An order paid through Shopify Payments: the CHARGE and its processing fee."""
        gross = money(amount)
        if gross <= 0:
            raise PaymentsRefused("INVALID_AMOUNT", "a charge is positive", 400)
        fee = money(gross * self.fee_percent + self.fee_fixed)
        return self._add("CHARGE", gross, fee, at=at, order_id=order_id, order_name=order_name, source_id=order_id)

    def _charged(self, order_id: int) -> Decimal:
        return sum((t.amount for t in self._by_order.get(order_id, ()) if t.type == "CHARGE"), Decimal("0"))

    def _refunded(self, order_id: int) -> Decimal:
        return -sum((t.amount for t in self._by_order.get(order_id, ()) if t.type == "REFUND"), Decimal("0"))

    def _order_name(self, order_id: int) -> str | None:
        return next((t.order_name for t in self._by_order.get(order_id, ())), None)

    def refund(self, order_id: int, amount: Decimal | str, at: str | None = None) -> _Transaction:
        """Money back to the shopper (no fee returned); never more than was charged."""
        with self._lock:
            value = money(amount)
            left = self._charged(order_id) - self._refunded(order_id)
            if value <= 0 or value > left:
                raise PaymentsRefused("INVALID_AMOUNT", f"refund {value} of order {order_id}: {left} is refundable", 400)
            name = self._order_name(order_id)
            return self._add("REFUND", -value, Decimal("0"), at=at, order_id=order_id, order_name=name,
                             source_id=order_id)

    def refund_rest(self, order_id: int, at: str | None = None) -> _Transaction | None:
        """Refund what is left of the order's charges (a cancelled order); None when nothing is."""
        with self._lock:
            left = self._charged(order_id) - self._refunded(order_id)
            return self.refund(order_id, left, at=at) if left > 0 else None

    def dispute(self, order_id: int, amount: Decimal | str | None = None, at: str | None = None) -> _Transaction:
        """A chargeback: the amount is withdrawn and the chargeback fee charged."""
        with self._lock:
            value = money(amount) if amount is not None else self._charged(order_id)
            if value <= 0:
                raise PaymentsRefused("INVALID_ORDER", f"order {order_id} has no charge to dispute", 400)
            name = self._order_name(order_id)
            return self._add("DISPUTE_WITHDRAWAL", -value, self.chargeback_fee, at=at, order_id=order_id,
                             order_name=name, source_id=order_id)

    def dispute_won(self, dispute_id: int, at: str | None = None) -> _Transaction:
        with self._lock:
            d = self._transactions.get(dispute_id)
            if d is None or d.type != "DISPUTE_WITHDRAWAL":
                raise PaymentsRefused("INVALID_DISPUTE", f"no dispute {dispute_id}", 404)
            return self._add("DISPUTE_REVERSAL", -d.amount, Decimal("0"), at=at, order_id=d.order_id,
                             order_name=d.order_name, source_id=d.id)

    def adjust(self, amount: Decimal | str, reason: str = "adjustment", at: str | None = None) -> _Transaction:
        return self._add("ADJUSTMENT", money(amount), Decimal("0"), at=at, adjustment_reason=reason)

    def reserve(self, amount: Decimal | str, at: str | None = None) -> _Transaction:
        """Funds held back (negative); `release` gives them back."""
        return self._add("RESERVED_FUNDS_WITHDRAWAL", -money(amount), Decimal("0"), at=at,
                         adjustment_reason="reserved_funds")

    def release(self, reserve_id: int, at: str | None = None) -> _Transaction:
        with self._lock:
            r = self._transactions.get(reserve_id)
            if r is None or r.type != "RESERVED_FUNDS_WITHDRAWAL":
                raise PaymentsRefused("INVALID_RESERVE", f"no reserve {reserve_id}", 404)
            return self._add("RESERVED_FUNDS_REVERSAL", -r.amount, Decimal("0"), at=at, source_id=r.id,
                             adjustment_reason="reserved_funds")

    def alter_fee(self, transaction_id: int, fee: Decimal | str) -> None:
        """Change a transaction's fee after the fact (tests: reconciliation must catch it)."""
        with self._lock:
            txn = self._transactions.get(transaction_id)
            if txn is None:
                raise PaymentsRefused("INVALID_TRANSACTION", f"no transaction {transaction_id}", 404)
            txn.fee = money(fee)

    # ---- payouts ----------------------------------------------------------------------

    def issue_payout(self, day: dt.date) -> _Payout | None:
        """The payout of ``day``: every pending transaction processed by its end (None
        when there is none)."""
        cutoff = _day_end(day)
        with self._lock:
            pending = [t for t in self._pending.values() if t.processed_at <= cutoff]
            if not pending:
                return None
            payout = _Payout(self._next_payout, cutoff, "SCHEDULED", [t.id for t in pending],
                             sum((t.net for t in pending), Decimal("0")), _summary(pending))
            self._next_payout += 1
            for t in pending:
                t.payout_id = payout.id
                del self._pending[t.id]
            self._payouts[payout.id] = payout
            return payout

    def set_payout_status(self, payout_id: int, status: str, at: str | None = None) -> _Payout:
        """Move a payout on; FAILED and CANCELED bring its net back into the balance as a
        pending transaction (paid out again by a later payout)."""
        with self._lock:
            payout = self._payouts.get(payout_id)
            if payout is None:
                raise PaymentsRefused("INVALID_PAYOUT", f"no payout {payout_id}", 404)
            if status not in PAYOUT_STATUSES:
                raise PaymentsRefused("INVALID_STATUS", f"status is one of {PAYOUT_STATUSES}", 400)
            if status == payout.status:
                return payout
            if status not in PAYOUT_MOVES[payout.status]:
                raise PaymentsRefused("INVALID_TRANSITION", f"payout {payout_id} is {payout.status}, not -> {status}")
            payout.status = status
            if status in ("FAILED", "CANCELED"):
                kind = "PAYOUT_FAILURE" if status == "FAILED" else "PAYOUT_CANCELLATION"
                self._add(kind, payout.net, Decimal("0"), at=at, source_id=payout.id)
            return payout

    # ---- reads ------------------------------------------------------------------------

    def transaction_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._transactions)

    def payout_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._payouts)

    def transaction(self, transaction_id: int) -> _Transaction | None:
        with self._lock:
            return self._transactions.get(transaction_id)

    def payout(self, payout_id: int) -> _Payout | None:
        with self._lock:
            return self._payouts.get(payout_id)

    def _money(self, value: Decimal) -> dict[str, Any]:
        return {"amount": str(money(value)), "currencyCode": self.currency}

    def transaction_node(self, transaction_id: int) -> dict[str, Any] | None:
        with self._lock:
            t = self._transactions.get(transaction_id)
            if t is None:
                return None
            payout = self._payouts.get(t.payout_id) if t.payout_id else None
            return {
                "__typename": "ShopifyPaymentsBalanceTransaction",
                "id": gid("ShopifyPaymentsBalanceTransaction", t.id),
                "type": t.type,
                "test": False,
                "amount": self._money(t.amount),
                "fee": self._money(t.fee),
                "net": self._money(t.net),
                "transactionDate": t.processed_at,
                "sourceType": _SOURCE_TYPE[t.type],
                "sourceId": t.source_id,
                "sourceOrderTransactionId": t.id if t.type in ("CHARGE", "REFUND") else None,
                "adjustmentReason": t.adjustment_reason,
                "associatedOrder": {"id": gid("Order", t.order_id), "name": t.order_name} if t.order_id else None,
                "associatedPayout": {"id": gid("ShopifyPaymentsPayout", payout.id) if payout else None,
                                     "status": payout.status if payout else "PENDING"},
            }

    def payout_node(self, payout_id: int) -> dict[str, Any] | None:
        with self._lock:
            p = self._payouts.get(payout_id)
            if p is None:
                return None
            return {
                "__typename": "ShopifyPaymentsPayout",
                "id": gid("ShopifyPaymentsPayout", p.id),
                "legacyResourceId": p.id,
                "issuedAt": p.issued_at,
                "net": self._money(p.net),
                "status": p.status,
                "transactionType": "DEPOSIT" if p.net >= 0 else "WITHDRAWAL",
                "summary": {k: self._money(v) for k, v in p.summary.items()},
            }

    def balance(self) -> Decimal:
        with self._lock:
            return sum((t.net for t in self._pending.values()), Decimal("0"))

    def account_node(self) -> dict[str, Any]:
        return {"__typename": "ShopifyPaymentsAccount", "id": gid("ShopifyPaymentsAccount", 1), "activated": True,
                "defaultCurrency": self.currency, "balance": [self._money(self.balance())]}


def _summary(transactions: list[_Transaction]) -> dict[str, Decimal]:
    """``ShopifyPaymentsPayoutSummary``: gross and fee per kind of transaction."""
    groups = {"charges": ("CHARGE",), "refunds": ("REFUND",),
              "adjustments": ("ADJUSTMENT", "DISPUTE_WITHDRAWAL", "DISPUTE_REVERSAL"),
              "reservedFunds": ("RESERVED_FUNDS_WITHDRAWAL", "RESERVED_FUNDS_REVERSAL"),
              "retriedPayouts": ("PAYOUT_FAILURE", "PAYOUT_CANCELLATION")}
    out: dict[str, Decimal] = {}
    for name, types in groups.items():
        picked = [t for t in transactions if t.type in types]
        gross_key = "refundsFeeGross" if name == "refunds" else f"{name}Gross"
        out[gross_key] = sum((t.amount for t in picked), Decimal("0"))
        out[f"{name}Fee"] = sum((t.fee for t in picked), Decimal("0"))
    return out


# ---- a month of activity, quickly ------------------------------------------------------------


def generate_activity(state: Any, start: dt.date, days: int, *, orders_per_day: int = 2, max_quantity: int = 3,
                      refund_every: int = 4, dispute_on: int | None = 6, reserve_on: int | None = 3,
                      adjust_on: int | None = 8, fail_payout_on: int | None = 10, settle_lag_days: int = 2,
                      seed: int = 7) -> dict[str, Any]:
    """Simulate ``days`` days of a shop from ``start``: ``orders_per_day`` checkouts a day
    (orders and their CHARGEs backdated to that day), a partial refund every
    ``refund_every``-th order, a chargeback, a reserve held and released, an adjustment,
    one payout a day at its end; payouts older than ``settle_lag_days`` are PAID, the
    previous day's IN_TRANSIT, the last one SCHEDULED; the payout of day
    ``fail_payout_on`` (0-based) fails the next day. Needs stocked items (``seed_catalog``).
    Returns what was made (orders, transactions by type, payouts by status)."""
    rng = random.Random(seed)
    account: PaymentsAccount = state.payments
    made: dict[str, Any] = {"orders": [], "refunds": [], "payouts": [], "transactions": {}}
    reserve_id = None
    order_count = 0
    saved_clock = account.clock
    try:
        for i in range(days):
            day = start + dt.timedelta(days=i)
            for k in range(orders_per_day):
                stamp = f"{day.isoformat()}T{8 + (k * 9 // max(1, orders_per_day)) % 14:02d}:{rng.randint(0, 59):02d}:00.000Z"
                account.clock = lambda stamp=stamp: stamp
                with state.lock:
                    items = sorted(state._levels_by_item)
                    if not items:
                        raise PaymentsRefused("NO_CATALOGUE", "seed the catalogue before generating activity", 400)
                    item = rng.choice(items)
                try:
                    body, _events = state.checkout([{"inventory_item_id": item, "quantity": rng.randint(1, max_quantity)}],
                                                   backdate=stamp)
                except Exception:  # a refused checkout (nothing left) is just no sale
                    continue
                order_count += 1
                made["orders"].append(body)
                if refund_every and order_count % refund_every == 0:
                    amount = money(Decimal(body["total_price"]) * Decimal("0.3"))
                    txn = account.refund(body["id"], amount, at=stamp.replace(":00.000Z", ":30.000Z"))
                    made["refunds"].append({"order_id": body["id"], "order_name": body["name"], "amount": str(amount),
                                            "day": day.isoformat(), "transaction_id": txn.id})
            noon = f"{day.isoformat()}T12:00:00.000Z"
            if dispute_on is not None and i == dispute_on and made["orders"]:
                account.dispute(made["orders"][0]["id"], at=noon)
            if reserve_on is not None and i == reserve_on:
                reserve_id = account.reserve("50.00", at=noon).id
            if reserve_on is not None and reserve_id and i == reserve_on + 7:
                account.release(reserve_id, at=noon)
            if adjust_on is not None and i == adjust_on:
                account.adjust("-4.20", "billing_correction", at=noon)
            # yesterday's payout fails this morning (before today's payout is issued)
            if fail_payout_on is not None and i == fail_payout_on + 1 and made["payouts"]:
                failed = next((p for p in made["payouts"] if p["day"] == (day - dt.timedelta(days=1)).isoformat()), None)
                if failed:
                    account.set_payout_status(failed["id"], "FAILED", at=f"{day.isoformat()}T07:00:00.000Z")
            payout = account.issue_payout(day)
            if payout is not None:
                made["payouts"].append({"id": payout.id, "day": day.isoformat()})
            for p in made["payouts"]:
                node = account.payout(p["id"])
                age = (day - dt.date.fromisoformat(p["day"])).days
                if node.status in ("SCHEDULED", "IN_TRANSIT") and age >= settle_lag_days:
                    account.set_payout_status(p["id"], "PAID")
                elif node.status == "SCHEDULED" and age >= 1:
                    account.set_payout_status(p["id"], "IN_TRANSIT")
    finally:
        account.clock = saved_clock
    for tid in account.transaction_ids():
        t = account.transaction(tid)
        made["transactions"][t.type] = made["transactions"].get(t.type, 0) + 1
    made["payout_status"] = {}
    for p in made["payouts"]:
        status = account.payout(p["id"]).status
        p["status"] = status
        made["payout_status"][status] = made["payout_status"].get(status, 0) + 1
    made["transaction_count"] = len(account.transaction_ids())
    return made


# ---- GraphQL ---------------------------------------------------------------------------------

SDL = '''
# CurrencyCode and MoneyV2: defined with refunds (refunds.py), shared by every money field

enum ShopifyPaymentsTransactionType { %s }
enum ShopifyPaymentsSourceType { ADJUSTMENT CHARGE DISPUTE REFUND TRANSFER TRANSFER_FAILURE TRANSFER_CANCEL }
enum ShopifyPaymentsBalanceTransactionPayoutStatus { ACTION_REQUIRED CANCELED FAILED PAID PENDING SCHEDULED IN_TRANSIT }
enum ShopifyPaymentsPayoutStatus { %s }
enum ShopifyPaymentsPayoutTransactionType { DEPOSIT WITHDRAWAL }
enum BalanceTransactionSortKeys { AMOUNT FEE ID NET PAYOUT_DATE PAYOUT_STATUS PROCESSED_AT TRANSACTION_TYPE }
enum PayoutSortKeys { AMOUNT ID ISSUED_AT PAYOUT_DATE STATUS }

type ShopifyPaymentsAssociatedOrder { id: ID! name: String! }
type ShopifyPaymentsBalanceTransactionAssociatedPayout { id: ID status: ShopifyPaymentsBalanceTransactionPayoutStatus }

type ShopifyPaymentsBalanceTransaction implements Node {
  id: ID!
  type: ShopifyPaymentsTransactionType!
  test: Boolean!
  amount: MoneyV2!
  fee: MoneyV2!
  net: MoneyV2!
  transactionDate: DateTime!
  sourceType: ShopifyPaymentsSourceType
  sourceId: UnsignedInt64
  sourceOrderTransactionId: UnsignedInt64
  adjustmentReason: String
  associatedOrder: ShopifyPaymentsAssociatedOrder
  associatedPayout: ShopifyPaymentsBalanceTransactionAssociatedPayout!
}
type ShopifyPaymentsBalanceTransactionEdge { cursor: String! node: ShopifyPaymentsBalanceTransaction! }
type ShopifyPaymentsBalanceTransactionConnection { edges: [ShopifyPaymentsBalanceTransactionEdge!]! nodes: [ShopifyPaymentsBalanceTransaction!]! pageInfo: PageInfo! }

type ShopifyPaymentsPayoutSummary {
  adjustmentsFee: MoneyV2! adjustmentsGross: MoneyV2!
  chargesFee: MoneyV2! chargesGross: MoneyV2!
  refundsFee: MoneyV2! refundsFeeGross: MoneyV2!
  reservedFundsFee: MoneyV2! reservedFundsGross: MoneyV2!
  retriedPayoutsFee: MoneyV2! retriedPayoutsGross: MoneyV2!
}
type ShopifyPaymentsPayout implements Node {
  id: ID!
  legacyResourceId: UnsignedInt64!
  issuedAt: DateTime!
  net: MoneyV2!
  status: ShopifyPaymentsPayoutStatus!
  transactionType: ShopifyPaymentsPayoutTransactionType!
  summary: ShopifyPaymentsPayoutSummary!
}
type ShopifyPaymentsPayoutEdge { cursor: String! node: ShopifyPaymentsPayout! }
type ShopifyPaymentsPayoutConnection { edges: [ShopifyPaymentsPayoutEdge!]! nodes: [ShopifyPaymentsPayout!]! pageInfo: PageInfo! }

type ShopifyPaymentsAccount implements Node {
  id: ID!
  activated: Boolean!
  defaultCurrency: CurrencyCode!
  balance: [MoneyV2!]!
  balanceTransactions(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String, sortKey: BalanceTransactionSortKeys = ID, hideTransfers: Boolean = false): ShopifyPaymentsBalanceTransactionConnection!
  payouts(first: Int, after: String, last: Int, before: String, reverse: Boolean = false, query: String, sortKey: PayoutSortKeys = ID): ShopifyPaymentsPayoutConnection!
}
''' % (" ".join(TRANSACTION_TYPES), " ".join(PAYOUT_STATUSES))

_CMP = {">": str.__gt__, ">=": str.__ge__, "<": str.__lt__, "<=": str.__le__, "": str.__eq__}
_DATE_TERM = r"\b{name}:(>=|<=|>|<)?'?\"?([0-9T:.\-Z+]+)'?\"?"


def _date_filter(ids: list[int], stamp_of: Callable[[int], str], query: str, term: str) -> list[int]:
    for op, value in re.findall(_DATE_TERM.format(name=term), query):
        # a bare date compares with the date part, as Shopify's search does
        width = len(value) if "T" in value else 10
        ids = [i for i in ids if _CMP[op](stamp_of(i)[:width], value)]
    return ids


def _transactions_connection(state: Any, args: dict[str, Any]) -> dict[str, Any]:
    from .gql import connection  # late: gql imports this module

    account: PaymentsAccount = state.payments
    query = args.get("query") or ""
    ids = account.transaction_ids()
    m = re.search(r"\bpayments_transfer_id:(\d+)", query)
    if m:
        payout = account.payout(int(m.group(1)))
        ids = sorted(payout.transaction_ids) if payout else []
    # filters read the stored transactions; only the page's nodes are built
    txn = account._transactions
    ids = _date_filter(ids, lambda i: txn[i].processed_at, query, "processed_at")
    m = re.search(r"\btransaction_type:(\w+)", query)
    if m:
        ids = [i for i in ids if txn[i].type == m.group(1).upper()]
    m = re.search(r"\bpayout_status:(\w+)", query)
    if m:
        want = m.group(1).upper()
        ids = [i for i in ids if (account._payouts[txn[i].payout_id].status if txn[i].payout_id else "PENDING") == want]
    return connection(ids, account.transaction_node, args)


def _payouts_connection(state: Any, args: dict[str, Any]) -> dict[str, Any]:
    from .gql import connection  # late: gql imports this module

    account: PaymentsAccount = state.payments
    query = args.get("query") or ""
    ids = account.payout_ids()
    ids = _date_filter(ids, lambda i: account._payouts[i].issued_at, query, "issued_at")
    m = re.search(r"\bstatus:(\w+)", query)
    if m:
        ids = [i for i in ids if account._payouts[i].status == m.group(1).upper()]
    return connection(ids, account.payout_node, args)


RESOLVERS: dict[tuple[str, str], Callable[[Any, Any, dict[str, Any]], Any]] = {
    ("Query", "shopifyPaymentsAccount"): lambda s, p, a: s.payments.account_node(),
    ("ShopifyPaymentsAccount", "balanceTransactions"): lambda s, p, a: _transactions_connection(s, a),
    ("ShopifyPaymentsAccount", "payouts"): lambda s, p, a: _payouts_connection(s, a),
}


def node(state: Any, type_name: str, n: int) -> dict[str, Any] | None:
    """``node(id:)`` for the payments types."""
    if type_name == "ShopifyPaymentsPayout":
        return state.payments.payout_node(n)
    if type_name == "ShopifyPaymentsBalanceTransaction":
        return state.payments.transaction_node(n)
    return None


# ---- control endpoints (simulator only) --------------------------------------------------------


def _answer(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type="application/json")


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    value = msgspec.json.decode(raw) if raw else {}
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object")
    return value


@post("/_sim/payments/generate", status_code=200)
async def sim_payments_generate(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Body: ``{"start": "YYYY-MM-DD", "days": 30, "orders_per_day": 2, ...}`` (the keyword
    arguments of :func:`generate_activity`). Answers a summary (not every order)."""
    state = request.app.state.sim
    try:
        body = await _body(request)
        start = dt.date.fromisoformat(body.pop("start"))
        days = int(body.pop("days", 30))
        made = generate_activity(state, start, days, **body)
    except PaymentsRefused as exc:
        return _answer({"error": exc.message, "code": exc.code}, exc.status)
    except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
        return _answer({"error": f"bad request: {exc}", "code": "INVALID"}, 400)
    return _answer({k: v for k, v in made.items() if k != "orders"} | {"orders": len(made["orders"])})


@post("/_sim/payments/payouts/{payout_id:int}/status", status_code=200)
async def sim_payout_status(request: Request[Any, Any, Any], payout_id: FromPath[int]) -> Response[bytes]:
    try:
        body = await _body(request)
        payout = request.app.state.sim.payments.set_payout_status(payout_id, str(body.get("status", "")).upper())
    except PaymentsRefused as exc:
        return _answer({"error": exc.message, "code": exc.code}, exc.status)
    except (ValueError, msgspec.DecodeError) as exc:
        return _answer({"error": f"bad request: {exc}", "code": "INVALID"}, 400)
    return _answer({"id": payout.id, "status": payout.status})


@post("/_sim/payments/transactions/{transaction_id:int}/fee", status_code=200)
async def sim_alter_fee(request: Request[Any, Any, Any], transaction_id: FromPath[int]) -> Response[bytes]:
    try:
        body = await _body(request)
        request.app.state.sim.payments.alter_fee(transaction_id, body["fee"])
    except PaymentsRefused as exc:
        return _answer({"error": exc.message, "code": exc.code}, exc.status)
    except (KeyError, ValueError, ArithmeticError, msgspec.DecodeError) as exc:
        return _answer({"error": f"bad request: {exc}", "code": "INVALID"}, 400)
    return _answer({"id": transaction_id, "fee": str(body["fee"])})


@get("/_sim/payments/config")
async def sim_payments_config(request: Request[Any, Any, Any]) -> Response[bytes]:
    a: PaymentsAccount = request.app.state.sim.payments
    return _answer({"fee_percent": str(a.fee_percent), "fee_fixed": str(a.fee_fixed),
                    "chargeback_fee": str(a.chargeback_fee), "currency": a.currency})


@post("/_sim/payments/config", status_code=200)
async def sim_payments_configure(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        request.app.state.sim.payments.configure(**await _body(request))
    except (TypeError, ValueError, ArithmeticError, msgspec.DecodeError) as exc:
        return _answer({"error": f"bad request: {exc}", "code": "INVALID"}, 400)
    return await sim_payments_config.fn(request)


ROUTES = [sim_payments_generate, sim_payout_status, sim_alter_fee, sim_payments_config, sim_payments_configure]
