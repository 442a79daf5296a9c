"""`availability demo`: everything on one machine, seeded, with traffic.

Starts an embedded Redis, the Shopify Admin simulator, the API with the consumer,
publisher and other background services, loads a seeded catalogue (master data, rules,
Shopify mappings, opening stock), then drives synthetic traffic through the public
interfaces: storefront lookups, checkouts (reserve, commit, release, abandon), POS sales,
WMS receipts, and now and then a change made in Shopify's admin behind our back (drift).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import uvicorn

from adapters.shopify.simulator import FaultConfig, SimulatorConfig, SimulatorServer
from availability.api.app import create_app
from availability.api.security import ensure_dev_admin_key
from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.demo.catalogue import Catalogue, build_catalogue, master_data, opening_stock, shopify_mappings

log = logging.getLogger("availability.demo")

SHOPIFY_TOKEN = "shpat_demo"
WEBHOOK_SECRET = "shpss_demo_secret"
#: the simulator's X-Shopify-Shop-Domain: webhooks claiming any other shop are 401
SHOP_DOMAIN = SimulatorConfig().shop_domain


def demo_settings(base: Settings, port: int) -> Settings:
    data_dir = str(Path(base.data_dir) / "demo")
    return base.model_copy(update={"data_dir": data_dir, "port": port, "shopify_token": SHOPIFY_TOKEN,
                                   "shopify_webhook_secrets": [WEBHOOK_SECRET], "public_read": True,
                                   "shopify_shop_domain": SHOP_DOMAIN})


def start_simulator(cat: Catalogue, items: dict[str, str], locations: list[tuple[str, str, str]], webhook_url: str,
                    plan: str) -> SimulatorServer:
    config = SimulatorConfig(
        access_token=SHOPIFY_TOKEN, plan=plan, webhook_url=webhook_url, webhook_secret=WEBHOOK_SECRET,
        # Our own pushes echoing back as webhooks would only add noise to the demo.
        echo_api_writes=False,
        faults=FaultConfig(external_writer_interval_s=20.0, external_writer_max_delta=3),
    )
    sim = SimulatorServer(config)
    state = sim.state
    for _, _, gid in locations:
        state.add_location(id=int(gid.rsplit("/", 1)[1]))
    shopify_locations = sorted({gid for _, _, gid in locations})
    for sku, gid in items.items():
        state.add_item(sku, id=int(gid.rsplit("/", 1)[1]))
        for loc in shopify_locations:
            state.stock(gid, loc, 0)
    sim.start()
    return sim


async def seed(runtime, cat: Catalogue, items, locations) -> None:
    store = runtime.store
    if not await store.list_locations():
        await store.import_master_data(master_data(cat), actor="demo", reason="demo catalogue")
        await store.mappings.set_item_mappings(items, actor="demo", reason="demo catalogue")
        await store.mappings.set_location_mappings(locations, actor="demo", reason="demo catalogue")
        await runtime.rules.refresh(force=True)
    if await runtime.redis.exists(runtime.ledger.keys.stock(cat.skus[-1])):
        print("opening stock already loaded (var/demo keeps state between runs)", flush=True)
        return
    started = time.perf_counter()
    batch, loaded = [], 0
    for event in opening_stock(cat):
        batch.append(event)
        if len(batch) == 2000:
            await runtime.ledger.apply_batch(batch)
            loaded += len(batch)
            batch = []
    await runtime.ledger.apply_batch(batch)
    loaded += len(batch)
    print(f"opening stock: {loaded:,} ERP snapshot events applied in {time.perf_counter() - started:.1f}s",
          flush=True)


async def traffic(base_url: str, key: str, cat: Catalogue, rate: float, stop: asyncio.Event) -> None:
    """Synthetic shoppers, tills and a warehouse, through the public HTTP API."""
    rnd = random.Random(7)
    headers = {"Authorization": f"Bearer {key}"}
    hot = cat.hot_skus(10)
    counts = {"lookups": 0, "reserved": 0, "sold_out": 0, "pos_sales": 0, "receipts": 0}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        last_report = time.monotonic()
        while not stop.is_set():
            roll = rnd.random()
            try:
                if roll < 0.5:
                    sku = rnd.choice(hot) if rnd.random() < 0.5 else rnd.choice(cat.skus)
                    await client.get(f"/v1/availability/{sku}", params={"channel": "online"})
                    counts["lookups"] += 1
                elif roll < 0.75:
                    rid = f"demo-{uuid.uuid4().hex[:12]}"
                    body = {"reservation_id": rid, "channel": "online", "ttl_seconds": 60,
                            "lines": [{"sku": rnd.choice(hot), "quantity": rnd.choice((1, 1, 2))}]}
                    answer = await client.post("/v1/reservations", json=body)
                    if answer.status_code == 201:
                        counts["reserved"] += 1
                        fate = rnd.random()
                        if fate < 0.7:
                            await client.post(f"/v1/reservations/{rid}/commit")
                        elif fate < 0.85:
                            await client.post(f"/v1/reservations/{rid}/release")
                    elif answer.status_code == 409:
                        counts["sold_out"] += 1
                elif roll < 0.95:
                    await client.post("/v1/events", json=_event("pos_sale", rnd.choice(cat.skus),
                                                                 rnd.choice(cat.stores), 1))
                    counts["pos_sales"] += 1
                else:
                    await client.post("/v1/events", json=_event("receipt", rnd.choice(hot),
                                                                 rnd.choice(cat.warehouses[:2]), rnd.randint(5, 20)))
                    counts["receipts"] += 1
            except httpx.HTTPError as exc:
                log.warning("demo traffic request failed: %s", exc)
            if time.monotonic() - last_report > 15:
                print(f"traffic so far: {counts}", flush=True)
                last_report = time.monotonic()
            await asyncio.sleep(1 / rate)


def _event(kind: str, sku: str, location: str, quantity: int) -> dict:
    return {"event_id": f"demo-{uuid.uuid4().hex}", "type": kind, "source": "pos" if kind.startswith("pos") else "wms",
            "occurred_at": datetime.now(timezone.utc).isoformat(), "sku": sku, "location": location,
            "quantity": quantity}


def _quiet_libraries() -> None:
    # Per-request client logs and FastStream's task chatter would drown the banner.
    for name in ("httpx", "faststream", "availability.ingest.consumer", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def run_demo(base: Settings, *, host: str, port: int, skus: int, rate: float, duration: float | None,
                   plan: str) -> int:
    _quiet_libraries()
    cat = build_catalogue(skus=skus)
    items, locations = shopify_mappings(cat)
    base_url = f"http://{host}:{port}"
    sim = start_simulator(cat, items, locations, f"{base_url}/webhooks/shopify", plan)
    settings = demo_settings(base, port).model_copy(update={"shopify_url": sim.base_url})
    try:
        async with open_runtime(settings) as runtime:
            await seed(runtime, cat, items, locations)
            key = ensure_dev_admin_key(settings.data_dir)
            if await runtime.store.keys.find_api_key(key) is None:
                await runtime.store.keys.add_api_key("demo-admin", key, ["admin"])
            app = create_app(runtime, services=True)
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    return serving.result() or 1
                await asyncio.sleep(0.05)
            sample = cat.hot_skus(1)[0]
            print(_banner(base_url, sim.base_url, runtime.redis_url, settings, key, sample, len(cat.skus),
                          len(cat.locations)), flush=True)
            stop = asyncio.Event()
            driver = asyncio.create_task(traffic(base_url, key, cat, rate, stop))
            try:
                if duration:
                    await asyncio.wait([serving], timeout=duration)
                else:
                    await serving
            finally:
                stop.set()
                await driver
                server.should_exit = True
                await serving
    finally:
        sim.stop()
    return 0


def _banner(api: str, sim: str, redis_url: str, settings: Settings, key: str, sku: str, skus: int, locs: int) -> str:
    return f"""
availability demo is running: {skus:,} SKUs x {locs} locations, channels pos / online / marketplace
  API              {api}          (reads are open in the demo; writes need the key below)
  OpenAPI docs     {api}/schema
  metrics          {api}/metrics
  admin API key    {key}
  explain          curl '{api}/v1/availability/{sku}/explain?channel=online'
  availability     curl '{api}/v1/availability/{sku}?channel=online'
  reserve          curl -X POST {api}/v1/reservations -H 'Authorization: Bearer {key}' \\
                     -H 'content-type: application/json' \\
                     -d '{{"reservation_id": "try-1", "channel": "online", "lines": [{{"sku": "{sku}", "quantity": 1}}]}}'
  Shopify (sim)    {sim}/_sim/levels   live pushed levels;  {sim}/_sim/stats   calls, points, throttles
  Redis            {redis_url}   data in {settings.data_dir}
Ctrl-C stops everything.
"""
