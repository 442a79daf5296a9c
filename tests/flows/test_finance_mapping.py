"""The finance flow's pure parts: payout -> journal entry, and its state machine."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from adapters.shopify.payments import BalanceTransaction, Payout
from availability.flows.finance import mapping
from availability.flows.finance.store import STATES

D = Decimal


def txn(n: int, type_: str, amount: str, fee: str = "0") -> BalanceTransaction:
    a, f = D(amount), D(fee)
    return BalanceTransaction(id=f"gid://shopify/ShopifyPaymentsBalanceTransaction/{n}", type=type_,
                              processed_at="2026-12-03T10:00:00.000Z", amount=a, fee=f, net=a - f, currency="USD")


def payout(rows, status="PAID", net=None) -> Payout:
    total = sum((t.net for t in rows), D("0")) if net is None else D(net)
    return Payout(id="gid://shopify/ShopifyPaymentsPayout/77", legacy_id=77, issued_at="2026-12-03T23:59:59.000Z",
                  status=status, net=total, currency="USD")


def test_a_payout_entry_credits_clearing_debits_fees_and_bank_and_balances():
    rows = [txn(1, "CHARGE", "100.00", "3.20"), txn(2, "CHARGE", "50.00", "1.75"), txn(3, "REFUND", "-20.00"),
            txn(4, "DISPUTE_WITHDRAWAL", "-50.00", "15.00"), txn(5, "ADJUSTMENT", "-4.20"),
            txn(6, "RESERVED_FUNDS_WITHDRAWAL", "-10.00")]
    entry = mapping.payout_entry("shop", payout(rows), rows)
    assert entry.balanced and entry.reference == "shop#payout-77"
    lines = {(ln.account, ln.description.split(" (")[0]): (ln.debit, ln.credit) for ln in entry.lines}
    assert lines[(mapping.CLEARING, "charges")] == (D("0"), D("150.00"))
    assert lines[(mapping.CLEARING, "refunds")] == (D("20.00"), D("0"))  # its own line
    assert lines[(mapping.CHARGEBACK, "chargebacks")] == (D("50.00"), D("0"))
    assert lines[(mapping.CLEARING, "adjustments")] == (D("4.20"), D("0"))
    assert lines[(mapping.RESERVE, "funds held in reserve")] == (D("10.00"), D("0"))
    fees = [ln for ln in entry.lines if ln.account == mapping.FEES]
    bank = [ln for ln in entry.lines if ln.account == mapping.BANK]
    assert fees[0].debit == D("19.95") and bank[0].debit == D("45.85") == payout(rows).net


def test_a_withdrawal_credits_the_bank():
    rows = [txn(1, "CHARGE", "10.00", "0.59"), txn(2, "DISPUTE_WITHDRAWAL", "-80.00", "15.00")]
    entry = mapping.payout_entry("shop", payout(rows), rows)
    bank = next(ln for ln in entry.lines if ln.account == mapping.BANK)
    assert entry.balanced and bank.credit == D("85.59") and bank.debit == 0


def test_random_payouts_always_balance_and_match_shopifys_net():
    rng = random.Random(3)
    for _ in range(200):
        rows = [txn(i, rng.choice(list(mapping.ACCOUNT_OF)), f"{rng.randint(-9999, 9999) / 100:.2f}",
                    f"{rng.randint(0, 300) / 100:.2f}") for i in range(rng.randint(1, 30))]
        entry = mapping.payout_entry("s", payout(rows), rows)
        assert entry.balanced
        totals = mapping.payout_totals(payout(rows), rows).by_account
        assert totals.get(mapping.BANK, D("0")) == payout(rows).net


def test_an_incomplete_payout_and_an_unknown_type_are_refused():
    rows = [txn(1, "CHARGE", "10.00", "0.59")]
    with pytest.raises(mapping.IncompletePayout):
        mapping.payout_entry("s", payout(rows, net="20.00"), rows)
    with pytest.raises(mapping.UnknownTransactionType):
        mapping.payout_entry("s", payout([txn(2, "LENDING_CREDIT", "5.00")]), [txn(2, "LENDING_CREDIT", "5.00")])


def test_the_reversal_moves_the_net_back_from_bank_to_clearing():
    rows = [txn(1, "CHARGE", "10.00", "0.59")]
    rev = mapping.reversal_entry("shop", payout(rows, status="FAILED"))
    assert rev.balanced and rev.reference == "shop#payout-77-reversal"
    assert {(ln.account, ln.debit, ln.credit) for ln in rev.lines} == {
        (mapping.CLEARING, D("9.41"), D("0")), (mapping.BANK, D("0"), D("9.41"))}


def test_the_state_machine_is_closed_and_final_states_stay_final():
    assert set().union(*STATES.values()) <= set(STATES)
    assert STATES["reversed"] == {"reversed"}
    assert "scheduled" not in STATES["posted"] and "pending" not in STATES["posted"]
