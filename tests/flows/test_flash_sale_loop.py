"""A flash sale through the whole loop: shoppers buy on Shopify (the simulator's checkout,
concurrently) and through our reservation API at the same time; Shopify's webhooks
(orders/create, inventory_levels/update) arrive late, twice and out of order (the
simulator's seeded delivery faults) at the app's real webhook route; the app's own
services run: the stream consumer books the orders, the publisher and drift repair push
all along. Afterwards every push Shopify accepted and every checkout (the simulator's
history, in order) is checked against a plain-Python account of what was sold.

Invariants:

* Shopify (DENY) never sold a unit it did not show: no checkout below zero.
* **No unit re-offered after Shopify sold it**: every push Shopify accepted set
  `available` to at most stock − Shopify's sales so far − our API's sales acknowledged
  before the push's value was computed (the publisher's own `computed_ms`, from its
  confirmations: it reads the ledger after that instant, so every sale acknowledged
  before it is in the value, however long the round took to reach Shopify).
* Units sold across both channels never exceed the stock when the API's share is fenced
  (`test_flash_sale_*`: the API sells only what the Shopify channel is not shown, so an
  oversell can only come from our pushes re-offering Shopify's sold units).
* After the traffic stops: every order and every reservation is in the ledger once, and
  Shopify converges to ATS.

The shoppers buy for at least the sale's duration and until it has sold out (Shopify
shows 0 everywhere, the API's share is spent), so a slow machine makes the sale longer,
not different.

A cross-channel race the push cannot close is left out of the totals on purpose: our
reservation API reads the ledger, which learns of a Shopify sale only when its order
webhook is booked, so an API shopper can take a unit Shopify sold a moment ago (the held
sales live in the push path only): hence the fence (docs/shopify-push.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest

from adapters.shopify.simulator import FaultConfig, SimulatorConfig, SimulatorServer
from availability.api.app import create_app
from availability.bootstrap import open_runtime
from availability.config import Settings
from tests.api.conftest import ADMIN, KEYS, Lifespan, bearer
from tests.flows.conftest import stock_event, wait_for

SKUS = ("FLASH-A", "FLASH-B", "FLASH-C")
#: only a sale that cannot sell out (or a hung service) reaches these, however slow the machine
SALE_BOUND_S = 120.0
SETTLE_BOUND_S = 60.0


@dataclass
class Traffic:
    shopify_ok: dict[str, int] = field(default_factory=dict)
    shopify_refused: int = 0
    api_acks: list[tuple[float, str, int]] = field(default_factory=list)  # (wall time, sku, units)
    api_refused: int = 0
    #: the publisher's `Confirmation`s from the start of the traffic (when each value was computed)
    confirmations: list = field(default_factory=list)
    started_at: float = 0.0  # wall time
    sold_out: bool = False


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _run_flash_sale(redis_url, key_prefix, tmp_path, *, seed: int, stock: int, fenced: bool, duration_s: float, **overrides):
    rng = random.Random(seed)
    sock = _free_socket()
    app_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    faults = FaultConfig(
        webhook_delay_ms=60, webhook_delay_jitter_ms=120, webhook_duplicate_rate=0.2, webhook_reorder_rate=0.3,
        webhook_reorder_hold_ms=250,
    )
    sim = SimulatorServer(SimulatorConfig(faults=faults, seed=seed, webhook_url=f"{app_url}/webhooks/shopify"))
    sim.start()
    server_task = None
    try:
        loc = sim.state.add_location("Warehouse")
        items = {sku: sim.state.add_item(sku) for sku in SKUS}  # DENY: no checkout beyond available
        for gid in items.values():
            sim.state.stock(gid, loc, 0)
        settings = Settings(
            _env_file=None, redis_url=redis_url, key_prefix=key_prefix, data_dir=str(tmp_path / "var"),
            database_url=f"sqlite+aiosqlite:///{tmp_path}/rules.db", api_keys=json.dumps(KEYS), events_mode="direct",
            rate_limit_per_second=0, partitions=2, consumer_poll_ms=20, reclaim_interval_seconds=0.2,
            shopify_url=sim.base_url, shopify_token=sim.config.access_token,
            shopify_webhook_secrets=[sim.config.webhook_secret], shopify_shop_domain=sim.config.shop_domain,
            shopify_default_location="DC1", push_window_seconds=0.05, rules_refresh_seconds=0.1, **overrides,
        )
        async with open_runtime(settings) as runtime:
            channels = [{"name": "online", "locations": ["DC1"], "priority": 1}, {"name": "app", "locations": ["DC1"], "priority": 2}]
            await runtime.store.import_master_data({"locations": [{"code": "DC1"}], "channels": channels}, actor="t")
            await runtime.store.mappings.set_item_mappings(items, actor="t")
            await runtime.store.mappings.set_location_mappings([("online", "DC1", loc)], actor="t")
            api_share = stock // 3 if fenced else 0
            if fenced:
                # the API's units are not shown on Shopify: the online channel keeps back the
                # API's share, and the API sells at most that share (checked by the shoppers)
                await runtime.store.create_rule({"kind": "buffer", "channel": "online", "units": api_share}, actor="t")
            await runtime.rules.refresh(force=True)
            for sku in SKUS:
                await runtime.ledger.apply(stock_event("receipt", sku, "DC1", stock))

            app = create_app(runtime, services=["consumer", "publisher"])
            import uvicorn

            server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
            async with Lifespan(app):
                server_task = asyncio.create_task(server.serve(sockets=[sock]))
                assert await wait_for(lambda: server.started, SETTLE_BOUND_S)
                async with httpx.AsyncClient(base_url=app_url, headers=bearer(ADMIN), timeout=10) as api, httpx.AsyncClient(
                    base_url=sim.base_url, timeout=10
                ) as shop:
                    shown = stock - api_share
                    assert await wait_for(
                        lambda: all(sim.state.available(g, loc) == shown for g in items.values()), SETTLE_BOUND_S
                    )
                    push = next(x for x in app.state.api.services if getattr(x, "name", "") == "publisher").publisher
                    traffic = Traffic(started_at=time.time())
                    push.on_confirm = traffic.confirmations.append
                    api_left = {sku: api_share for sku in SKUS}
                    min_end = time.monotonic() + duration_s
                    hard_end = min_end + SALE_BOUND_S

                    def sold_out() -> bool:
                        return not any(api_left.values()) and all(sim.state.available(g, loc) == 0 for g in items.values())

                    def on() -> bool:
                        now = time.monotonic()
                        return now < min_end or (now < hard_end and not sold_out())

                    async def shopify_buyer(n: int) -> None:
                        r = random.Random(seed * 1000 + n)
                        while on():
                            sku, qty = r.choice(SKUS), r.choice((1, 1, 1, 2))
                            resp = await shop.post("/_sim/checkout", json={"line_items": [{"sku": sku, "quantity": qty}], "location_id": loc})
                            if resp.status_code == 201:
                                traffic.shopify_ok[sku] = traffic.shopify_ok.get(sku, 0) + qty
                            else:
                                assert resp.status_code == 409, resp.text
                                traffic.shopify_refused += 1
                            await asyncio.sleep(r.uniform(0.05, 0.2))

                    async def api_buyer(n: int) -> None:
                        r = random.Random(seed * 1000 + 500 + n)
                        k = 0
                        while on():
                            sku, qty = r.choice(SKUS), 1
                            if fenced and api_left[sku] < qty:
                                await asyncio.sleep(0.01)
                                continue
                            if fenced:
                                api_left[sku] -= qty
                            k += 1
                            body = {"reservation_id": f"app-{seed}-{n}-{k}", "channel": "app", "lines": [{"sku": sku, "quantity": qty}], "ttl_seconds": 3600}
                            resp = await api.post("/v1/reservations", json=body)
                            if resp.status_code == 201:
                                traffic.api_acks.append((time.time(), sku, qty))
                            else:
                                assert resp.status_code == 409, resp.text
                                traffic.api_refused += 1
                                if fenced:
                                    api_left[sku] += qty
                            await asyncio.sleep(r.uniform(0.05, 0.25))

                    # paced so that the sale lasts about the traffic's duration: the publisher
                    # pushes API sales while Shopify sells and its webhooks straggle in
                    await asyncio.gather(*(shopify_buyer(n) for n in range(4)), *(api_buyer(n) for n in range(3)))
                    traffic.sold_out = sold_out()

                    # the traffic has stopped: every order booked once, Shopify at ATS
                    orders = (await shop.get("/_sim/orders")).json()
                    sold_on_shopify: dict[str, int] = {}
                    for o in orders["orders"]:
                        for line in o["line_items"]:
                            sold_on_shopify[line["sku"]] = sold_on_shopify.get(line["sku"], 0) + int(line["quantity"])
                    assert sold_on_shopify == {k: v for k, v in traffic.shopify_ok.items() if v}
                    api_sold = {sku: sum(q for _t, s, q in traffic.api_acks if s == sku) for sku in SKUS}

                    async def booked() -> bool:
                        for sku in SKUS:
                            b = (await runtime.ledger.stock(sku))["DC1"]
                            if b.reserved != sold_on_shopify.get(sku, 0) + api_sold[sku]:
                                return False
                        return True

                    assert await wait_for(booked, SETTLE_BOUND_S, 0.1), "every Shopify order and API reservation in the ledger once"

                    async def converged() -> bool:
                        for sku in SKUS:
                            b = (await runtime.ledger.stock(sku))["DC1"]
                            want = max(0, b.on_hand - b.reserved - api_share)  # the online channel's ATS
                            if sim.state.available(items[sku], loc) != want:
                                return False
                        return True

                    ok = await wait_for(converged, SETTLE_BOUND_S, 0.1)
                    if not ok:  # say what differs
                        diff = {}
                        for sku in SKUS:
                            b = (await runtime.ledger.stock(sku))["DC1"]
                            held = await push.sales.held(push.mappings.all_levels(sku))
                            diff[sku] = (b.on_hand, b.reserved, sim.state.available(items[sku], loc),
                                         sim.state.quantity(items[sku], loc, "committed"), dict(held),
                                         await runtime.redis.hgetall(push.sales.sales_key(sku)))
                        ok = diff
                    return sim, items, loc, traffic, sold_on_shopify, api_sold, ok
    finally:
        if server_task is not None:
            server.should_exit = True
            await asyncio.wait_for(server_task, 10)
        sim.stop()
        sock.close()


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _computed_ms(traffic: Traffic, sku: str, loc: str, rec) -> int | None:
    """When the value of the push `rec` (a history record) was computed: the confirmation
    of that level and value whose round spans the moment Shopify applied it (a SKU's rounds
    never overlap). None for a push of before the traffic (no confirmation recorded)."""
    at = _ms(rec.at)
    for c in traffic.confirmations:
        if c.pushed and c.key.sku == sku and c.key.location == loc and c.value == rec.after:
            if c.computed_ms <= at <= c.confirmed_ms:
                return c.computed_ms
    return None


def _check_pushes(sim, items, loc, stock, traffic: Traffic, *, kept_back: int = 0) -> tuple[int, int]:
    """Replay the simulator's history in order against the account of sales; fail on a push
    that offered a unit already sold (or one the online channel keeps back: `kept_back`, its
    buffer). Returns (pushes checked, of them matched to the publisher's computed time)."""
    checked = matched = 0
    started_ms = int(traffic.started_at * 1000)
    for sku, item in items.items():
        shopify_sold = 0
        for rec in sim.state.history_for(item, loc):
            if rec.name != "available":
                continue
            if rec.source == "checkout":
                assert rec.after >= 0, f"{sku}: Shopify sold below zero ({rec})"
                shopify_sold += rec.before - rec.after
            elif rec.source == "cancel":
                shopify_sold -= rec.after - rec.before
            elif rec.source == "api":
                computed = _computed_ms(traffic, sku, loc, rec)
                if computed is None:
                    # not confirmed since the traffic started: a push of the sale's set-up
                    assert _ms(rec.at) <= started_ms, f"{sku}: a push during the sale without its confirmation: {rec}"
                    computed = started_ms
                else:
                    matched += 1
                api_before = sum(q for t, s, q in traffic.api_acks if s == sku and t * 1000 < computed)
                limit = stock - kept_back - shopify_sold - api_before
                assert rec.after <= max(0, limit), (
                    f"{sku}: push to {rec.after} offered sold units (stock {stock}, Shopify sold {shopify_sold}, "
                    f"API sold {api_before} before the value was computed)"
                )
                checked += 1
    return checked, matched


async def _flash_sale(redis_url, key_prefix, tmp_path, seed: int, *, duration_s: float = 3.0, **overrides) -> None:
    stock = 30
    sim, items, loc, traffic, shopify_sold, api_sold, converged = await _run_flash_sale(
        redis_url, key_prefix, tmp_path, seed=seed, stock=stock, fenced=True, duration_s=duration_s, **overrides
    )
    # The pushes first: a push that re-offers sold units also keeps the sale from selling out,
    # and this says which push did it.
    # (pushes during the sale: as many as the sale's order needs; when Shopify sells out
    # first, the API's sales leave its 0 unchanged and only the set-up pushes are checked)
    checked, _during_sale = _check_pushes(sim, items, loc, stock, traffic, kept_back=stock // 3)
    assert checked >= len(SKUS), checked
    for sku in SKUS:
        assert shopify_sold.get(sku, 0) + api_sold[sku] <= stock, f"{sku} oversold"
    assert sum(shopify_sold.values()) > 0 and sum(api_sold.values()) > 0, "both channels sold"
    assert traffic.sold_out, f"the flash sale sold out on Shopify and the API within {SALE_BOUND_S} s"
    assert converged is True, f"Shopify converges to ATS after the traffic: {converged}"


@pytest.mark.parametrize("seed", [1, 2])
async def test_flash_sale_across_shopify_and_the_api(redis_url, key_prefix, tmp_path, seed):
    await _flash_sale(redis_url, key_prefix, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 11))
async def test_flash_sale_more_seeds(redis_url, key_prefix, tmp_path, seed):
    await _flash_sale(redis_url, key_prefix, tmp_path, seed, duration_s=6.0)
