"""Drift repair: inventory_levels/update webhooks from the stream, the periodic pass and
`resync` (with --dry-run), and how an entry on the stream is read."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from availability.flows.inventory import metrics
from availability.flows.inventory.drift import DriftRepairer, parse_level_entry
from tests.flows.conftest import wait_for


def test_stream_entries_in_the_shapes_ingestion_may_write():
    body = {"inventory_item_id": 40001, "location_id": 7001, "available": 3, "updated_at": "2026-11-20T10:00:00.000Z"}
    raw = msgspec.json.encode(body)
    for fields in ({b"payload": raw}, {b"level": raw}, {b"event": raw}, {k.encode(): str(v).encode() for k, v in body.items()}):
        u = parse_level_entry(fields)
        assert (u.item, u.location, u.available) == ("gid://shopify/InventoryItem/40001", "gid://shopify/Location/7001", 3)
        assert u.updated_ms == 1795168800000
    # what availability/ingest/http.py writes: field `level`, ingestion's InventoryLevelUpdate
    from datetime import datetime, timezone

    from adapters.shopify.webhooks import InventoryLevelUpdate

    level = InventoryLevelUpdate(
        inventory_item_id=40001, location_id=7001, available=3,
        updated_at=datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc), location="DC1",
    )
    u = parse_level_entry({b"level": msgspec.json.encode(level), b"webhook_id": b"w-1", b"received_at": b"1"})
    assert (u.item, u.location, u.available, u.updated_ms) == (
        "gid://shopify/InventoryItem/40001", "gid://shopify/Location/7001", 3, 1795168800000
    )
    untracked = parse_level_entry({b"payload": msgspec.json.encode({**body, "available": None})})
    assert untracked.available is None
    for bad in ({b"payload": b"{not json"}, {b"payload": b'{"location_id": 1}'}, {b"payload": b'{"inventory_item_id": -1, "location_id": 1}'}):
        with pytest.raises(ValueError):
            parse_level_entry(bad)


async def test_an_external_change_reported_by_webhook_is_repaired_with_its_value_as_compare(shop_factory, webhook_intake):
    shop = await shop_factory(["W"], initial=0, webhook_url=webhook_intake.url)
    await shop.receive("W", "DC1", 6)
    publisher = await shop.publisher(window_s=0.05)
    repairer = DriftRepairer(publisher, interval_s=0, block_ms=50)
    await repairer.start(periodic=False)
    try:
        assert await shop.converged(5) == {}
        assert await wait_for(lambda: webhook_intake.received >= 1, 3)  # our own write, echoed
        await asyncio.sleep(0.3)
        calls = publisher.stats.set_calls
        assert repairer.webhook_drift == 0  # the echo of our own write is not drift
        repaired = metrics.DRIFT_REPAIRED.labels("webhook")._value.get()

        item, loc = shop.items["W"], shop.shopify_locations["DC1"]
        # an admin edit (nothing moved in our ledger), announced by webhook
        async with httpx.AsyncClient() as http:
            await http.post(f"{shop.sim.base_url}/_sim/external-change", json={"inventory_item_id": item, "location_id": loc, "available": 11})
        assert await wait_for(lambda: shop.shopify("W", "DC1") == 6 and repairer.webhook_drift >= 1, 5)
        assert await wait_for(lambda: publisher.stats.drift_repaired == 1, 2)
        last = [r for r in shop.state.history_for(item, loc) if r.source == "api"][-1]
        assert (last.before, last.after) == (11, 6)  # compare value = the webhook's value
        assert publisher.stats.stale == 0
        assert publisher.stats.set_calls == calls + 1
        assert metrics.DRIFT_REPAIRED.labels("webhook")._value.get() == repaired + 1
    finally:
        await repairer.stop()


async def test_periodic_pass_and_resync_find_and_repair_drift(shop_factory):
    shop = await shop_factory(["P1", "P2", "P3"], initial=0)
    await shop.receive("P1", "DC1", 4)
    await shop.receive("P2", "S1", 2)
    publisher = await shop.publisher(window_s=0.05)
    assert await shop.converged(5) == {}
    # behind our back, without webhooks: two edits and a level nobody ever pushed
    shop.state.external_change(shop.items["P1"], shop.shopify_locations["DC1"], available=9)
    shop.state.external_change(shop.items["P3"], shop.shopify_locations["S1"], available=5)
    shop.state.unstock(shop.items["P2"], shop.shopify_locations["DC1"])
    repairer = DriftRepairer(publisher, interval_s=0)

    dry = await repairer.resync(dry_run=True)
    assert sorted((d["sku"], d["shopify"], d["ats"]) for d in dry["differences"]) == [("P1", 9, 4), ("P3", 5, 0)]
    assert [d["sku"] for d in dry["not_stocked_in_shopify"]] == ["P2"]
    await asyncio.sleep(0.3)
    assert shop.shopify("P1", "DC1") == 9  # a dry run changes nothing

    report = await repairer.run_pass(source="periodic")
    assert len(report.different) == 2 and report.levels == 6
    assert await wait_for(lambda: shop.shopify("P1", "DC1") == 4 and shop.shopify("P3", "S1") == 0, 5)
    assert publisher.stats.stale == 0  # the compare values were the ones just read

    shop.state.external_change(shop.items["P1"], shop.shopify_locations["S1"], available=3)
    await publisher.stop()
    result = await repairer.resync()  # the CLI path: no publisher running, it drains itself
    assert result["different"] == 1 and result["pushed"] == 1 and result["drained"]
    assert shop.shopify("P1", "S1") == 0
