"""Reading Shopify Payments: payouts and their balance transactions (the statement of account).

There is no payout webhook (shopify.md, "Payouts"): the finance flow polls
`shopifyPaymentsAccount { payouts balanceTransactions }` page by page. Amounts are
`MoneyV2` in shop currency; they are returned here as `Decimal`. Needs the
`shopify_payments_payouts` scope. Errors are the client's (`ShopifyTransientError` is
worth retrying, the others are not).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec

from adapters.shopify.client import ShopifyAdminClient
from adapters.shopify.gid import parse_gid

#: one page: 2 + first x (1 + 5 objects) points, under the 1,000-point query cap
TRANSACTIONS_PAGE = 100
PAYOUTS_PAGE = 50

_PAYOUTS = """
query Payouts($first: Int!, $after: String, $query: String) {
  shopifyPaymentsAccount {
    payouts(first: $first, after: $after, query: $query) {
      nodes { id legacyResourceId issuedAt status transactionType net { amount currencyCode } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""

_TRANSACTIONS = """
query BalanceTransactions($first: Int!, $after: String, $query: String) {
  shopifyPaymentsAccount {
    balanceTransactions(first: $first, after: $after, query: $query) {
      nodes {
        id type transactionDate adjustmentReason sourceType
        amount { amount currencyCode } fee { amount } net { amount }
        associatedOrder { id name }
        associatedPayout { id status }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


class Payout(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    legacy_id: int
    issued_at: str
    status: str
    net: Decimal
    currency: str

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.issued_at[:10])


class BalanceTransaction(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    processed_at: str
    amount: Decimal
    fee: Decimal
    net: Decimal
    currency: str
    order_id: str | None = None
    order_name: str | None = None
    payout_id: str | None = None
    payout_status: str | None = None
    adjustment_reason: str | None = None

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.processed_at[:10])


def _payout(node: dict[str, Any]) -> Payout:
    return Payout(id=node["id"], legacy_id=int(node.get("legacyResourceId") or parse_gid(node["id"])[1]),
                  issued_at=node["issuedAt"], status=node["status"], net=Decimal(node["net"]["amount"]),
                  currency=node["net"]["currencyCode"])


def _transaction(node: dict[str, Any]) -> BalanceTransaction:
    order = node.get("associatedOrder") or {}
    payout = node.get("associatedPayout") or {}
    return BalanceTransaction(
        id=node["id"], type=node["type"], processed_at=node["transactionDate"],
        amount=Decimal(node["amount"]["amount"]), fee=Decimal(node["fee"]["amount"]),
        net=Decimal(node["net"]["amount"]), currency=node["amount"]["currencyCode"],
        order_id=order.get("id"), order_name=order.get("name"), payout_id=payout.get("id"),
        payout_status=payout.get("status"), adjustment_reason=node.get("adjustmentReason"))


class ShopifyPayments:
    """The finance flow's view of Shopify Payments (any object with these three methods
    will do: the tests and the benchmark use this one against the simulator)."""

    def __init__(self, client: ShopifyAdminClient) -> None:
        self.client = client

    async def _pages(self, document: str, field: str, query: str | None, first: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = None
        while True:
            reply = await self.client.execute(document, {"first": first, "after": after, "query": query},
                                              estimated_cost=2 + first * 6)
            conn = reply.data["shopifyPaymentsAccount"][field]
            out.extend(conn["nodes"])
            if not conn["pageInfo"]["hasNextPage"]:
                return out
            after = conn["pageInfo"]["endCursor"]

    async def payouts(self, *, issued_from: dt.date | None = None, issued_to: dt.date | None = None) -> list[Payout]:
        """Payouts issued in [issued_from, issued_to] (days, inclusive), oldest first."""
        terms = []
        if issued_from:
            terms.append(f"issued_at:>={issued_from.isoformat()}")
        if issued_to:
            terms.append(f"issued_at:<={issued_to.isoformat()}")
        nodes = await self._pages(_PAYOUTS, "payouts", " ".join(terms) or None, PAYOUTS_PAGE)
        return [_payout(n) for n in nodes]

    async def payout_transactions(self, payout: Payout) -> list[BalanceTransaction]:
        nodes = await self._pages(_TRANSACTIONS, "balanceTransactions", f"payments_transfer_id:{payout.legacy_id}",
                                  TRANSACTIONS_PAGE)
        return [_transaction(n) for n in nodes]

    async def transactions_of_day(self, day: dt.date) -> list[BalanceTransaction]:
        """Balance transactions processed on `day` (UTC), whatever their payout."""
        query = f"processed_at:>={day.isoformat()} processed_at:<={day.isoformat()}"
        nodes = await self._pages(_TRANSACTIONS, "balanceTransactions", query, TRANSACTIONS_PAGE)
        return [_transaction(n) for n in nodes]
