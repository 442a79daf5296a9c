"""A returns worker process for the kill test: after its first ERP credit-note create it
writes a marker file and stalls, so the test can SIGKILL it between the ERP's create and
the flow's own bookkeeping (the worst moment for exactly-once)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from adapters.erp.tryton.client import TrytonErp
from availability.bootstrap import make_redis
from availability.config import Settings
from availability.flows.returns.flow import (
    LedgerSink, ReturnsQueue, ReturnsWorker, SaleLookup, WorkerConfig, static_locations,
)
from availability.flows.returns.store import ReturnStore
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from tests.flows_erp._worker import stall_after
from tests.flows_erp.returns_helpers import DEFAULT_LOCATION, LOCATIONS


async def main(redis_url, prefix, db_url, erp_url, password, marker, lease_ms) -> None:
    redis = make_redis(redis_url, cluster=Settings(_env_file=None).redis_cluster)
    store = await ReturnStore(db_url).open()
    ledger = Ledger(redis, keys=KeyLayout(prefix))
    await ledger.load_scripts()
    erp = TrytonErp(erp_url, "admin", password)
    stall_after(erp, "create_credit_note", Path(marker), lambda draft, sale: draft.reference)
    worker = ReturnsWorker(store, ReturnsQueue(redis, prefix), erp, LedgerSink(ledger), SaleLookup(db_url),
                           static_locations(LOCATIONS, DEFAULT_LOCATION), config=WorkerConfig(lease_ms=int(lease_ms)))
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
