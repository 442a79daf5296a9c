"""Tryton's customer shipments (`stock.shipment.out`) for the ERP port's shipment side
(adapters/erp/shipments.py). Mixed into `TrytonErp`.

A confirmed sale (shipment method "on order") has one shipment out per warehouse, in
state `waiting`; its outgoing moves point at the sale lines (`origin = "sale.line,ID"`),
which is how a shipment finds its sale's reference. Marking one done walks Tryton's own
buttons: `assign_force` (the WMS already took the goods: no availability check), `pick`,
`pack`, `do`. The tracking number goes in the shipment's `reference`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from adapters.erp.port import ErpValidationError
from adapters.erp.shipments import ErpShipment

_FIELDS = ["id", "number", "reference", "state", "effective_date", "outgoing_moves"]
#: the button that moves a shipment on from each state, towards done
_NEXT = {"draft": "wait", "waiting": "assign_force", "assigned": "pick", "picked": "pack", "packed": "do",
         "shipped": "do"}


class TrytonShipments:
    call: Any  # TrytonErp.call

    async def _shipments(self, rows: list[dict]) -> list[ErpShipment]:
        move_ids = sorted({m for row in rows for m in row.get("outgoing_moves") or []})
        moves = {}
        if move_ids:
            for m in await self.call("model.stock.move.read", move_ids, ["id", "product", "quantity", "origin"]):
                moves[m["id"]] = m
        product_ids = sorted({m["product"] for m in moves.values() if m.get("product")})
        codes = {}
        if product_ids:
            codes = {p["id"]: p.get("code") or "" for p in
                     await self.call("model.product.product.read", product_ids, ["id", "code"])}
        line_ids = sorted({int(str(m["origin"]).split(",")[1]) for m in moves.values()
                           if str(m.get("origin") or "").startswith("sale.line,")})
        sale_of_line = {}
        if line_ids:
            lines = await self.call("model.sale.line.read", line_ids, ["id", "sale"])
            sale_ids = sorted({ln["sale"] for ln in lines if ln.get("sale")})
            refs = {s["id"]: s.get("reference") or "" for s in
                    await self.call("model.sale.sale.read", sale_ids, ["id", "reference"])} if sale_ids else {}
            sale_of_line = {ln["id"]: refs.get(ln.get("sale"), "") for ln in lines}
        out = []
        for row in rows:
            lines_out: list[tuple[str, Decimal]] = []
            reference = ""
            for move_id in row.get("outgoing_moves") or []:
                move = moves.get(move_id)
                if move is None:
                    continue
                lines_out.append((codes.get(move.get("product"), ""), Decimal(str(move.get("quantity") or 0))))
                origin = str(move.get("origin") or "")
                if origin.startswith("sale.line,") and not reference:
                    reference = sale_of_line.get(int(origin.split(",")[1]), "")
            out.append(ErpShipment(id=row["id"], number=row.get("number") or "", sale_reference=reference,
                                   state=row["state"], lines=tuple(lines_out), tracking=row.get("reference") or None,
                                   effective_date=row.get("effective_date")))
        return out

    async def done_shipments(self, since: dt.date, limit: int = 500) -> list[ErpShipment]:
        rows = await self.call("model.stock.shipment.out.search_read",
                               [["state", "=", "done"], ["effective_date", ">=", since]], 0, limit,
                               [["id", "ASC"]], _FIELDS)
        return await self._shipments(rows)

    async def sale_shipments(self, reference: str) -> list[ErpShipment]:
        sales = await self.call("model.sale.sale.search_read", [["reference", "=", reference]], 0, None,
                                [["id", "ASC"]], ["id", "shipments"])
        ids = sorted({s for sale in sales for s in sale.get("shipments") or []})
        if not ids:
            return []
        return await self._shipments(await self.call("model.stock.shipment.out.read", ids, _FIELDS))

    async def mark_shipment_done(self, shipment_id: int, tracking: str | None = None) -> ErpShipment:
        if tracking:
            await self.call("model.stock.shipment.out.write", [shipment_id], {"reference": tracking[:100]})
        for _ in range(len(_NEXT) + 1):
            rows = await self.call("model.stock.shipment.out.read", [shipment_id], _FIELDS)
            if not rows:
                raise ErpValidationError(f"shipment {shipment_id} does not exist in Tryton")
            state = rows[0]["state"]
            if state == "done":
                return (await self._shipments(rows))[0]
            if state == "cancelled" or state not in _NEXT:
                raise ErpValidationError(f"shipment {shipment_id} is {state}: it cannot be marked done")
            await self.call(f"model.stock.shipment.out.{_NEXT[state]}", [shipment_id])
        raise ErpValidationError(f"shipment {shipment_id} did not reach done")
