"""Several Shopify shops against one stock pool: two simulators, one ledger, one rule
store; each shop shows its own channel's ATS, and each drift repair reads its own
shop's webhooks."""

from __future__ import annotations

import msgspec
import pytest

from adapters.shopify.client import ShopifyAdminClient, ThrottleGovernor
from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.flows.inventory.drift import DriftRepairer
from availability.flows.inventory.mappings import level_value
from availability.flows.inventory.publisher import Publisher, PushConfig
from availability.flows.inventory.sales import SalesConfig
from availability.flows.inventory.shops import ShopConfig, ShopConfigError, ShopMappings, configured_shops
from availability.flows.inventory.state import DirtyFanout, PushKeys
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore
from tests.flows.conftest import stock_event, wait_for

SKUS = ("TEE", "CAP")


@pytest.fixture
async def two_shops(ledger, tmp_path):
    sims = [SimulatorServer(SimulatorConfig(shop_domain=f"brand-{n}.myshopify.com")) for n in ("uk", "us")]
    for sim in sims:
        sim.start()
    store = RuleStore(f"sqlite+aiosqlite:///{tmp_path}/rules.db")
    await store.start()
    await store.import_master_data(
        {
            "locations": [{"code": "DC1", "priority": 1}, {"code": "S1", "priority": 2, "type": "store"}],
            "channels": [
                {"name": "online", "locations": ["DC1", "S1"], "priority": 1},
                {"name": "marketplace", "locations": ["DC1"], "priority": 2},
            ],
        },
        actor="test",
    )
    # the marketplace keeps 2 units back at DC1: the two shops see different ATS
    await store.create_rule({"kind": "buffer", "channel": "marketplace", "units": 2}, actor="test")
    rules = RuleCache(store, refresh_interval=0.1)
    await rules.start()
    uk, us = sims
    uk_locations = {"DC1": uk.state.add_location("UK warehouse"), "S1": uk.state.add_location("UK store")}
    us_locations = {"DC1": us.state.add_location("US warehouse")}
    shops = [
        ShopConfig(
            name="uk", url=uk.base_url, token=uk.config.access_token, shop_domain=uk.config.shop_domain,
            channel="online", locations=uk_locations, items={s: uk.state.add_item(s) for s in SKUS},
        ),
        ShopConfig(
            name="us", url=us.base_url, token=us.config.access_token, shop_domain=us.config.shop_domain,
            channel="marketplace", locations=us_locations, items={s: us.state.add_item(s) for s in SKUS},
        ),
    ]
    for sim, shop in zip(sims, shops):
        for gid in shop.items.values():
            for loc in shop.locations.values():
                sim.state.stock(gid, loc, 0)
    fanout = DirtyFanout(ledger.redis, ledger.keys, [PushKeys(ledger.keys, s.name).dirty for s in shops])
    clients, publishers = [], []
    for sim, shop in zip(sims, shops):
        client = ShopifyAdminClient(shop.url, shop.token, shop.api_version, timeout=5, governor=ThrottleGovernor())
        clients.append(client)
        publishers.append(
            Publisher(
                ledger=ledger, rules=rules, mappings=ShopMappings(shop, store.mappings), client=client,
                config=PushConfig(window_s=0.05, poll_s=0.02, urgent_scan_interval_s=0.05),
                sales=SalesConfig(window_s=0.4), shop=shop.name, fanout=fanout,
            )
        )
    for p in publishers:
        await p.refresh_mappings(force=True)
    yield sims, shops, publishers, rules
    for p in publishers:
        await p.stop(timeout=5)
    for c in clients:
        await c.aclose()
    await rules.stop()
    await store.close()
    for sim in sims:
        sim.stop()


async def test_two_shops_share_one_ledger_each_showing_its_channels_ats(ledger, two_shops):
    sims, shops, publishers, rules = two_shops
    await ledger.apply_batch([
        stock_event("receipt", "TEE", "DC1", 10), stock_event("receipt", "TEE", "S1", 3),
        stock_event("receipt", "CAP", "DC1", 1),
    ])

    async def drain_all():
        for _ in range(3):  # each round fans the ledger's marks out to both shops first
            for p in publishers:
                await p.drain(timeout=5)

    def shown(n: int) -> dict:
        sim, shop = sims[n], shops[n]
        return {(sku, loc): sim.state.available(gid, shop.locations[loc]) for sku, gid in shop.items.items() for loc in shop.locations}

    async def expected(n: int) -> dict:
        shop = shops[n]
        out = {}
        for sku in SKUS:
            stock = await ledger.stock(sku)
            for loc in shop.locations:
                out[(sku, loc)] = level_value(rules.book, sku, [(shop.channel, loc)], stock)[0]
        return out

    await drain_all()
    assert shown(0) == await expected(0) == {("TEE", "DC1"): 10, ("TEE", "S1"): 3, ("CAP", "DC1"): 1, ("CAP", "S1"): 0}
    # the marketplace's own ATS: 2 units kept back
    assert shown(1) == await expected(1) == {("TEE", "DC1"): 8, ("CAP", "DC1"): 0}

    await ledger.apply_batch([stock_event("pos_sale", "TEE", "DC1", 4, source="pos")])
    await drain_all()
    assert shown(0)[("TEE", "DC1")] == 6 and shown(1)[("TEE", "DC1")] == 4
    assert await ledger.dirty_count() == 0  # every mark handed to both shops

    # each drift repair reads its own shop's webhooks: an edit in the US shop, announced
    # on the US shop's stream, is repaired there and moves nothing in the UK shop
    us_item, us_loc = shops[1].items["TEE"], shops[1].locations["DC1"]
    sims[1].state.external_change(us_item, us_loc, available=9)
    repairers = [DriftRepairer(p, interval_s=0, block_ms=50) for p in publishers]
    for r in repairers:
        await r.start(periodic=False, sales=False)
    try:
        body = {"inventory_item_id": int(us_item.rsplit("/", 1)[1]), "location_id": int(us_loc.rsplit("/", 1)[1]),
                "available": 9, "updated_at": "2099-01-01T00:00:00Z"}
        await ledger.redis.xadd(publishers[1].keys.levels_stream, {"payload": msgspec.json.encode(body)})
        assert await wait_for(lambda: repairers[1].webhook_drift == 1, 5)
        await drain_all()
        assert shown(1)[("TEE", "DC1")] == 4 and repairers[0].webhooks_seen == 0
        assert shown(0)[("TEE", "DC1")] == 6
    finally:
        for r in repairers:
            await r.stop()


def test_shop_list_settings_and_the_single_shop_shorthand():
    class One:
        shopify_url = "https://retailco.myshopify.com"
        shopify_token = "t"
        shopify_webhook_secrets = ["s"]

    [shop] = configured_shops(One())
    assert (shop.name, shop.domain, shop.channel, shop.pushes, shop.locations) == ("", "retailco.myshopify.com", "online", True, None)

    class Many:
        shopify_shops = '[{"name": "uk", "url": "https://a.myshopify.com", "token": "t", "channel": "online-uk"}, {"name": "us", "shop_domain": "B.myshopify.com"}]'

    uk, us = configured_shops(Many())
    assert (uk.domain, uk.channel, us.domain, us.pushes) == ("a.myshopify.com", "online-uk", "b.myshopify.com", False)
    for bad in (
        [{"name": "uk", "shop_domain": "a.myshopify.com"}, {"name": "uk", "shop_domain": "b.myshopify.com"}],
        [{"name": "uk", "shop_domain": "a.myshopify.com"}, {"name": "us", "shop_domain": "A.myshopify.com"}],
        [{"name": "Bad Name", "shop_domain": "a.myshopify.com"}],
        [{"name": "uk", "url": "http://127.0.0.1:1"}],  # no domain to tell its webhooks by
        [{"name": "uk", "shop_domain": "a.myshopify.com", "colour": "red"}],
    ):
        class S:
            shopify_shops = bad

        with pytest.raises(ShopConfigError):
            configured_shops(S())


async def test_the_service_runs_one_push_per_shop_from_the_json_setting(redis_url, key_prefix, tmp_path, monkeypatch):
    import json

    from availability.bootstrap import open_runtime
    from availability.config import Settings
    from availability.flows.inventory.service import PublisherService

    sims = [SimulatorServer(SimulatorConfig(shop_domain=f"svc-{n}.myshopify.com")) for n in ("a", "b")]
    for sim in sims:
        sim.start()
    try:
        shops, levels = [], []
        for n, (sim, channel) in enumerate(zip(sims, ("online", "marketplace"))):
            loc, item = sim.state.add_location("Warehouse"), sim.state.add_item("TEE")
            sim.state.stock(item, loc, 0)
            levels.append((sim, item, loc))
            shops.append({"name": f"s{n}", "url": sim.base_url, "token": sim.config.access_token,
                          "shop_domain": sim.config.shop_domain, "channel": channel,
                          "locations": {"DC1": loc}, "items": {"TEE": item}})
        # as an operator sets it: JSON in the environment
        monkeypatch.setenv("AVAILABILITY_SHOPIFY_SHOPS", json.dumps(shops))
        settings = Settings(
            redis_url=redis_url, database_url=f"sqlite+aiosqlite:///{tmp_path}/svc.db", key_prefix=key_prefix,
            data_dir=str(tmp_path), push_window_seconds=0.05, rules_refresh_seconds=0.1,
        )
        async with open_runtime(settings) as runtime:
            await runtime.store.import_master_data(
                {"locations": [{"code": "DC1"}], "channels": [
                    {"name": "online", "locations": ["DC1"]}, {"name": "marketplace", "locations": ["DC1"]}]},
                actor="test",
            )
            await runtime.store.create_rule({"kind": "buffer", "channel": "marketplace", "units": 3}, actor="test")
            await runtime.rules.refresh(force=True)
            service = PublisherService(runtime)
            await service.start()
            try:
                assert [p.shop.name for p in service.pushes] == ["s0", "s1"]
                await runtime.ledger.apply(stock_event("receipt", "TEE", "DC1", 12))
                (a, ia, la), (b, ib, lb) = levels
                assert await wait_for(lambda: a.state.available(ia, la) == 12 and b.state.available(ib, lb) == 9, 10)
            finally:
                await service.stop()
    finally:
        for sim in sims:
            sim.stop()
