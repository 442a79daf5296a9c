"""From a Shopify payout and its balance transactions to journal entries (pure, no I/O).

The payout entry (dated the payout's issue day):

- each kind of transaction is its own line on its account, the sum of its `amount`s
  (positive: money into the Shopify balance, credited; negative: debited):
  CHARGE and REFUND on the clearing account (captured sales wait there for their
  payout), chargebacks on the chargeback account, reserves on the reserve account,
  adjustments and failed / cancelled payouts coming back on the clearing account;
- all fees, one line debited to the fees expense account;
- the payout's net debited to the bank (credited when Shopify takes money: a withdrawal).

Amounts are the payout's own, in its currency (the shop's settlement currency): the entry
says so (`currency`) and the ERP books it in its company currency at its rate, keeping
these beside (adapters/erp/tryton/journal.py).

It balances by construction: bank = sum(amount) - sum(fee), which is also Shopify's
payout net when the payout is complete (`check_complete`). A FAILED or CANCELED payout
never reached the bank: its reversal entry moves the net back from the bank to the
clearing account, where the PAYOUT_FAILURE / PAYOUT_CANCELLATION transaction of a later
payout clears it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from adapters.erp.port import JournalEntryDraft, JournalLine
from adapters.shopify.payments import BalanceTransaction, Payout

ZERO = Decimal("0")
CLEARING, BANK, FEES, CHARGEBACK, RESERVE = "SP-CLEARING", "SP-BANK", "SP-FEES", "SP-CHARGEBACK", "SP-RESERVE"

#: transaction type -> (account, line label); the order is the order of the lines
ACCOUNT_OF = {
    "CHARGE": (CLEARING, "charges"),
    "REFUND": (CLEARING, "refunds"),
    "DISPUTE_WITHDRAWAL": (CHARGEBACK, "chargebacks"),
    "DISPUTE_REVERSAL": (CHARGEBACK, "chargebacks won"),
    "ADJUSTMENT": (CLEARING, "adjustments"),
    "RESERVED_FUNDS_WITHDRAWAL": (RESERVE, "funds held in reserve"),
    "RESERVED_FUNDS_REVERSAL": (RESERVE, "reserve released"),
    "PAYOUT_FAILURE": (CLEARING, "failed payout returned"),
    "PAYOUT_CANCELLATION": (CLEARING, "cancelled payout returned"),
}
#: payouts that do not move money yet, and those whose money never reached the bank
NOT_YET = ("SCHEDULED",)
REVERSED = ("FAILED", "CANCELED")


class UnknownTransactionType(ValueError):
    """A balance transaction type this mapping has no account for (Shopify added one)."""


class IncompletePayout(ValueError):
    """The payout's transactions do not add up to its net (some are missing or changed)."""

    def __init__(self, payout: Payout, total: Decimal, count: int) -> None:
        super().__init__(f"payout {payout.id}: net {payout.net} but its {count} transaction(s) add up to {total}")
        self.expected = payout.net
        self.total = total


def payout_reference(shop: str, payout: Payout | str) -> str:
    return f"{shop}#payout-{payout if isinstance(payout, str) else payout.legacy_id}"


def reversal_reference(shop: str, payout: Payout | str) -> str:
    return f"{shop}#payout-{payout if isinstance(payout, str) else payout.legacy_id}-reversal"


def _line(account: str, signed: Decimal, label: str) -> JournalLine | None:
    """`signed` > 0 is a debit."""
    if signed == 0:
        return None
    return JournalLine(account=account, debit=signed if signed > 0 else ZERO, credit=-signed if signed < 0 else ZERO,
                       description=label)


def check_complete(payout: Payout, transactions: Iterable[BalanceTransaction]) -> None:
    rows = list(transactions)
    total = sum((t.net for t in rows), ZERO)
    if total != payout.net:
        raise IncompletePayout(payout, total, len(rows))


@dataclass(frozen=True, slots=True)
class Totals:
    """What a payout's transactions say each account must move (debit - credit)."""

    by_account: dict[str, Decimal]
    lines: tuple[JournalLine, ...]


def payout_totals(payout: Payout, transactions: Iterable[BalanceTransaction]) -> Totals:
    groups: dict[str, tuple[int, Decimal]] = {}
    fees = ZERO
    net = ZERO
    for t in transactions:
        if t.type not in ACCOUNT_OF:
            raise UnknownTransactionType(f"balance transaction {t.id} has type {t.type!r}, which has no account")
        count, amount = groups.get(t.type, (0, ZERO))
        groups[t.type] = (count + 1, amount + t.amount)
        fees += t.fee
        net += t.net
    lines: list[JournalLine] = []
    for kind, (account, label) in ACCOUNT_OF.items():
        if kind in groups:
            count, amount = groups[kind]
            line = _line(account, -amount, f"{label} ({count} x {kind}) payout {payout.legacy_id}")
            if line:
                lines.append(line)
    for line in (_line(FEES, fees, f"Shopify Payments fees, payout {payout.legacy_id}"),
                 _line(BANK, net, f"payout {payout.legacy_id} to the bank ({payout.status})")):
        if line:
            lines.append(line)
    by_account: dict[str, Decimal] = {}
    for ln in lines:
        by_account[ln.account] = by_account.get(ln.account, ZERO) + ln.debit - ln.credit
    return Totals({k: v for k, v in by_account.items() if v != 0}, tuple(lines))


def payout_entry(shop: str, payout: Payout, transactions: Iterable[BalanceTransaction]) -> JournalEntryDraft:
    rows = list(transactions)
    check_complete(payout, rows)
    totals = payout_totals(payout, rows)
    return JournalEntryDraft(reference=payout_reference(shop, payout), date=payout.day, lines=totals.lines,
                             description=f"Shopify payout {payout.legacy_id} ({len(rows)} transactions)",
                             currency=payout.currency)


def reversal_entry(shop: str, payout: Payout, day=None) -> JournalEntryDraft:
    """The bank line of a payout that never arrived, moved back to clearing."""
    label = f"payout {payout.legacy_id} {payout.status.lower()}: back in the Shopify balance"
    lines = tuple(ln for ln in (_line(CLEARING, payout.net, label), _line(BANK, -payout.net, label)) if ln)
    return JournalEntryDraft(reference=reversal_reference(shop, payout), date=day or payout.day, lines=lines,
                             description=label, currency=payout.currency)


def reversal_totals(payout: Payout) -> dict[str, Decimal]:
    return {k: v for k, v in ((CLEARING, payout.net), (BANK, -payout.net)) if v != 0}
