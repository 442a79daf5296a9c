"""The ERP port's shipment side (the fulfilment flow, availability/flows/fulfilment/).

A sale confirmed in the ERP gets customer shipments; the fulfilment flow reads the ones a
warehouse user marked done (they become Shopify fulfillments) and marks one done itself
when the goods left through the WMS instead (a 945). An ERP other than Tryton implements
these three calls beside the ones in adapters/erp/port.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ErpShipment:
    id: int
    number: str
    #: the reference of the sale it ships ("shop#1001"), "" when it ships no sale of ours
    sale_reference: str
    state: str  # draft | waiting | assigned | picked | packed | shipped | done | cancelled
    #: (SKU, quantity) per outgoing move
    lines: tuple[tuple[str, Decimal], ...]
    #: the carrier's tracking number, when the warehouse recorded one (Tryton: `reference`)
    tracking: str | None = None
    effective_date: dt.date | None = None

    @property
    def open(self) -> bool:
        return self.state not in ("done", "cancelled")


@runtime_checkable
class ErpShipments(Protocol):
    async def done_shipments(self, since: dt.date, limit: int = 500) -> list[ErpShipment]:
        """Customer shipments done on or after `since` (oldest first)."""

    async def sale_shipments(self, reference: str) -> list[ErpShipment]:
        """The customer shipments of the sale with this reference (none: [])."""

    async def mark_shipment_done(self, shipment_id: int, tracking: str | None = None) -> ErpShipment:
        """Record that the goods left (tracking number too): the shipment ends `done`."""
