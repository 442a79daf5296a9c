"""apply_event.lua on a real Redis: a refused event leaves no trace, idempotency records are
compact and expire with the window, oversells are recorded, late counts keep what they
missed, and the journal accounts for every bucket change (cross-location ships too)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from availability.domain.ats import Buckets
from availability.domain.events import event_digest
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits
from tests.factories import T0, event

SKU = "TEE-BLK-M"


async def snapshot_of(ledger: Ledger, sku: str = SKU) -> dict:
    """Every key the apply script may write for `sku`, dumped: equal means nothing written."""
    keys = [k async for k in ledger.redis.scan_iter(match=f"{ledger.keys.prefix}:*")]
    dump = {}
    for key in sorted(keys):
        dump[key] = await ledger.redis.dump(key)
    return dump


@pytest.mark.parametrize(
    "corrupt, bad, kind",
    [
        ("stock", event("receipt", quantity=3), "corrupt_stock"),
        ("hold", event("fulfil", quantity=1, reference="ord-1", source="oms"), "corrupt_hold"),
        ("other_stock", event("fulfil", location="STORE-1", quantity=2, reference="ord-1", source="oms"),
         "corrupt_stock"),
        ("delta_log", event("cycle_count", quantity=7, at=5), "corrupt_delta_log"),
        ("cuts", event("pos_sale", quantity=1, at=1, source="pos"), "corrupt_delta_log"),
        ("idempotency", event("receipt", quantity=3), "corrupt_idempotency"),
    ],
)
async def test_a_refused_event_writes_nothing(ledger, corrupt, bad, kind):
    await ledger.apply_batch([event("receipt", quantity=10, at=2), event("receipt", location="STORE-1", quantity=10),
                              event("reserve", quantity=2, reference="ord-1", source="oms"),
                              event("cycle_count", quantity=10, at=3)])
    redis, keys = ledger.redis, ledger.keys
    if corrupt == "stock":
        await redis.hset(keys.stock(SKU), "DC1", "10,2,0,0,0")
    elif corrupt == "hold":
        await redis.hset(keys.holds(SKU), "ord-1", "H|0|online|DC1=2/x")
    elif corrupt == "other_stock":
        await redis.hset(keys.stock(SKU), "DC1", "ten,2,0,0,0,-1")
    elif corrupt == "delta_log":
        await redis.set(keys.delta_log(SKU, "DC1"), b"\x00" * 5)
    elif corrupt == "cuts":
        await redis.hset(keys.count_cuts(SKU), "DC1", "x|1:2")
    else:
        [bucket] = [k for k in await redis.hkeys(keys.idempotency_meta(SKU))]
        await redis.hset(keys.idempotency_meta(SKU), bucket, "64,1")  # the table is 8 slots
    before = await snapshot_of(ledger)
    [result] = await ledger.apply_batch([bad])
    assert result.status == "error" and result.buckets is None
    assert result.error.startswith(kind + ": "), result.error
    assert await snapshot_of(ledger) == before


async def test_idempotency_records_are_8_byte_digests_that_expire_with_the_window(redis_client, key_prefix):
    limits = LedgerLimits(idempotency_window_ms=7 * 60_000, idempotency_buckets=7)  # a 7-minute window
    ledger = Ledger(redis_client, keys=KeyLayout(key_prefix), limits=limits)
    await ledger.load_scripts()
    t = 1_796_000_000_000
    receipt = event("receipt", quantity=1, event_id="wms:944:1:1")
    assert (await ledger.apply_batch([receipt], at_ms=t))[0].status == "applied"
    # inside the window, however late, it is a duplicate
    for later in (1, 60_000, 7 * 60_000 - 1):
        assert (await ledger.apply_batch([receipt], at_ms=t + later))[0].status == "duplicate"
    # the record is the digest, in the bucket's table, and the table expires with the window
    [bucket] = await redis_client.hkeys(ledger.keys.idempotency_meta(SKU))
    table = ledger.keys.idempotency_bucket(SKU, int(bucket))
    assert event_digest("wms:944:1:1") in await redis_client.get(table)
    ttl = await redis_client.pttl(table)
    width = limits.bucket_width_ms()
    assert 0 < ttl <= limits.idempotency_window_ms + width
    # so does the SKU's table of tables, from its first event on (a SKU never seen again
    # leaves nothing behind)
    meta_ttl = await redis_client.pttl(ledger.keys.idempotency_meta(SKU))
    assert 0 < meta_ttl <= limits.idempotency_window_ms + width
    # after the window (plus at most one bucket) it is a new event again
    assert (await ledger.apply_batch([receipt], at_ms=t + 7 * 60_000 + width))[0].status == "applied"
    assert (await ledger.stock(SKU))["DC1"].on_hand == 2


async def test_many_records_in_one_bucket_stay_exact_and_compact(ledger, redis_client):
    events = [event("receipt", quantity=1, event_id=f"pos:S1:T{i}:1") for i in range(3000)]
    stamp = 1_796_000_000_000
    for start in range(0, len(events), 500):
        results = await ledger.apply_batch(events[start:start + 500], at_ms=stamp)
        assert {r.status for r in results} == {"applied"}
    again = await ledger.apply_batch(events[::7], at_ms=stamp + 1000)
    assert {r.status for r in again} == {"duplicate"}
    assert await ledger.idempotency_records(SKU) == 3000
    [bucket] = await redis_client.hkeys(ledger.keys.idempotency_meta(SKU))
    table = ledger.keys.idempotency_bucket(SKU, int(bucket))
    # an open-addressing table at most 3/4 full, grown by doubling: 8..16 bytes a record
    assert await redis_client.strlen(table) <= 3000 * 16 * 1.4
    assert (await ledger.stock(SKU))["DC1"].on_hand == 3000


async def test_a_channel_order_beyond_the_stock_is_recorded_as_an_oversell(ledger):
    # issue 10's case: DC1 on_hand 40, 2 reserved, a signed orders/create for 1,000 units
    await ledger.apply_batch([event("receipt", quantity=40),
                              event("reserve", quantity=2, reference="web-1", source="shopify")])
    result = await ledger.apply(event("reserve", quantity=1000, reference="shopify-order-9", source="shopify",
                                      channel="online", event_id="shopify:orders/create:9:1"))
    assert result.status == "applied" and result.units_short == 962
    assert result.buckets == Buckets(on_hand=40, reserved=1002)
    [(_, oversell)] = await ledger.oversells()
    assert (oversell.order, oversell.sku, oversell.location, oversell.units_short, oversell.source) == (
        "shopify-order-9", SKU, "DC1", 962, "shopify")
    # a POS sale of the last units and one more: short 1; a sale with stock left: none
    await ledger.apply(event("receipt", location="S1", quantity=3))
    sale = await ledger.apply(event("pos_sale", location="S1", quantity=4, reference="till-1:77", source="pos"))
    assert sale.units_short == 1
    assert (await ledger.apply(event("pos_return", location="S1", quantity=5, source="pos"))).units_short == 0
    assert (await ledger.apply(event("pos_sale", location="S1", quantity=2, source="pos"))).units_short == 0
    assert [o.units_short for _, o in await ledger.oversells()] == [1, 962]
    # a replay of the oversold order is a duplicate and records nothing new
    again = await ledger.apply(event("reserve", quantity=1000, reference="shopify-order-9", source="shopify",
                                     event_id="shopify:orders/create:9:1"))
    assert again.status == "duplicate" and len(await ledger.oversells()) == 2


async def test_a_snapshot_that_lags_pos_keeps_the_sales_it_had_not_seen(ledger):
    await ledger.apply(event("receipt", quantity=50, at=0))
    await ledger.apply(event("pos_sale", quantity=3, at=100, source="pos"))  # ERP saw this one
    await ledger.apply(event("pos_sale", quantity=4, at=550, source="pos"))  # posted to the ERP after 10:05
    await ledger.apply(event("receipt", quantity=10, at=580))  # WMS: the ERP saw it
    snap = event("snapshot", quantity=57, at=600, source="erp",
                 seen_through={"pos": T0 + timedelta(seconds=300)})
    result = await ledger.apply(snap)
    # 57 counted (50 - 3 + 10) plus the POS sale at 550 the snapshot had not seen
    assert result.status == "applied" and result.buckets.on_hand == 53
    # a POS sale at 400 arriving late is not inside the snapshot either
    assert (await ledger.apply(event("pos_sale", quantity=1, at=400, source="pos"))).status == "applied"
    # a WMS receipt at 590 arriving late is inside it (the ERP saw WMS through 600)
    assert (await ledger.apply(event("receipt", quantity=9, at=590))).status == "inside_count"
    assert (await ledger.stock(SKU))["DC1"].on_hand == 52


async def test_a_configured_lag_allowance_keeps_recent_deltas_of_that_source(redis_client, key_prefix):
    ledger = Ledger(redis_client, keys=KeyLayout(key_prefix), limits=LedgerLimits(count_lag_ms={"pos": 900_000}))
    await ledger.apply(event("receipt", quantity=50, at=0))
    await ledger.apply(event("pos_sale", quantity=2, at=3000, source="pos"))  # 10 min before the count
    result = await ledger.apply(event("snapshot", quantity=50, at=3600, source="erp"))
    assert result.buckets.on_hand == 48


async def test_a_ship_from_another_location_is_journaled_at_both(ledger, redis_client):
    await ledger.apply_batch([event("receipt", location="DC1", quantity=10),
                              event("receipt", location="STORE-1", quantity=10),
                              event("reserve", location="DC1", quantity=2, reference="web-1", source="shopify")])
    await ledger.apply(event("fulfil", location="STORE-1", quantity=2, reference="web-1", source="shopify",
                             event_id="shopify:fulfillments/create:1:1"))
    entries = [e[1] for e in await redis_client.xrange(ledger.keys.journal_of(SKU))][-2:]
    assert [(e[b"e"], e[b"l"], e[b"st"], e[b"b"], e[b"a"]) for e in entries] == [
        (b"shopify:fulfillments/create:1:1", b"STORE-1", b"applied", b"10,0,0,0,0", b"8,0,0,0,0"),
        (b"shopify:fulfillments/create:1:1", b"DC1", b"settled_elsewhere", b"10,2,0,0,0", b"10,0,0,0,0"),
    ]
    assert await redis_client.zscore(ledger.keys.dirty_of(SKU), f"{SKU}|DC1") is not None


async def test_a_full_delta_log_is_trimmed_and_a_count_it_cannot_bring_forward_is_refused(redis_client, key_prefix):
    ledger = Ledger(redis_client, keys=KeyLayout(key_prefix), limits=LedgerLimits(delta_log_cap=10))
    await ledger.apply_batch([event("receipt", quantity=1, at=t) for t in range(1, 12)])  # 11 deltas > cap
    log = await redis_client.get(ledger.keys.delta_log(SKU, "DC1"))
    assert len(log) == 6 * 11  # the oldest half (times 1..5) trimmed: floor at 5
    floor_ms = int((T0 + timedelta(seconds=5)).timestamp() * 1000)
    assert (await redis_client.hget(ledger.keys.count_cuts(SKU), "DC1")) == f"{floor_ms}|".encode()
    too_old = await ledger.apply(event("cycle_count", quantity=100, at=4))
    assert too_old.status == "count_too_old" and too_old.buckets.on_hand == 11
    # a count at or after the floor still knows every delta after it: 100 + the 6 after t=5
    counted = await ledger.apply(event("cycle_count", quantity=100, at=5))
    assert counted.status == "applied" and counted.buckets.on_hand == 106
    assert await redis_client.hget(ledger.keys.count_cuts(SKU), "DC1") is None


async def test_oversells_page_by_stream_id(ledger):
    for n in range(3):
        await ledger.apply(event("pos_sale", quantity=1, reference=f"T{n}", source="pos"))
    page = await ledger.oversells(limit=2)
    assert [o.order for _, o in page] == ["T2", "T1"]
    rest = await ledger.oversells(limit=2, before=page[-1][0])
    assert [o.order for _, o in rest] == ["T0"]
    assert await ledger.oversells(before="0-0") == []
    assert len(await ledger.oversells(before="99999999999999999999-99999999999999999999")) == 3
