"""WMS 945s from the ingest entry points to the fulfilment flow.

`POST /v1/ingest/wms/x12` (availability/ingest/http.py) and the WMS drop folder
(availability/ingest/dropfolder.py) parse an X12 file into ledger events; a 945 in it is
also a shipment the Shopify order must get its fulfillment for. `WmsHandoff.take` hands
such a file to the fulfilment flow's intake (`FulfilmentIntake.take_945`: recorded in SQL
under `wms:<ISA sender>:<W06-04>` before it returns, so a re-upload of the same file, or
the same 945 through the other entry point, is a `duplicate` and makes no second
fulfillment). The ledger side is not changed by this: its events carry their own ids.

What the entry point is told (and says in its answer, or its log and the metric
`availability_fulfilment_shipments_total{source="wms",outcome}`):

- `None`: the file holds no 945 (944 receipts, 947 adjustments, 846 inventory);
- `queued` / `duplicate` with the shipments: in the flow; an order the order flow does not
  know becomes the flow's `unknown_order` exception when the worker settles it;
- `not_configured`: this process has no fulfilment flow (AVAILABILITY_FLOWS without
  `fulfilment`): the 945 moved stock only, and nobody is told silently;
- `dead_lettered`: the 945 names no order the flow can read (W06-02 without digits): the
  file is dead-lettered with that reason (`fulfilment_rejected`), the stock stays booked.

A store failure propagates (the entry point answers 503 / keeps the file for the next
scan); the retry is a duplicate for the shipments already in.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from availability.flows.fulfilment import metrics as m
from availability.flows.fulfilment.mapping import InvalidShipment, mentions_945

log = logging.getLogger(__name__)

NOT_CONFIGURED = ("the fulfilment flow is not configured in this process (AVAILABILITY_FLOWS=orders,fulfilment): "
                  "the 945 moved ledger stock only; feed it with `availability flows fulfilment feed-945`")


def fulfilment_intake_of(runtime: Any) -> Any:
    """The fulfilment flow's intake the composition root built into the runtime, or None."""
    flows = getattr(runtime, "erp_flows", None)
    parts = getattr(flows, "fulfilment", None) if flows is not None else None
    return parts.intake if parts is not None else None


class WmsHandoff:
    def __init__(self, intake: Any, dead_letters: Any) -> None:
        #: `FulfilmentIntake`, or None when the flow is not configured here
        self.intake = intake
        self.dead_letters = dead_letters
        self._warned = False

    @classmethod
    def of_runtime(cls, runtime: Any, intake: Any = None) -> WmsHandoff:
        from availability.ingest.deadletters import DeadLetters  # noqa: PLC0415

        return cls(intake if intake is not None else fulfilment_intake_of(runtime),
                   DeadLetters.from_settings(runtime.redis, runtime.settings))

    async def take(self, data: bytes, *, where: str) -> dict | None:
        """Hand the file's 945s to the flow; `where` names the entry point (and the file)."""
        if not mentions_945(data):
            return None
        if self.intake is None:
            m.SHIPMENTS.labels("wms", "not_configured").inc()
            if not self._warned:
                self._warned = True
                log.warning("%s: %s", where, NOT_CONFIGURED)
            return {"outcome": "not_configured", "detail": NOT_CONFIGURED}
        try:
            shipments = await self.intake.take_945(data)
        except InvalidShipment as exc:
            from availability.ingest.deadletters import DeadLetter  # noqa: PLC0415
            from availability.ingest.sources import INTAKE_PREFIX  # noqa: PLC0415

            m.SHIPMENTS.labels("wms", "rejected").inc()
            digest = hashlib.sha256(data).hexdigest()[:16]
            await self.dead_letters.add([DeadLetter(
                reason="fulfilment_rejected", detail=f"{where}: {exc}", payload=data, stream=f"{INTAKE_PREFIX}x12",
                entry_id=f"{where}:{digest}", source="wms")])
            log.warning("%s: 945 not taken by the fulfilment flow: %s", where, exc)
            return {"outcome": "dead_lettered", "reason": str(exc)}
        outcomes = {s["outcome"] for s in shipments}
        return {"outcome": "queued" if "queued" in outcomes else "duplicate", "shipments": shipments}
