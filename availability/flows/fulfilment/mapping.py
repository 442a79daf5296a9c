"""Shipments in, fulfillment order lines out. Pure: no I/O.

A **shipment** is what left a warehouse for one order: its id (`wms:<sender>:<W06-04>` for
a 945, `erp:<id>` for an ERP shipment: the key that makes posting it exactly once), the
order's reference (`shop#number`, as the order flow names the ERP sale), the SKUs and
units shipped, the tracking numbers and the carrier.

A 945's depositor order number (W06-02) names the order: "shop#1001" as is, else the
digits it ends with ("ORD-1001", "#1001" -> order 1001 of the shop). Tracking: N9 with
qualifier CN (carrier's reference) or 2I (tracking number), else the bill of lading (BM);
carrier: W27-02 (SCAC) / W27-03 (routing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from adapters.erp.shipments import ErpShipment
from adapters.shopify.fulfillments import FULFILLABLE, OrderFulfilment
from adapters.wms.x12 import (
    DEFAULT_OPTIONS,
    EdiError,
    X12Options,
    parse_945,
    parse_interchanges,
)

_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


class InvalidShipment(ValueError):
    """A shipment the flow cannot read (bad X12, no order number, no lines)."""

    reason = "invalid_shipment"


class FulfilmentProblem(Exception):
    """A shipment that cannot become a fulfillment as it is: parked with `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Shipment:
    shipment_id: str
    source: str  # wms | erp
    reference: str
    lines: tuple[tuple[str, int], ...]
    tracking_numbers: tuple[str, ...] = ()
    carrier: str | None = None
    erp_shipment_id: int | None = None
    detail: dict = field(default_factory=dict)

    def units(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for sku, qty in self.lines:
            out[sku] = out.get(sku, 0) + qty
        return out


def order_reference(shop: str, order_number: str) -> str:
    """The order flow's reference for a WMS/ERP order number."""
    text = (order_number or "").strip()
    if "#" in text and not text.startswith("#"):
        return text  # already "shop#1001"
    m = _TRAILING_NUMBER.search(text)
    if not m or not shop:
        raise InvalidShipment(f"order number {order_number!r} names no order (expected digits, e.g. ORD-1001)")
    return f"{shop}#{int(m.group(1))}"


def mentions_945(data: str | bytes) -> bool:
    """Whether an X12 file has a 945 transaction set header (`ST*945`, with the element
    separator its ISA declares): a byte search, so a WMS upload of 944s, 947s or 846s is
    not parsed a second time for the fulfilment flow."""
    raw = data.encode("latin-1", "replace") if isinstance(data, str) else data
    head = raw[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"ISA") or len(head) < 4:
        return False
    return b"ST" + head[3:4] + b"945" in raw


def shipments_from_945(data: str | bytes, shop: str, options: X12Options = DEFAULT_OPTIONS) -> list[Shipment]:
    """Every 945 transaction set of an X12 file as a shipment (all or nothing)."""
    out: list[Shipment] = []
    try:
        for interchange in parse_interchanges(data):
            for ts in interchange.transaction_sets():
                if ts.code != "945":
                    continue
                events = parse_945(ts, options)
                w06 = next(s for s in ts.segments if s.tag == "W06")
                tracking: list[str] = []
                bol = None
                carrier = None
                for seg in ts.segments:
                    if seg.tag == "N9" and seg.get(1) in ("CN", "2I") and seg.get(2):
                        tracking.append(seg.get(2))
                    elif seg.tag == "N9" and seg.get(1) == "BM" and seg.get(2):
                        bol = seg.get(2)
                    elif seg.tag == "W27":
                        carrier = seg.get(3) or seg.get(2) or None
                if not tracking and bol:
                    tracking.append(bol)
                lines: dict[str, int] = {}
                for e in events:
                    lines[e.sku] = lines.get(e.sku, 0) + int(e.quantity)
                if not lines:
                    raise InvalidShipment(f"945 shipment {w06.get(4)} ships no units")
                out.append(Shipment(
                    shipment_id=f"wms:{interchange.sender_id}:{w06.get(4)}", source="wms",
                    reference=order_reference(shop, w06.get(2)), lines=tuple(sorted(lines.items())),
                    tracking_numbers=tuple(dict.fromkeys(tracking)), carrier=carrier,
                    detail={"order_number": w06.get(2), "shipment": w06.get(4)},
                ))
    except EdiError as exc:
        raise InvalidShipment(f"945 refused: {exc}") from exc
    if not out:
        raise InvalidShipment("the file holds no 945 shipping advice")
    return out


def shipment_from_erp(shipment: ErpShipment) -> Shipment:
    lines: dict[str, int] = {}
    for sku, qty in shipment.lines:
        if qty and sku:
            lines[sku] = lines.get(sku, 0) + int(qty)
    return Shipment(shipment_id=f"erp:{shipment.id}", source="erp", reference=shipment.sale_reference,
                    lines=tuple(sorted(lines.items())),
                    tracking_numbers=(shipment.tracking,) if shipment.tracking else (),
                    erp_shipment_id=shipment.id, detail={"erp_number": shipment.number})


def plan_fulfillment(order: OrderFulfilment, units: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """The fulfillment order line items (and quantities) that ship these units: open
    fulfillment orders first-come, each line up to its remaining quantity. Raises
    `FulfilmentProblem("line_not_open")` when a SKU has fewer units open than shipped."""
    if order.cancelled:
        raise FulfilmentProblem("line_not_open", f"order {order.name} is cancelled on Shopify")
    plan: dict[str, list[tuple[str, int]]] = {}
    short = []
    for sku, wanted in sorted(units.items()):
        left = wanted
        for fo in order.fulfillment_orders:
            if fo.status not in FULFILLABLE:
                continue
            for line in fo.lines:
                if line.sku != sku or line.remaining <= 0 or left <= 0:
                    continue
                take = min(left, line.remaining)
                plan.setdefault(fo.id, []).append((line.id, take))
                left -= take
        if left > 0:
            short.append(f"{sku}: {wanted} shipped, {wanted - left} open on Shopify")
    if short:
        raise FulfilmentProblem("line_not_open", f"order {order.name}: " + "; ".join(short))
    return plan


def already_fulfilled(order: OrderFulfilment, shipment: Shipment, posted_elsewhere: dict[str, int]) -> str | None:
    """The Shopify fulfillment that already carries this shipment, if any: one with one of
    its tracking numbers, else (no tracking number) the units Shopify shows fulfilled beyond
    what the flow's other shipments of the order account for (`posted_elsewhere`)."""
    wanted = set(shipment.tracking_numbers)
    if wanted:
        for f in order.fulfillments:
            if wanted.intersection(f.tracking_numbers):
                return f.id
        return None
    shopify: dict[str, int] = {}
    for f in order.fulfillments:
        if f.status in ("SUCCESS", "OPEN", "PENDING"):
            for sku, qty in f.units.items():
                shopify[sku] = shopify.get(sku, 0) + qty
    units = shipment.units()
    if units and all(shopify.get(sku, 0) - posted_elsewhere.get(sku, 0) >= qty for sku, qty in units.items()):
        return order.fulfillments[-1].id if order.fulfillments else None
    return None
