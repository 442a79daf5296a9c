"""`availability shopify resync --bulk` end to end against the simulator's bulk operations:
the bulk client's round trip (staged upload, run, poll, download) and a resync that finds
and repairs drifted levels, compare-and-set, with Shopify's sales in flight held."""

from __future__ import annotations

import asyncio

import msgspec

from adapters.shopify.bulk import BulkClient
from adapters.shopify.client import SetQuantity
from availability.flows.inventory.drift import DriftRepairer
from tests.flows.conftest import wait_for
from tests.flows.test_sales import checkout


async def test_bulk_client_round_trip_reads_and_writes_every_level(shop_factory):
    shop = await shop_factory(["B1", "B2", "B3"], initial=2)
    client = shop.client()
    bulk = BulkClient(client, poll_s=0.02)
    seen: list[int] = []
    levels = await bulk.read_levels(on_progress=seen.append)
    assert levels.items == 3 and len(levels.levels) == 6 and set(levels.levels.values()) == {2}
    assert levels.operation.status == "COMPLETED" and levels.operation.object_count >= 9
    item, loc = shop.items["B1"], shop.shopify_locations["DC1"]
    other = shop.shopify_locations["S1"]
    # 300 entries would be two lines; here two lines of one level each is enough: one
    # applies, one is stale (its compare value is wrong) and is refused all or nothing
    lines = await bulk.set_available([SetQuantity(item, loc, 7, 2)])
    assert [line.ok for line in lines] == [True]
    assert shop.state.available(item, loc) == 7
    stale = await bulk.set_available([SetQuantity(item, other, 5, 9)])
    assert stale[0].stale and shop.state.available(item, other) == 2
    body = b"".join(msgspec.json.encode(v) + b"\n" for _c, v in bulk.set_lines([SetQuantity(item, loc, 1, 7)] * 251))
    assert body.count(b"\n") == 2  # 250 quantities per line


async def test_bulk_resync_repairs_drift_and_holds_sales_in_flight(shop_factory):
    shop = await shop_factory(["R1", "R2", "R3", "R4"], initial=0)
    for sku, qty in (("R1", 4), ("R2", 6), ("R3", 3), ("R4", 5)):
        await shop.receive(sku, "DC1", qty)
    publisher = await shop.publisher(window_s=0.05)
    assert await shop.converged(5) == {}
    dc1 = shop.shopify_locations["DC1"]
    # behind our back: an admin raise, a level set to zero, and a Shopify checkout
    # (available -1, committed +1) whose order the ledger does not have yet
    shop.state.external_change(shop.items["R1"], dc1, available=9)
    shop.state.external_change(shop.items["R2"], dc1, available=0)
    checkout(shop, "R3", "DC1", 1)
    assert shop.shopify("R3", "DC1") == 2
    await publisher.stop()
    repairer = DriftRepairer(publisher, interval_s=0)

    dry = await repairer.bulk_resync(dry_run=True, poll_s=0.02)
    # a dry run records nothing, so it cannot tell a sale from an edit: every difference
    assert sorted((d["sku"], d["shopify"], d["ats"]) for d in dry["differences"]) == [
        ("R1", 9, 4), ("R2", 0, 6), ("R3", 2, 3)
    ]
    assert shop.shopify("R1", "DC1") == 9

    phases: set[str] = set()
    result = await repairer.bulk_resync(poll_s=0.02, on_progress=lambda phase, n, total: phases.add(phase))
    # the raise is never a sale: pushed back to ATS. Both drops are held as Shopify's own
    # sales in flight (a drop cannot be told from a sale until the order or the window)
    assert result["pushed"] == 1 and result["left_to_the_publisher"] == 0 and result["refused"] == {}
    assert {"read", "compare", "write"} <= phases
    assert (shop.shopify("R1", "DC1"), shop.shopify("R2", "DC1"), shop.shopify("R3", "DC1")) == (4, 0, 2)
    last = [r for r in shop.state.history_for(shop.items["R1"], dc1) if r.source == "api"][-1]
    assert (last.before, last.after) == (9, 4)  # compare-and-set against the bulk read
    again = await repairer.bulk_resync(poll_s=0.02)
    assert again["different"] == 0 and "pushed" not in again  # known values and holds recorded

    # after the sales window the sweep judges the holds: R2's drop is not covered by
    # `committed` (an external decrease: reverted), R3's is (a late order: kept)
    await asyncio.sleep(0.45)
    swept = await repairer.sweep_sales()
    assert swept, swept
    await shop.publisher(window_s=0.05)
    assert await wait_for(lambda: shop.shopify("R2", "DC1") == 6, 5)
    assert shop.shopify("R3", "DC1") == 2
