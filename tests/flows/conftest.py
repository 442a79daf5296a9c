"""A small shop for the push tests: a real Shopify simulator over HTTP (background thread,
free port), the real ledger on the session's Redis (own key prefix), a SQLite rule store
with two locations, the `online` channel and the Shopify mappings, and publishers built
on all of it."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.shopify.client import ShopifyAdminClient, ThrottleGovernor
from adapters.shopify.simulator import FaultConfig, SimulatorConfig, SimulatorServer
from availability.domain.ats import Buckets
from availability.domain.events import StockEvent
from availability.flows.inventory import metrics
from availability.flows.inventory.mappings import level_value
from availability.flows.inventory.publisher import Publisher, PushConfig
from availability.flows.inventory.sales import SalesConfig
from availability.ledger.ledger import Ledger
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore

LOCATIONS = ("DC1", "S1")
_ids = itertools.count()


def stock_event(type_: str, sku: str, location: str, quantity: int, **kw: Any) -> StockEvent:
    return StockEvent(
        event_id=kw.pop("event_id", f"ev-{next(_ids)}-{time.monotonic_ns()}"),
        type=type_,
        source=kw.pop("source", "wms"),
        occurred_at=kw.pop("occurred_at", datetime.now(UTC)),
        sku=sku,
        location=location,
        quantity=quantity,
        **kw,
    )


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Await until `predicate()` (sync or async) is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


@dataclass
class Shop:
    sim: SimulatorServer
    ledger: Ledger
    store: RuleStore
    rules: RuleCache
    items: dict[str, str]
    shopify_locations: dict[str, str]
    publishers: list[Publisher] = field(default_factory=list)
    clients: list[ShopifyAdminClient] = field(default_factory=list)

    @property
    def state(self):
        return self.sim.state

    def client(self, *, timeout: float = 5.0, governor: ThrottleGovernor | None = None, version: str = "2026-04") -> ShopifyAdminClient:
        client = ShopifyAdminClient(
            self.sim.base_url,
            self.sim.config.access_token,
            version,
            timeout=timeout,
            governor=governor if governor is not None else ThrottleGovernor(),
            on_cost=metrics.observe_cost,
        )
        self.clients.append(client)
        return client

    async def publisher(
        self,
        *,
        start: bool = True,
        client: ShopifyAdminClient | None = None,
        sales: SalesConfig | None = None,
        **config: Any,
    ) -> Publisher:
        config.setdefault("window_s", 0.2)
        config.setdefault("poll_s", 0.02)
        config.setdefault("urgent_scan_interval_s", 0.05)
        config.setdefault("outbox_check_s", 0.5)
        publisher = Publisher(
            ledger=self.ledger,
            rules=self.rules,
            mappings=self.store.mappings,
            client=client or self.client(),
            config=PushConfig(**config),
            # A short window: an external decrease is judged (and reverted) within a test.
            sales=sales or SalesConfig(window_s=0.4),
        )
        self.publishers.append(publisher)
        if start:
            await publisher.start()
        else:
            await publisher.refresh_mappings(force=True)
        return publisher

    async def apply(self, *events: StockEvent) -> None:
        await self.ledger.apply_batch(list(events))

    async def receive(self, sku: str, location: str, quantity: int) -> None:
        await self.apply(stock_event("receipt", sku, location, quantity))

    async def sell(self, sku: str, location: str, quantity: int = 1) -> None:
        await self.apply(stock_event("pos_sale", sku, location, quantity, source="pos"))

    async def ats(self, sku: str, location: str) -> int:
        stock = await self.ledger.stock(sku)
        return self.ats_of(sku, location, stock)

    def ats_of(self, sku: str, location: str, stock: dict[str, Buckets]) -> int:
        rows = [("online", location)]
        return level_value(self.rules.book, sku, rows, stock)[0]

    def shopify(self, sku: str, location: str) -> int | None:
        return self.state.available(self.items[sku], self.shopify_locations[location])

    async def differences(self) -> dict[tuple[str, str], tuple[int | None, int]]:
        out = {}
        for sku in self.items:
            stock = await self.ledger.stock(sku)
            for loc in LOCATIONS:
                want = self.ats_of(sku, loc, stock)
                have = self.shopify(sku, loc)
                if have != want:
                    out[(sku, loc)] = (have, want)
        return out

    async def converged(self, timeout: float = 15.0) -> dict:
        """Wait until every mapped level equals ATS; returns what still differs."""
        async def check():
            return not await self.differences()

        await wait_for(check, timeout, 0.05)
        return await self.differences()

    async def close(self) -> None:
        for p in self.publishers:
            await p.stop(timeout=5)
        for c in self.clients:
            await c.aclose()


@pytest.fixture
async def shop_factory(ledger, tmp_path):
    made: list[tuple[Shop, RuleStore]] = []
    servers: list[SimulatorServer] = []

    async def make(
        skus: int | list[str] = 3,
        *,
        initial: int = 0,
        faults: FaultConfig | None = None,
        unmapped: tuple[str, ...] = (),
        **sim_config: Any,
    ) -> Shop:
        sim = SimulatorServer(SimulatorConfig(faults=faults or FaultConfig(), **sim_config))
        sim.start()
        servers.append(sim)
        names = [f"SKU-{i:03d}" for i in range(skus)] if isinstance(skus, int) else list(skus)
        shopify_locations = {loc: sim.state.add_location(f"Shop {loc}") for loc in LOCATIONS}
        items = {}
        for sku in names:
            items[sku] = sim.state.add_item(sku)
            for gid in shopify_locations.values():
                sim.state.stock(items[sku], gid, initial)
        store = RuleStore(f"sqlite+aiosqlite:///{tmp_path}/rules-{len(made)}.db")
        await store.start()
        await store.import_master_data(
            {
                "locations": [{"code": "DC1", "priority": 1}, {"code": "S1", "priority": 2, "type": "store"}],
                "channels": [{"name": "online", "locations": list(LOCATIONS)}],
            },
            actor="test",
        )
        await store.mappings.set_item_mappings(items, actor="test")
        await store.mappings.set_location_mappings([("online", loc, gid) for loc, gid in shopify_locations.items()], actor="test")
        rules = RuleCache(store, refresh_interval=0.1)
        await rules.start()
        shop = Shop(sim, ledger, store, rules, items, shopify_locations)
        made.append((shop, store))
        return shop

    yield make
    for shop, store in made:
        await shop.close()
        await shop.rules.stop()
        await store.close()
    for sim in servers:
        sim.stop()


# --- fake webhook intake: what ingestion does with inventory_levels/update ------------------------


@dataclass
class WebhookIntake:
    url: str
    received: int = 0


@pytest.fixture
def webhook_intake(redis_url, key_prefix):
    """An HTTP endpoint that puts every webhook body on the shop's levels stream, as the
    ingestion side does (acknowledge fast, process from the stream)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import redis as sync_redis

    from availability.flows.inventory.state import PushKeys
    from availability.ledger.keys import KeyLayout

    # the session's server, or a node of the local cluster (redis_url set the variable)
    on_cluster = os.environ.get("AVAILABILITY_REDIS_CLUSTER", "").lower() == "true"
    client = (sync_redis.RedisCluster if on_cluster else sync_redis.Redis).from_url(redis_url)
    stream = PushKeys(KeyLayout(key_prefix)).levels_stream
    intake = WebhookIntake(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("X-Shopify-Topic") == "inventory_levels/update":
                client.xadd(stream, {"payload": body, "webhook_id": self.headers.get("X-Shopify-Webhook-Id", "")})
                intake.received += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    intake.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/shopify"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield intake
    server.shutdown()
    server.server_close()
    client.close()
