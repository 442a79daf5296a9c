"""The day's finance reconciliation, the one a finance team signs.

For day D (UTC), from Shopify's own statement of account and the ERP's books:

1. **payouts issued on D**: each payout's net = the sum of its balance transactions'
   nets (Shopify against itself: a fee changed behind a payout shows here); a payout
   that moves money has exactly one posted ERP entry whose amount on every account is what
   its transactions say now (a fee altered on either side shows here); a FAILED or
   CANCELED payout also has its reversal;
2. **captured payments**: the CHARGEs processed on D = the ERP's sales of D invoiced
   (confirmed; invoices on order);
3. **refunds**: the REFUNDs processed on D = the ERP's credit notes of D.

Each mismatch is a `flow_exceptions` row (flow and owner finance) carrying the documents
involved (payout, transactions, ERP entry, orders / sales, credit notes), and the report
counts it as drift (the CLI exits 1).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.erp.port import Erp
from availability.flows.finance import mapping
from availability.flows.finance.store import FinanceStore

ZERO = Decimal("0")
#: ERP sale states that mean "invoiced" (Tryton creates the invoice on confirmation)
INVOICED_STATES = ("confirmed", "processing", "done")


@dataclass(frozen=True, slots=True)
class CreditNote:
    id: int
    reference: str
    #: positive: what the customer got back
    amount: Decimal


async def credit_notes_of_day(erp: Erp, shop: str, day: dt.date) -> list[CreditNote]:
    """The ERP's credit notes of the shop dated `day`, through the port the refund flow posts
    them with (`list_credit_notes`; references `<shop>#refund-<id>`), cancelled ones left out."""
    notes = await erp.list_credit_notes(f"{shop}#", day)
    return [CreditNote(n.id, n.reference, -n.total) for n in notes if n.state != "cancelled"]


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


async def reconcile(store: FinanceStore, erp: Erp, payments: Any, *, shop: str, day: dt.date,
                    credit_notes=credit_notes_of_day, record: bool = True) -> dict[str, Any]:
    mismatches: list[dict[str, Any]] = []

    def drift(kind: str, reference: str, detail: str, documents: dict[str, Any]) -> None:
        mismatches.append({"kind": kind, "reference": reference, "detail": detail, "documents": documents})

    # 1. payouts issued that day
    payout_rows = []
    for payout in await payments.payouts(issued_from=day, issued_to=day):
        rows = await payments.payout_transactions(payout)
        ref = mapping.payout_reference(shop, payout)
        txn_net = sum((t.net for t in rows), ZERO)
        fees = sum((t.fee for t in rows), ZERO)
        docs = {"payout": payout.id, "status": payout.status, "transactions": [t.id for t in rows]}
        row = {"payout": payout.id, "status": payout.status, "net": _money(payout.net),
               "transactions": len(rows), "transactions_net": _money(txn_net), "fees": _money(fees),
               "erp_entry": None, "reversal": None}
        if txn_net != payout.net:
            drift("payout_net_mismatch", ref, f"payout {payout.legacy_id} net {payout.net} but its transactions' "
                  f"nets add up to {txn_net}", docs | {"payout_net": str(payout.net), "transactions_net": str(txn_net)})
        if payout.status not in mapping.NOT_YET:
            entries = await erp.find_journal_entries(ref)
            if not entries:
                drift("payout_not_posted", ref, f"payout {payout.legacy_id} ({payout.status}) has no ERP entry", docs)
            else:
                entry = entries[0]
                row["erp_entry"] = entry.id
                if len(entries) > 1:
                    drift("duplicate_entry", ref, f"{len(entries)} ERP entries for payout {payout.legacy_id}",
                          docs | {"erp_entries": [e.id for e in entries]})
                try:
                    want = mapping.payout_totals(payout, rows).by_account
                except mapping.UnknownTransactionType as exc:
                    want = {}
                    drift("unknown_transaction_type", ref, str(exc), docs)
                have = {k: v for k, v in entry.balance_by_account().items() if v != 0}
                for account in sorted(set(want) | set(have)):
                    if want.get(account, ZERO) != have.get(account, ZERO):
                        drift("erp_amount_mismatch", ref, f"payout {payout.legacy_id}: {account} should move "
                              f"{want.get(account, ZERO)} (Shopify's transactions) but ERP entry {entry.id} moves "
                              f"{have.get(account, ZERO)}", docs | {"erp_entry": entry.id, "account": account,
                                                                    "shopify": str(want.get(account, ZERO)),
                                                                    "erp": str(have.get(account, ZERO))})
                if entry.state != "posted":
                    drift("payout_not_posted", ref, f"ERP entry {entry.id} is {entry.state}, not posted",
                          docs | {"erp_entry": entry.id})
            if payout.status in mapping.REVERSED:
                rref = mapping.reversal_reference(shop, payout)
                reversals = await erp.find_journal_entries(rref)
                if not reversals:
                    drift("reversal_missing", rref, f"payout {payout.legacy_id} is {payout.status}: no reversal "
                          "entry", docs)
                else:
                    row["reversal"] = reversals[0].id
                    have = {k: v for k, v in reversals[0].balance_by_account().items() if v != 0}
                    if have != mapping.reversal_totals(payout) or len(reversals) > 1:
                        drift("erp_amount_mismatch", rref, f"reversal of payout {payout.legacy_id} does not move its "
                              f"net {payout.net} back to clearing once", docs | {"erp_entries": [e.id for e in reversals]})
        payout_rows.append(row)

    # 2 and 3. what Shopify captured and refunded that day against the ERP's documents
    day_rows = await payments.transactions_of_day(day)
    charges = [t for t in day_rows if t.type == "CHARGE"]
    refunds = [t for t in day_rows if t.type == "REFUND"]
    captured = sum((t.amount for t in charges), ZERO)
    refunded = -sum((t.amount for t in refunds), ZERO)
    sales = [s for s in await erp.list_sales(f"{shop}#", day) if s.state in INVOICED_STATES and s.total > 0]
    invoiced = sum((s.total for s in sales), ZERO)
    notes = await credit_notes(erp, shop, day)
    credited = sum((n.amount for n in notes), ZERO)
    day_ref = f"{shop}#{day.isoformat()}"
    if captured != invoiced:
        drift("captured_mismatch", day_ref, f"Shopify captured {captured} on {day} ({len(charges)} charges) but the ERP "
              f"invoiced {invoiced} ({len(sales)} sales)",
              {"charges": [{"transaction": t.id, "order": t.order_name, "amount": str(t.amount)} for t in charges],
               "sales": [{"sale": s.id, "reference": s.reference, "total": str(s.total)} for s in sales]})
    if refunded != credited:
        drift("refunds_mismatch", day_ref, f"Shopify refunded {refunded} on {day} ({len(refunds)} refunds) but the ERP "
              f"credited {credited} ({len(notes)} credit notes)",
              {"refunds": [{"transaction": t.id, "order": t.order_name, "amount": str(-t.amount)} for t in refunds],
               "credit_notes": [{"invoice": n.id, "reference": n.reference, "amount": str(n.amount)} for n in notes]})

    if record:
        for row in mismatches:
            await store.open_exception(row["reference"], row["kind"], row["detail"], row["documents"])
    return {
        "day": day.isoformat(), "shop": shop, "payouts": payout_rows,
        "captured": {"shopify": _money(captured), "erp_invoiced": _money(invoiced), "charges": len(charges),
                     "sales": len(sales)},
        "refunds": {"shopify": _money(refunded), "erp_credit_notes": _money(credited), "refunds": len(refunds),
                    "credit_notes": len(notes)},
        "mismatches": mismatches, "drift": len(mismatches),
    }


def render_report(report: dict[str, Any]) -> str:
    """The readable form: what was checked, what agrees, what does not."""
    out = [f"Finance reconciliation {report['shop']}  {report['day']}", ""]
    out.append(f"{'payout':<44} {'status':<11} {'net':>12} {'txns':>5} {'txn net':>12} {'fees':>9}  ERP entry")
    for p in report["payouts"]:
        entry = "-" if p["erp_entry"] is None else str(p["erp_entry"])
        if p["reversal"] is not None:
            entry += f" (reversal {p['reversal']})"
        out.append(f"{p['payout']:<44} {p['status']:<11} {p['net']:>12} {p['transactions']:>5} "
                   f"{p['transactions_net']:>12} {p['fees']:>9}  {entry}")
    c, r = report["captured"], report["refunds"]
    out.append("")
    out.append(f"captured payments  Shopify {c['shopify']:>12} ({c['charges']} charges)   ERP invoiced "
               f"{c['erp_invoiced']:>12} ({c['sales']} sales)")
    out.append(f"refunds            Shopify {r['shopify']:>12} ({r['refunds']} refunds)   ERP credit notes "
               f"{r['erp_credit_notes']:>12} ({r['credit_notes']})")
    out.append("")
    if not report["mismatches"]:
        out.append("drift: 0 (every check agrees)")
    else:
        out.append(f"drift: {report['drift']}")
        for row in report["mismatches"]:
            out.append(f"  {row['kind']:<22} {row['reference']}: {row['detail']}")
    return "\n".join(out)
