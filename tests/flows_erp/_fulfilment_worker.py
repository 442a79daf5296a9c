"""A fulfilment worker process for the kill test: after Shopify answered its first
fulfillmentCreate it writes a marker file and stalls, so the test can SIGKILL it between
Shopify creating the fulfillment and the flow recording it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from adapters.erp.tryton.client import TrytonErp
from adapters.shopify.client import ShopifyAdminClient
from availability.bootstrap import make_redis
from availability.config import Settings
from availability.flows.fulfilment import flow
from availability.flows.fulfilment.store import FulfilmentStore
from availability.flows.orders.flow import OrderQueue, WorkerConfig
from availability.flows.orders.store import OrderStore


async def main(redis_url, prefix, db_url, erp_url, password, shop_url, token, marker, lease_ms) -> None:
    real = flow.create_fulfillment

    async def stalling(*args, **kwargs):
        result = await real(*args, **kwargs)
        Path(marker).write_text("created")
        await asyncio.sleep(3600)  # killed here
        return result

    flow.create_fulfillment = stalling
    redis = make_redis(redis_url, cluster=Settings(_env_file=None).redis_cluster)
    store = await FulfilmentStore(db_url).open()
    orders = await OrderStore(db_url).open()
    worker = flow.FulfilmentWorker(store, OrderQueue(redis, prefix, flow="fulfilment"),
                                   TrytonErp(erp_url, "admin", password),
                                   ShopifyAdminClient(shop_url, token, "2026-04"), orders,
                                   config=WorkerConfig(lease_ms=int(lease_ms)))
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
