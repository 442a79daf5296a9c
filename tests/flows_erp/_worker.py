"""A worker process for the kill test: posts orders, and after its first ERP create writes
a marker file and stalls, so the test can SIGKILL it between the ERP's create and the
flow's own bookkeeping (the worst moment for exactly-once)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from adapters.erp.tryton.client import TrytonErp
from availability.bootstrap import make_redis
from availability.flows.orders.flow import OrderQueue, OrderWorker, WorkerConfig
from availability.flows.orders.store import OrderStore


class StallingErp(TrytonErp):
    def __init__(self, *args, marker: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker

    async def create_sale(self, draft, party_id):
        sale = await super().create_sale(draft, party_id)
        self.marker.write_text(draft.reference)
        await asyncio.sleep(3600)  # killed here
        return sale


async def main(redis_url, prefix, db_url, erp_url, password, marker, lease_ms) -> None:
    redis = make_redis(redis_url)
    store = await OrderStore(db_url).open()
    erp = StallingErp(erp_url, "admin", password, marker=Path(marker))
    worker = OrderWorker(store, OrderQueue(redis, prefix), erp, config=WorkerConfig(lease_ms=int(lease_ms)))
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
