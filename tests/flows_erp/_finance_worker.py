"""A finance worker process for the kill test: polls and posts payouts, and after its first
ERP journal entry is posted writes a marker file and stalls, so the test can SIGKILL it
between the ERP's posting and the flow's own bookkeeping."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

from adapters.erp.tryton.client import TrytonErp
from adapters.shopify.client import ShopifyAdminClient
from adapters.shopify.payments import ShopifyPayments
from availability.bootstrap import make_redis
from availability.config import Settings
from availability.flows.finance.flow import FinanceConfig, FinanceFlow, finance_queue
from availability.flows.finance.store import FinanceStore


class StallingErp(TrytonErp):
    def __init__(self, *args, marker: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker

    async def post_journal_entry(self, draft):
        entry = await super().post_journal_entry(draft)
        self.marker.write_text(draft.reference)
        await asyncio.sleep(3600)  # killed here
        return entry


async def main(redis_url, prefix, db_url, erp_url, password, shopify_url, shop, marker, since) -> None:
    store = await FinanceStore(db_url).open()
    erp = StallingErp(erp_url, "admin", password, marker=Path(marker))
    payments = ShopifyPayments(ShopifyAdminClient(shopify_url, "shpat_simulator", timeout=30))
    flow = FinanceFlow(store, finance_queue(make_redis(redis_url, cluster=Settings(_env_file=None).redis_cluster), prefix), erp, payments, shop=shop,
                       config=FinanceConfig(lease_ms=2000))
    await flow.poll(issued_from=dt.date.fromisoformat(since))
    await flow.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
