"""Event application on a real Redis: semantics, idempotency, late counts, holds."""

from __future__ import annotations

from availability.domain.ats import Buckets
from tests.factories import event


async def test_receipt_then_sale_moves_on_hand(ledger):
    await ledger.apply(event("receipt", quantity=40))
    await ledger.apply(event("pos_sale", quantity=3, source="pos"))
    assert (await ledger.stock("TEE-BLK-M"))["DC1"] == Buckets(on_hand=37)


async def test_duplicate_event_changes_nothing(ledger):
    receipt = event("receipt", quantity=40)
    first, second = await ledger.apply_batch([receipt, receipt])
    assert (first.status, second.status) == ("applied", "duplicate")
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].on_hand == 40


async def test_late_count_keeps_deltas_after_it_and_drops_those_inside_it(ledger):
    # sale at t=10 and t=30, count taken at t=20 (after the first sale) arrives last
    await ledger.apply(event("receipt", quantity=10, at=0))
    await ledger.apply(event("pos_sale", quantity=1, at=10))
    await ledger.apply(event("pos_sale", quantity=2, at=30))
    result = await ledger.apply(event("cycle_count", quantity=50, at=20))
    assert result.status == "applied"
    # count 50 as of t=20, plus the sale at t=30 that happened after it
    assert result.buckets.on_hand == 48
    # a delta from before the count arriving late is already inside the count
    late = await ledger.apply(event("pos_sale", quantity=5, at=15))
    assert late.status == "inside_count"
    # an older count than the last one is ignored
    stale = await ledger.apply(event("snapshot", quantity=7, at=5, source="erp"))
    assert stale.status == "stale_count"
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].on_hand == 48


async def test_adjustments_move_the_right_buckets(ledger):
    await ledger.apply(event("receipt", quantity=20))
    await ledger.apply(event("adjustment", quantity=3, reason="damaged"))
    await ledger.apply(event("adjustment", quantity=2, reason="quality_hold"))
    await ledger.apply(event("adjustment", quantity=1, reason="quality_release"))
    await ledger.apply(event("adjustment", quantity=3, reason="write_off"))
    await ledger.apply(event("adjustment", quantity=4, reason="found"))
    await ledger.apply(event("adjustment", quantity=1, reason="lost"))
    assert (await ledger.stock("TEE-BLK-M"))["DC1"] == Buckets(on_hand=20, unsellable=1)


async def test_incoming_supply_is_tracked_and_received(ledger):
    await ledger.apply(event("purchase_order", quantity=100, reference="PO-1", source="erp"))
    await ledger.apply(event("receipt", quantity=60, reference="PO-1"))
    assert (await ledger.stock("TEE-BLK-M"))["DC1"] == Buckets(on_hand=60, incoming=40)


async def test_order_lifecycle_reserve_allocate_fulfil(ledger):
    await ledger.apply(event("receipt", quantity=10))
    await ledger.apply(event("reserve", quantity=2, reference="ord-1", source="oms"))
    await ledger.apply(event("allocate", quantity=2, reference="ord-1", source="oms"))
    assert (await ledger.stock("TEE-BLK-M"))["DC1"] == Buckets(on_hand=10, allocated=2)
    await ledger.apply(event("fulfil", quantity=2, reference="ord-1", source="oms"))
    assert (await ledger.stock("TEE-BLK-M"))["DC1"] == Buckets(on_hand=8)


async def test_release_before_reserve_stays_released(ledger):
    await ledger.apply(event("receipt", quantity=10))
    early = await ledger.apply(event("release", quantity=2, reference="ord-9", source="oms", at=20))
    late = await ledger.apply(event("reserve", quantity=2, reference="ord-9", source="oms", at=10))
    assert (early.status, late.status) == ("released_before", "released_before")
    assert (await ledger.stock("TEE-BLK-M"))["DC1"] == Buckets(on_hand=10)


async def test_every_change_is_journaled_and_marked_dirty(ledger, redis_client):
    await ledger.apply(event("receipt", quantity=5, event_id="wms-944-0001-3"))
    entries = await redis_client.xrange(ledger.keys.journal_of("TEE-BLK-M"))
    assert [e[1][b"e"] for e in entries] == [b"wms-944-0001-3"]
    assert entries[0][1][b"a"] == b"5,0,0,0,0"
    assert await redis_client.zscore(ledger.keys.dirty_of("TEE-BLK-M"), "TEE-BLK-M|DC1") is not None


async def test_many_skus_read_in_one_call(ledger):
    await ledger.apply_batch([event("receipt", sku=f"SKU-{i}", quantity=i + 1) for i in range(50)])
    stock = await ledger.stock_many([f"SKU-{i}" for i in range(50)] + ["NEVER-SEEN"])
    assert stock["SKU-49"]["DC1"].on_hand == 50
    assert stock["NEVER-SEEN"] == {}


async def test_order_fulfilled_from_another_location_settles_its_hold_there(ledger):
    # a web order held at the default location DC1, shipped from STORE-1
    await ledger.apply_batch([event("receipt", location="DC1", quantity=10),
                              event("receipt", location="STORE-1", quantity=10)])
    await ledger.apply(event("reserve", location="DC1", quantity=2, reference="web-1", source="shopify"))
    await ledger.apply(event("fulfil", location="STORE-1", quantity=2, reference="web-1", source="shopify"))
    stock = await ledger.stock("TEE-BLK-M")
    assert stock["DC1"] == Buckets(on_hand=10)
    assert stock["STORE-1"] == Buckets(on_hand=8)


async def test_applied_answers_which_events_the_ledger_has_taken(ledger):
    """The read-only lookup the Shopify push uses to settle sales in flight agrees with the
    script's own idempotency check, across growth of the SKU's table."""
    from tests.factories import event  # noqa: PLC0415

    events = [event("receipt", "APPLIED-1", "DC1", 1, event_id=f"rc-{i}") for i in range(300)]
    await ledger.apply_batch(events)
    taken = {f"rc-{i}" for i in range(300)}
    assert await ledger.applied("APPLIED-1", sorted(taken) + ["rc-never", "rc-300"]) == taken
    assert await ledger.applied("APPLIED-2", ["rc-1"]) == set()
