"""`ErpFlowsService`: the sibling ERP flows' workers as a background service of
`availability serve` (registered as "flows" in availability/services.py).

The composition root builds the flows named in AVAILABILITY_FLOWS (orders, customers,
fulfilment, returns, finance) into `runtime.erp_flows` (availability/bootstrap.py
`open_erp_flows`); this service only runs their loops (`ErpFlows.workers`: the order,
customer, fulfilment and returns workers, the ERP-shipment watcher, the payout poller)
and stops them on SIGTERM, letting the round in progress finish. Several `serve` processes may run
them at once: each order or shipment is leased to one worker (flows/machinery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

# imported so that every `serve` names the flows' metrics on /metrics (alerts and
# dashboards use them) even before a flow has done anything
from availability.flows.finance import metrics as _finance_metrics  # noqa: F401
from availability.flows.fulfilment import metrics as _fulfilment_metrics  # noqa: F401
from availability.flows.orders import metrics as _order_metrics  # noqa: F401
from availability.flows.returns import metrics as _returns_metrics  # noqa: F401

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)


class ErpFlowsService:
    name = "flows"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.flows = getattr(runtime, "erp_flows", None)
        self.enabled = self.flows is not None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if not self.enabled:
            if self.runtime.settings.flows:
                log.warning("ERP flows %s configured but not built in this process (open_runtime(flows=True))",
                            ",".join(self.runtime.settings.flows))
            return
        self._stop.clear()
        for worker in self.flows.workers:
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name=f"flows:{type(worker).__name__}"))
        log.info("ERP flows running: %s (ERP %s)", ", ".join(self.flows.names),
                 getattr(self.flows.erp, "url", "none"))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 30)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            except Exception:
                log.exception("ERP flow worker failed while stopping")
        self._tasks.clear()
