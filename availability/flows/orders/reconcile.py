"""Reconciliation of the order flow: what the flow took in against what the ERP holds.

The orders side is the flow's own documents (every order webhook received, newest
payload), not yet Shopify's order list API (the simulator has none; docs/flows.md). For
each order that should be in the ERP (every state but `cancelled`-before-posting,
`awaiting_order` and `exception`) it reports:

- missing: no ERP sale with its reference;
- duplicated: more than one sale with its reference;
- amount: the sale's total differs from Shopify's `total_price` of the held payload;
- unexpected: ERP sales of the shop that no order document explains.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from adapters.erp.port import Erp
from availability.flows.orders.mapping import expected_total, sale_date
from availability.flows.orders.store import OrderStore


async def reconcile(store: OrderStore, erp: Erp, *, shop: str | None = None, day: dt.date | None = None) -> dict:
    docs = await store.documents(shop=shop)
    shops = sorted({d.shop for d in docs} | ({shop} if shop else set()))
    sales = defaultdict(list)
    for name in shops:
        for sale in await erp.list_sales(f"{name}#", day):
            sales[sale.reference].append(sale)
    missing, duplicated, amount, checked = [], [], [], 0
    for doc in docs:
        if doc.payload is None or doc.state in ("awaiting_order", "exception"):
            continue
        if day is not None and sale_date(doc.payload) != day:
            continue
        found = sales.get(doc.reference, [])
        if doc.state == "cancelled" and not found and not doc.erp_sale_id:
            continue  # cancelled before it was posted: rightly absent
        checked += 1
        if not found:
            missing.append({"reference": doc.reference, "state": doc.state, "erp_sale_id": doc.erp_sale_id})
            continue
        if len(found) > 1:
            duplicated.append({"reference": doc.reference, "erp_sale_ids": [s.id for s in found]})
        want = expected_total(doc.payload)
        if doc.state != "cancelled" and want is not None and found[0].total != want:
            amount.append({"reference": doc.reference, "shopify": str(want), "erp": str(found[0].total)})
    known = {d.reference for d in docs}
    unexpected = [{"reference": ref, "erp_sale_ids": [s.id for s in group]}
                  for ref, group in sorted(sales.items()) if ref not in known]
    drift = len(missing) + len(duplicated) + len(amount) + len(unexpected)
    return {"day": day.isoformat() if day else None, "shops": shops, "orders_checked": checked,
            "erp_sales": sum(len(g) for g in sales.values()), "missing": missing, "duplicated": duplicated,
            "amount_mismatch": amount, "unexpected": unexpected, "drift": drift}


def render_table(report: dict) -> str:
    lines = [f"orders checked: {report['orders_checked']}   ERP sales: {report['erp_sales']}   "
             f"drift: {report['drift']}"]
    for kind in ("missing", "duplicated", "amount_mismatch", "unexpected"):
        for row in report[kind]:
            detail = ", ".join(f"{k}={v}" for k, v in row.items() if k != "reference")
            lines.append(f"{kind:<16} {row['reference']:<50} {detail}")
    return "\n".join(lines)
