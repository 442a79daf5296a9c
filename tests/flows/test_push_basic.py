"""The publisher against the real simulator over HTTP: what gets pushed, when, and how."""

from __future__ import annotations

import asyncio
import dataclasses

from availability.flows.inventory import metrics
from availability.flows.machinery import OutboxMessage, new_idempotency_key, now_ms
from availability.flows.inventory.mappings import LevelKey, Target
from tests.flows.conftest import stock_event, wait_for


#: how long a change may take to reach Shopify here: a bound for a hung push, not a speed
#: requirement (what must be fast is checked with a held window below, not with a stopwatch)
SETTLE = 30.0
#: a coalescing window no test outlasts: while it is set, only the urgent path pushes
HELD = 3600.0


def _window(publisher, seconds: float) -> None:
    """Change the running publisher's window (the loop reads it every round)."""
    publisher.config = dataclasses.replace(publisher.config, window_s=seconds)


async def _pushed(shop, publisher, sku: str, location: str, value: int) -> bool:
    """Shopify shows `value` and the publisher has recorded it as what Shopify holds (the
    value the urgent scan compares with)."""
    key = LevelKey(sku, shop.items[sku], shop.shopify_locations[location])
    known = (await publisher.state.known_many([key]))[key]
    return shop.shopify(sku, location) == value and known is not None and known.value == value


async def test_changes_reach_shopify_and_equal_ats(shop_factory):
    shop = await shop_factory(3, initial=0)
    await shop.publisher()
    await shop.receive("SKU-000", "DC1", 7)
    await shop.receive("SKU-001", "S1", 3)
    await shop.apply(stock_event("adjustment", "SKU-001", "S1", 1, reason="damaged"))
    assert await shop.converged(SETTLE) == {}
    assert shop.shopify("SKU-000", "DC1") == 7
    assert shop.shopify("SKU-001", "S1") == 2


async def test_hundred_events_on_one_sku_inside_the_window_push_one_quantity(shop_factory):
    shop = await shop_factory(["HOT"], initial=0)
    shop.state.stock(shop.items["HOT"], shop.shopify_locations["DC1"], 1000)
    await shop.receive("HOT", "DC1", 1000)
    publisher = await shop.publisher(window_s=1.0)
    assert await wait_for(lambda: publisher.stats.unchanged >= 1, SETTLE)  # DC1 read back: already 1000
    applied_before = shop.state.stats.quantities_applied
    claimed_before = publisher.stats.marks_claimed
    # Hold the window open while the 100 events land (however long they take here), then
    # let it close: 1000 -> 900 crosses nothing, so only the window can push it.
    _window(publisher, HELD)
    for _ in range(100):
        await shop.sell("HOT", "DC1")
    assert await publisher.urgent_scan() == 0
    assert shop.state.stats.quantities_applied == applied_before, "nothing pushed inside the window"
    _window(publisher, 1.0)
    assert await shop.converged(SETTLE) == {}
    await asyncio.sleep(0.3)
    assert shop.shopify("HOT", "DC1") == 900
    assert shop.state.stats.quantities_applied - applied_before == 1
    assert publisher.stats.quantities_pushed == 1
    assert publisher.stats.marks_claimed - claimed_before == 1  # the 100 events were one mark


async def test_selling_out_is_pushed_at_once_not_after_the_window(shop_factory):
    shop = await shop_factory(["LAST"], initial=0)
    await shop.receive("LAST", "DC1", 3)
    publisher = await shop.publisher(window_s=0.0)
    assert await wait_for(lambda: _pushed(shop, publisher, "LAST", "DC1", 3), SETTLE)
    _window(publisher, HELD)  # whatever reaches Shopify from now on took the urgent path

    await shop.sell("LAST", "DC1", 3)
    assert await wait_for(lambda: shop.shopify("LAST", "DC1") == 0, SETTLE)
    assert publisher.stats.urgent_claimed >= 1

    # back in stock is urgent too; an ordinary change waits for the window
    await shop.receive("LAST", "DC1", 4)
    assert await wait_for(lambda: _pushed(shop, publisher, "LAST", "DC1", 4), SETTLE)
    await shop.sell("LAST", "DC1", 1)
    assert await publisher.urgent_scan() == 0  # 4 -> 3 crosses nothing: it waits for the window
    await asyncio.sleep(0.3)
    assert shop.shopify("LAST", "DC1") == 4
    _window(publisher, 0.0)
    assert await wait_for(lambda: shop.shopify("LAST", "DC1") == 3, SETTLE)


async def test_crossing_the_channel_threshold_is_urgent(shop_factory):
    shop = await shop_factory(["TH"], initial=0)
    await shop.store.import_master_data(
        {"rules": [{"kind": "threshold", "channel": "online", "units": 5}]}, actor="test"
    )
    await shop.rules.refresh()
    await shop.receive("TH", "DC1", 8)
    publisher = await shop.publisher(window_s=0.0)
    assert await wait_for(lambda: _pushed(shop, publisher, "TH", "DC1", 8), SETTLE)
    _window(publisher, HELD)
    await shop.sell("TH", "DC1", 4)  # 8 -> 4 units: below the threshold, online shows 0
    assert await wait_for(lambda: shop.shopify("TH", "DC1") == 0, SETTLE)
    assert publisher.stats.urgent_claimed >= 1


async def test_external_change_during_a_push_is_read_before_it_is_overwritten(shop_factory):
    """A push computed before someone else's change must not land on top of it: the
    compare-and-set fails, we read the new value, recompute from the ledger, push again."""
    shop = await shop_factory(["X"], initial=0)
    await shop.receive("X", "DC1", 10)
    publisher = await shop.publisher(window_s=0.0)
    assert await shop.converged(SETTLE) == {}
    stale_before = publisher.stats.stale
    item, loc = shop.items["X"], shop.shopify_locations["DC1"]
    shop.state.set_faults(latency_ms=400)
    await shop.sell("X", "DC1", 2)  # ATS 8, computed now, push in flight for 400 ms
    await asyncio.sleep(0.15)
    shop.state.external_change(item, loc, available=15)  # a merchant edit lands first
    external_seq = shop.state.history[-1].seq
    assert await wait_for(lambda: shop.shopify("X", "DC1") == 8 and publisher.stats.stale > stale_before, SETTLE)
    shop.state.set_faults(latency_ms=0)
    after = [r for r in shop.state.history_for(item, loc) if r.seq > external_seq]
    # the only write after the external one started from the value it read (15), not from 10
    assert [(r.source, r.before, r.after) for r in after] == [("api", 15, 8)]
    assert shop.state.stats.mutations_rejected >= 1
    assert publisher.stats.stale == stale_before + 1


async def test_unmapped_skus_are_counted_listed_and_pushed_once_mapped(shop_factory):
    shop = await shop_factory(["KNOWN"], initial=0)
    publisher = await shop.publisher(window_s=0.05)
    before = metrics.UNMAPPED_MARKS._value.get()
    await shop.receive("GHOST", "DC1", 4)
    await shop.receive("KNOWN", "DC1", 2)
    assert await shop.converged(SETTLE) == {}
    assert await wait_for(lambda: publisher.stats.unmapped_marks >= 1, SETTLE)
    assert metrics.UNMAPPED_MARKS._value.get() > before
    assert [sku for sku, _ in await publisher.state.unmapped()] == ["GHOST"]
    assert metrics.UNMAPPED_SKUS._value.get() >= 1

    # once Shopify knows it and it is mapped, its stock is pushed without a new event
    gid = shop.state.add_item("GHOST")
    shop.state.stock(gid, shop.shopify_locations["DC1"], 0)
    await shop.store.mappings.set_item_mappings({"GHOST": gid}, actor="test")
    await shop.rules.refresh()
    assert await wait_for(lambda: shop.state.available(gid, shop.shopify_locations["DC1"]) == 4, SETTLE)
    assert await publisher.state.unmapped() == []


async def test_permanent_errors_are_dead_lettered_and_replayable(shop_factory):
    shop = await shop_factory(["OK", "GONE", "MOVED"], initial=0)
    await shop.receive("OK", "DC1", 1)
    await shop.receive("GONE", "DC1", 1)
    await shop.receive("MOVED", "DC1", 1)
    publisher = await shop.publisher(window_s=0.05)
    assert await shop.converged(SETTLE) == {}

    # GONE: Shopify no longer stocks it at the location (the mutation is rejected);
    # MOVED: mapped to an item Shopify does not know (found when reading it back)
    shop.state.unstock(shop.items["GONE"], shop.shopify_locations["DC1"])
    await shop.store.mappings.set_item_mappings({"MOVED": "gid://shopify/InventoryItem/999999"}, actor="test")
    await shop.rules.refresh()
    await shop.receive("GONE", "DC1", 5)
    await shop.receive("OK", "DC1", 5)
    await shop.receive("MOVED", "DC1", 5)
    assert await wait_for(lambda: shop.shopify("OK", "DC1") == 6, SETTLE)  # the others still go through
    expected = {("GONE", "ITEM_NOT_STOCKED_AT_LOCATION"), ("MOVED", "INVALID_INVENTORY_ITEM")}
    assert await wait_for(lambda: _reasons_are(publisher, expected), SETTLE), await _reasons(publisher)
    assert await wait_for(lambda: metrics.DLQ_SIZE._value.get() >= 2, SETTLE)

    # parked: more changes do not spend calls on them until they are replayed
    calls = publisher.stats.set_calls
    await shop.receive("GONE", "DC1", 1)
    await asyncio.sleep(0.5)
    assert publisher.stats.parked_skipped >= 1
    assert publisher.stats.set_calls == calls

    # fixed in Shopify, then replayed: pushed
    shop.state.stock(shop.items["GONE"], shop.shopify_locations["DC1"], 0)
    gone = [d.id for d in await publisher.dlq.list() if d.payload["sku"] == "GONE"]
    await publisher.replay_dead_letters(gone)
    assert await wait_for(lambda: shop.shopify("GONE", "DC1") == 7, SETTLE)
    assert {d.payload["sku"] for d in await publisher.dlq.list()} == {"MOVED"}


async def _reasons(publisher):
    return {(d.payload["sku"], d.reason) for d in await publisher.dlq.list()}


async def _reasons_are(publisher, expected):
    return await _reasons(publisher) == expected


async def test_a_message_left_in_the_outbox_is_resent_with_its_key_and_applied_once(shop_factory):
    """A worker crashed after sending (the answer was lost): another resends the same key and
    payload; Shopify replays the first result instead of applying it again."""
    shop = await shop_factory(["CRASH"], initial=2)
    await shop.receive("CRASH", "DC1", 5)
    publisher = await shop.publisher(start=False)
    item, loc = shop.items["CRASH"], shop.shopify_locations["DC1"]
    key = LevelKey("CRASH", item, loc)
    target = Target(key, 5, 0, ("CRASH|DC1",), now_ms(), now_ms())
    from adapters.shopify.client import SetQuantity

    entries = [SetQuantity(item, loc, 5, 2)]
    idem = new_idempotency_key()
    first = await publisher.client.set_available(entries, idem, "correction", f"gid://availability/Push/{idem}")
    assert first.ok and shop.shopify("CRASH", "DC1") == 5
    message = OutboxMessage(
        id="crashed-1", flow="shopify.inventory", idempotency_key=idem,
        payload=publisher._payload(entries, [target], idem), correlation_id="c1", created_ms=now_ms(), sent_ms=now_ms(),
        owner="dead-worker",
    )
    await publisher.outbox.put(message, lease_ms=-1)  # its worker is gone
    shop.state.external_change(item, loc, available=9)  # and something else happened since

    assert await publisher.recover_outbox() == 1
    assert shop.state.applications_by_key()[idem] == 1
    assert shop.state.stats.replays >= 1
    assert await publisher.outbox.pending() == 0
    # the pair was marked again: the next rounds read 9 back (stale) and restore ATS
    await publisher.drain(timeout=SETTLE)
    assert shop.shopify("CRASH", "DC1") == 5


async def test_older_api_versions_use_compare_quantity(shop_factory):
    shop = await shop_factory(2, initial=0)
    publisher = await shop.publisher(client=shop.client(version="2025-10"))
    await shop.receive("SKU-000", "DC1", 6)
    await shop.receive("SKU-001", "S1", 2)
    assert await shop.converged(SETTLE) == {}
    # a rise (a drop would be held as Shopify's own sales in flight: flows/inventory/sales.py)
    shop.state.external_change(shop.items["SKU-000"], shop.shopify_locations["DC1"], available=9)
    await shop.sell("SKU-000", "DC1", 2)
    assert await wait_for(lambda: shop.shopify("SKU-000", "DC1") == 4 and publisher.stats.stale == 1, SETTLE)
