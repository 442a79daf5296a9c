"""Shopify's own sales in flight (availability/flows/inventory/sales.py): the decision table as pure
functions, then against the simulator and the real ledger: a checkout Shopify made whose
level webhook lands before its order is not offered again, as it was before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from availability.flows.inventory.drift import DriftRepairer, LevelUpdate
from availability.flows.machinery import now_ms
from availability.flows.inventory.sales import (
    SalesConfig,
    SalesState,
    judge,
    observe,
    pushable,
    release_units,
    settle,
)
from availability.flows.inventory.state import Known
from tests.flows.conftest import stock_event, wait_for

L1, L2 = "gid://shopify/InventoryItem/1|gid://shopify/Location/1", "gid://shopify/InventoryItem/1|gid://shopify/Location/2"
W, MAX = 1000, 10_000
#: Bound of a drain (it returns once the queue is empty): generous for a loaded CI machine,
#: and asserted, so a drain cut short fails there rather than as a wrong level further on.
DRAIN_S = 60


# --- the decision table (docs/shopify-push.md) ---------------------------------------------------


def test_observation_without_a_baseline_holds_nothing():
    s = SalesState()
    assert observe(s, L1, None, 3, 100).kind == "no_baseline"
    assert s.holds == {}


def test_an_older_observation_is_ignored_and_an_equal_one_is_our_echo():
    s = SalesState()
    known = Known(5, 200, "push")
    assert observe(s, L1, known, 2, 100).kind == "older"
    assert observe(s, L1, known, 5, 300).kind == "echo"
    assert s.holds == {}


def test_a_drop_we_did_not_push_is_held_as_sales_in_flight():
    s = SalesState()
    obs = observe(s, L1, Known(5, 100, "push"), 3, 200)
    assert (obs.kind, obs.held, obs.explained) == ("sale_in_flight", 2, 0)
    assert s.held(L1) == 2 and s.held(L2) == 0
    assert pushable(10, s.held(L1)) == 8
    assert pushable(1, s.held(L1)) == 0  # never negative


def test_a_drop_explained_by_an_order_the_ledger_already_has_holds_nothing():
    s = SalesState(orders={"o1": (2, 50)})
    # the order's ledger event was applied before its drop was seen: a credit
    assert settle(s, {"o1"}, 100, window_ms=W, max_hold_ms=MAX).credited == 2
    obs = observe(s, L1, Known(5, 100, "push"), 2, 200)  # 3 down: 2 are that order
    assert (obs.kind, obs.held, obs.explained) == ("sale_in_flight", 1, 2)
    assert s.credits == {} and s.held(L1) == 1
    s2 = SalesState(credits={"o2": (4, 100)})
    obs = observe(s2, L1, Known(5, 100, "push"), 2, 200)
    assert (obs.kind, obs.explained) == ("sale_in_ledger", 3) and s2.credits == {"o2": (1, 100)}


def test_a_rise_is_never_a_sale():
    s = SalesState()
    obs = observe(s, L1, Known(5, 100, "push"), 9, 200)
    assert (obs.kind, obs.increase) == ("increase", 4) and s.holds == {}


def test_orders_in_the_ledger_settle_holds_oldest_first_across_levels():
    s = SalesState(holds={L1: [(1, 300)], L2: [(2, 100)]}, orders={"a": (2, 0), "b": (5, 0), "late": (1, 0)})
    out = settle(s, {"a", "b"}, 400, window_ms=W, max_hold_ms=MAX)
    # a (2) settles L2's older hold; b (5) settles L1's 1 and leaves a credit of 4
    assert (out.released, out.credited) == (3, 4)
    assert s.holds == {} and s.credits == {"b": (4, 400)} and s.orders == {"late": (1, 0)}


def test_an_order_not_yet_applied_settles_nothing():
    s = SalesState(holds={L1: [(1, 100)]}, orders={"a": (1, 50)})
    assert settle(s, set(), 200, window_ms=W, max_hold_ms=MAX).released == 0
    assert s.held(L1) == 1


def test_old_credits_and_orders_that_never_reach_the_ledger_expire():
    s = SalesState(credits={"c": (1, 0)}, orders={"o": (1, 0)})
    out = settle(s, set(), W + 1, window_ms=W, max_hold_ms=MAX)
    assert out.expired == 1 and s.credits == {} and s.orders == {"o": (1, 0)}
    assert settle(s, set(), MAX + 1, window_ms=W, max_hold_ms=MAX).expired == 1 and s.orders == {}


@pytest.mark.parametrize(
    ("held", "age", "committed", "kind", "keep", "external"),
    [
        (2, W - 1, 0, "wait", 2, 0),  # inside the window: the order webhook usually comes
        (2, W, None, "wait", 2, 0),  # could not read committed: next sweep
        (2, W, 2, "sales_confirmed", 2, 0),  # Shopify has orders enough to explain it
        (2, W, 5, "sales_confirmed", 2, 0),
        (3, W, 1, "external_decrease", 1, 2),  # at most 1 is a sale
        (2, W, 0, "external_decrease", 0, 2),  # an admin edit or another app
        (2, MAX, 9, "external_decrease", 0, 2),  # Shopify stopped retrying: no order is coming
    ],
)
def test_judging_a_hold_after_the_window(held, age, committed, kind, keep, external):
    verdict = judge(held, 1000, committed, 1000 + age, window_ms=W, max_hold_ms=MAX)
    assert (verdict.kind, verdict.keep, verdict.external) == (kind, keep, external)


def test_releasing_takes_the_newest_held_units_first():
    s = SalesState(holds={L1: [(2, 100), (3, 200)]})
    assert release_units(s, L1, 4) == 4 and s.holds == {L1: [(1, 100)]}
    assert release_units(s, L1, 5) == 1 and s.holds == {}


def test_policy_setting_is_checked():
    class S:
        shopify_external_edits = "ignore"

    with pytest.raises(ValueError, match="revert, adopt"):
        SalesConfig.from_settings(S())


# --- against the simulator and the ledger -----------------------------------------------------------


def checkout(shop, sku: str, location: str, units: int) -> None:
    """What a Shopify checkout does to the level before any webhook: available −n, committed +n."""
    item, loc = shop.items[sku], shop.shopify_locations[location]
    available = shop.state.available(item, loc)
    committed = shop.state.quantity(item, loc, "committed")
    shop.state.stock(item, loc, available - units, committed=committed + units)


def level_webhook(shop, sku: str, location: str) -> LevelUpdate:
    item, loc = shop.items[sku], shop.shopify_locations[location]
    return LevelUpdate(item, loc, shop.state.available(item, loc), now_ms())


def order_event(order: int, line: int, sku: str, units: int):
    # the ids the webhook mapping gives orders/create lines (adapters/shopify/webhooks.py)
    return stock_event(
        "reserve", sku, "DC1", units, event_id=f"shopify:orders/create:{order}:{line}", source="shopify",
        reference=str(order), channel="online", occurred_at=datetime.now(UTC),
    )


async def test_level_webhook_before_the_order_is_not_reoffered_as_it_was(shop_factory):
    """The old behaviour, reproduced with sales accounting off: the drop is taken for an
    external edit and the sold unit is pushed back. With it on, the unit stays sold."""
    outcomes = {}
    for enabled in (False, True):
        hot = f"HOT-{int(enabled)}"  # one ledger for both runs: a SKU each
        shop = await shop_factory([hot], initial=0)
        await shop.receive(hot, "DC1", 5)
        publisher = await shop.publisher(start=False, sales=SalesConfig(enabled=enabled, window_s=60))
        repairer = DriftRepairer(publisher, interval_s=0)
        assert await publisher.drain(timeout=DRAIN_S)
        assert shop.shopify(hot, "DC1") == 5

        checkout(shop, hot, "DC1", 1)  # a shopper buys the fifth-last unit on Shopify
        await repairer.handle_updates([level_webhook(shop, hot, "DC1")])  # its level webhook first
        assert await publisher.drain(timeout=DRAIN_S)
        outcomes[enabled] = shop.shopify(hot, "DC1")
        if not enabled:
            continue
        assert publisher.stats.quantities_pushed == 1  # nothing pushed back
        assert repairer.webhook_drift == 0

        await shop.receive(hot, "DC1", 3)  # stock moves before the order arrives: ATS 8
        assert await publisher.drain(timeout=DRAIN_S)
        assert shop.shopify(hot, "DC1") == 7  # ATS less the sale in flight

        # the order arrives: noted by the webhook handler, applied by the ledger
        await publisher.sales.note_orders([(hot, f"shopify:orders/create:{9000 + int(enabled)}:1", 1)])
        await shop.apply(order_event(9000 + int(enabled), 1, hot, 1))
        await shop.receive(hot, "DC1", 1)  # and something marks the level: ATS 8, held 0
        assert await publisher.drain(timeout=DRAIN_S)
        assert shop.shopify(hot, "DC1") == 8
        assert await publisher.sales.held([k for k in publisher.mappings.all_levels(hot)]) == {
            k: 0 for k in publisher.mappings.all_levels(hot)
        }
    # before: the unit Shopify sold is offered again (5); now it is not (4)
    assert outcomes == {False: 5, True: 4}


async def test_order_before_its_level_webhook_holds_nothing(shop_factory):
    shop = await shop_factory(["HOT"], initial=0)
    await shop.receive("HOT", "DC1", 5)
    publisher = await shop.publisher(start=False)
    repairer = DriftRepairer(publisher, interval_s=0)
    assert await publisher.drain(timeout=DRAIN_S)
    checkout(shop, "HOT", "DC1", 2)
    await publisher.sales.note_orders([("HOT", "shopify:orders/create:1:1", 2)])
    await shop.apply(order_event(1, 1, "HOT", 2))  # ATS 3; the level (3) is right already
    assert await publisher.drain(timeout=DRAIN_S)
    assert shop.shopify("HOT", "DC1") == 3
    await repairer.handle_updates([level_webhook(shop, "HOT", "DC1")])  # late, and explained
    key = publisher.mappings.all_levels("HOT")
    assert set((await publisher.sales.held(key)).values()) == {0}
    assert await publisher.drain(timeout=DRAIN_S)
    assert shop.shopify("HOT", "DC1") == 3


async def test_a_stale_push_reads_the_sale_and_holds_it(shop_factory):
    """Our push races the checkout: the compare-and-set fails, the read-back shows the drop,
    and the value pushed after it leaves the sold unit out."""
    shop = await shop_factory(["HOT"], initial=0)
    await shop.receive("HOT", "DC1", 5)
    publisher = await shop.publisher(start=False)
    assert await publisher.drain(timeout=DRAIN_S)
    checkout(shop, "HOT", "DC1", 1)  # no webhook yet
    await shop.receive("HOT", "DC1", 2)  # ATS 7
    assert await publisher.drain(timeout=DRAIN_S)
    assert publisher.stats.stale == 1
    assert shop.shopify("HOT", "DC1") == 6


async def test_an_external_decrease_is_reverted_after_the_window_and_committed_keeps_sales(shop_factory):
    shop = await shop_factory(["A", "B"], initial=0)
    await shop.receive("A", "DC1", 5)
    await shop.receive("B", "DC1", 5)
    # a window no loaded machine outlasts before the first sweep below; shortened after it
    publisher = await shop.publisher(start=False, sales=SalesConfig(window_s=60))
    repairer = DriftRepairer(publisher, interval_s=0)
    assert await publisher.drain(timeout=DRAIN_S)
    shop.state.external_change(shop.items["A"], shop.shopify_locations["DC1"], available=2)  # an admin edit
    checkout(shop, "B", "DC1", 2)  # a sale whose order is late
    await repairer.handle_updates([level_webhook(shop, "A", "DC1"), level_webhook(shop, "B", "DC1")])
    assert await publisher.drain(timeout=DRAIN_S)
    assert (shop.shopify("A", "DC1"), shop.shopify("B", "DC1")) == (2, 3)  # both held for now
    assert await repairer.sweep_sales() == {"skus": 0, "kept": 0, "external": 0}  # inside the window
    # The window is now 0.2 s, and the holds began before the first sweep: past it after the
    # sleep (the sweep and `due` read the window from the config at each call).
    window_s = 0.2
    publisher.sales_config = publisher.sales.config = replace(publisher.sales_config, window_s=window_s)
    await asyncio.sleep(window_s + 0.05)
    swept = await repairer.sweep_sales()
    assert swept == {"skus": 2, "kept": 2, "external": 3}
    assert await publisher.drain(timeout=DRAIN_S)
    # A: committed 0, so no sale: ATS pushed back. B: committed 2 covers it: still held.
    assert (shop.shopify("A", "DC1"), shop.shopify("B", "DC1")) == (5, 3)


async def test_adopt_books_external_edits_in_the_ledger(shop_factory):
    shop = await shop_factory(["A"], initial=0)
    await shop.receive("A", "DC1", 5)
    publisher = await shop.publisher(start=False, sales=SalesConfig(window_s=0.2, policy="adopt"))
    repairer = DriftRepairer(publisher, interval_s=0)
    assert await publisher.drain(timeout=DRAIN_S)
    shop.state.external_change(shop.items["A"], shop.shopify_locations["DC1"], available=8)
    await repairer.handle_updates([level_webhook(shop, "A", "DC1")])
    assert (await shop.ledger.stock("A"))["DC1"].on_hand == 8  # found +3
    assert await publisher.drain(timeout=DRAIN_S)
    assert shop.shopify("A", "DC1") == 8
    shop.state.external_change(shop.items["A"], shop.shopify_locations["DC1"], available=6)
    await repairer.handle_updates([level_webhook(shop, "A", "DC1")])
    await asyncio.sleep(0.25)
    assert (await repairer.sweep_sales())["external"] == 2
    assert (await shop.ledger.stock("A"))["DC1"].on_hand == 6  # lost −2
    assert await publisher.drain(timeout=DRAIN_S)
    assert shop.shopify("A", "DC1") == 6 and await shop.differences() == {}
    assert await wait_for(lambda: publisher.stats.quantities_pushed == 1, 1)  # nothing pushed over the edits


async def test_a_retried_push_applied_without_idempotency_is_not_taken_for_a_sale(shop_factory):
    """Before 2026-01 there is no @idempotent: a call whose answer was lost but which was
    applied comes back stale on its retry, and the read-back shows our own value."""
    from availability.flows.machinery import Backoff

    shop = await shop_factory(["OLD"], initial=0)
    await shop.receive("OLD", "DC1", 5)
    client = shop.client(version="2025-10", timeout=0.2)
    publisher = await shop.publisher(start=False, client=client, backoff=Backoff(base=0.01, cap=0.05, max_attempts=5))
    assert await publisher.drain(timeout=DRAIN_S)
    await shop.sell("OLD", "DC1", 2)  # ATS 3
    shop.state.set_faults(timeout_rate=1.0, timeout_s=0.5)  # applied, answer lost
    original = client.set_available

    def api_writes() -> int:
        return sum(1 for r in shop.state.history if r.source == "api")

    async def lose_one_answer(*args, **kwargs):
        client.set_available = original  # the retry goes straight through
        before = api_writes()
        try:
            return await original(*args, **kwargs)
        finally:
            shop.state.set_faults(timeout_rate=0.0)
            # The client gives up after 0.2 s, which a loaded machine can pass before the
            # simulator has even applied the call; the retry must come after it is applied
            # (else it applies itself and nothing is stale), so wait for the application.
            assert await wait_for(lambda: api_writes() > before, 60), "the lost call was never applied"

    client.set_available = lose_one_answer
    assert await publisher.drain(timeout=DRAIN_S)
    assert shop.shopify("OLD", "DC1") == 3
    assert publisher.stats.stale == 1 and publisher.stats.retries >= 1
    assert set((await publisher.sales.held(publisher.mappings.all_levels("OLD"))).values()) == {0}


async def test_the_whole_intake_path_a_checkout_webhooks_in_the_wrong_order(redis_url, key_prefix, tmp_path):
    """Through the real pieces: the signed level webhook of a Shopify checkout enters the
    webhook handler before its orders/create; drift repair reads it from the shop's stream;
    the stream consumer books the order; Shopify is never shown the sold unit again."""
    import json
    from datetime import datetime, timezone

    from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
    from adapters.shopify.webhooks import compute_hmac
    from availability.bootstrap import open_runtime
    from availability.flows.inventory.service import build_publisher
    from availability.ingest.consumer import StreamConsumer
    from availability.ingest.shopify_webhooks import ShopifyWebhookHandler
    from tests.ingest.conftest import make_settings

    sim = SimulatorServer(SimulatorConfig())
    sim.start()
    try:
        loc = sim.state.add_location("Warehouse")
        item = sim.state.add_item("HOT")
        sim.state.stock(item, loc, 0)
        settings = make_settings(
            redis_url, key_prefix, tmp_path, shopify_url=sim.base_url, shopify_token=sim.config.access_token,
            shopify_webhook_secrets=[sim.config.webhook_secret], shopify_shop_domain=sim.config.shop_domain,
            shopify_default_location="DC1", shopify_sales_window_seconds=60,
        )
        async with open_runtime(settings) as runtime:
            await runtime.store.import_master_data(
                {"locations": [{"code": "DC1"}], "channels": [{"name": "online", "locations": ["DC1"]}]}, actor="t"
            )
            await runtime.store.mappings.set_item_mappings({"HOT": item}, actor="t")
            await runtime.store.mappings.set_location_mappings([("online", "DC1", loc)], actor="t")
            await runtime.rules.refresh(force=True)
            publisher = build_publisher(runtime)
            repairer = DriftRepairer(publisher, interval_s=0)
            handler = ShopifyWebhookHandler(runtime)
            try:
                await runtime.ledger.apply(stock_event("receipt", "HOT", "DC1", 5))
                assert await publisher.drain(timeout=DRAIN_S)
                assert sim.state.available(item, loc) == 5

                def signed(topic: str, body: dict, n: int) -> tuple[dict, bytes]:
                    raw = json.dumps(body).encode()
                    return {
                        "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": compute_hmac(raw, sim.config.webhook_secret),
                        "X-Shopify-Shop-Domain": sim.config.shop_domain, "X-Shopify-Webhook-Id": f"wh-{n}",
                        "X-Shopify-Event-Id": f"ev-{n}", "X-Shopify-Triggered-At": datetime.now(timezone.utc).isoformat(),
                    }, raw

                # a shopper buys one on Shopify: available 4, committed 1, and the level webhook comes first
                sim.state.stock(item, loc, 4, committed=1)
                now = datetime.now(timezone.utc).isoformat()
                level = {"inventory_item_id": int(item.rsplit("/", 1)[1]), "location_id": int(loc.rsplit("/", 1)[1]),
                         "available": 4, "updated_at": now}
                answer = await handler.handle(*signed("inventory_levels/update", level, 1))
                assert answer.status == 200 and answer.body["status"] == "accepted"
                await repairer.handle_entries(await runtime.redis.xrange(publisher.keys.levels_stream))
                await runtime.ledger.apply(stock_event("receipt", "HOT", "DC1", 2))  # stock moves meanwhile: ATS 7
                assert await publisher.drain(timeout=DRAIN_S)
                assert sim.state.available(item, loc) == 6  # not 7: one of them is sold

                order = {"id": 4242, "created_at": now, "line_items": [{"id": 1, "sku": "HOT", "quantity": 1}]}
                assert (await handler.handle(*signed("orders/create", order, 2))).body["events"] == 1
                async with StreamConsumer(runtime):
                    async def booked():
                        return (await runtime.ledger.stock("HOT"))["DC1"].reserved == 1
                    assert await wait_for(booked, 60)
                await runtime.ledger.apply(stock_event("receipt", "HOT", "DC1", 1))  # ATS 7, nothing held
                assert await publisher.drain(timeout=DRAIN_S)
                assert sim.state.available(item, loc) == 7
                assert set((await publisher.sales.held(publisher.mappings.all_levels("HOT"))).values()) == {0}
            finally:
                await publisher.client.aclose()
    finally:
        sim.stop()
