"""A worker process for the kill tests: posts orders, and after its first batch create (or
confirm) in the ERP writes a marker file and stalls, so the test can SIGKILL it between the
ERP's create and the flow's own bookkeeping, or between the create and the confirm's
bookkeeping (the worst moments for exactly-once)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from adapters.erp.tryton.client import TrytonErp
from availability.bootstrap import make_redis
from availability.config import Settings
from availability.flows.orders.flow import OrderQueue, OrderWorker, WorkerConfig
from availability.flows.orders.store import OrderStore


def stall_after(erp, method: str, marker: Path, reference_of, *, of_result: bool = False) -> None:
    """Make `erp.method` do its ERP call, write the document's reference to `marker` and
    stall (the test SIGKILLs the process there). `reference_of` takes the call's arguments,
    or its result with `of_result`."""
    original = getattr(erp, method)

    async def stalled(*args, **kwargs):
        result = await original(*args, **kwargs)
        marker.write_text(reference_of(result) if of_result else reference_of(*args))
        await asyncio.sleep(3600)  # killed here
        return result

    setattr(erp, method, stalled)


async def main(redis_url, prefix, db_url, erp_url, password, marker, lease_ms, method="create_sales") -> None:
    redis = make_redis(redis_url, cluster=Settings(_env_file=None).redis_cluster)
    store = await OrderStore(db_url).open()
    erp = TrytonErp(erp_url, "admin", password)
    if method == "create_sales":  # the batch's sales created (and quoted), none recorded
        stall_after(erp, method, Path(marker), lambda orders: orders[0][0].reference)
    else:  # confirm_sales: created and recorded as posted, then confirmed, not recorded
        stall_after(erp, method, Path(marker), lambda sales: sales[0].reference, of_result=True)
    worker = OrderWorker(store, OrderQueue(redis, prefix), erp, config=WorkerConfig(lease_ms=int(lease_ms)))
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
