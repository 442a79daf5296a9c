"""Retention of holds that order events made (reserve / release / allocate / fulfil / ship
from OMS, Shopify, POS): a hold that has ended (released, or nothing left after fulfil or
ship) is removed a grace period after it ended; a hold still allocated is kept (a late ship
finds it); a release that came before its reserve is kept at least the idempotency window,
so the late reserve stays released; a duplicate inside the window is still a duplicate
(idempotency records are separate). On a real Redis, with a tiny grace."""

from __future__ import annotations

import pytest

from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits, ReservationPolicy
from tests.factories import event

GRACE_MS = 1_000
WINDOW_MS = 60_000
NOW = 1_800_000_000_000


@pytest.fixture
async def ledger(redis_client, key_prefix):
    led = Ledger(redis_client, keys=KeyLayout(key_prefix), reservations=ReservationPolicy(retention_ms=GRACE_MS),
                 limits=LedgerLimits(idempotency_window_ms=WINDOW_MS))
    await led.load_scripts()
    return led


async def _apply(ledger, at_ms, *events):
    return await ledger.apply_batch(list(events), at_ms=at_ms)


async def _holds(ledger, sku="TEE-BLK-M"):
    return {k.decode(): v.decode() for k, v in (await ledger.redis.hgetall(ledger.keys.holds(sku))).items()}


async def test_the_grace_is_the_reservations_retention(ledger):
    assert ledger.limits.hold_grace_ms() == GRACE_MS
    assert ledger.limits.tombstone_keep_ms() == WINDOW_MS


async def test_ended_holds_go_after_the_grace_and_allocated_ones_stay(ledger):
    await _apply(ledger, NOW, event("receipt", quantity=50))
    reserve_r = event("reserve", quantity=2, reference="R1")
    await _apply(ledger, NOW, reserve_r, event("reserve", quantity=3, reference="S1"),
                 event("allocate", quantity=4, reference="A1"))
    await _apply(ledger, NOW + 10, event("release", quantity=2, reference="R1"),
                 event("ship", quantity=3, reference="S1"))
    assert set(await _holds(ledger)) == {"R1", "S1", "A1"}
    # inside the grace: nothing goes
    assert await ledger.forget_ended_holds(at_ms=NOW + 10 + GRACE_MS - 1) == 0
    assert set(await _holds(ledger)) == {"R1", "S1", "A1"}
    assert await ledger.forget_ended_holds(at_ms=NOW + 10 + GRACE_MS) == 2
    assert set(await _holds(ledger)) == {"A1"}  # allocated, not shipped: kept
    assert await ledger.redis.exists(ledger.keys.ended_holds("TEE-BLK-M")) == 0
    assert await ledger.index_count(ledger.keys.ended_holds_index) == 0
    # a duplicate of the reserve inside the window is still a duplicate
    [dup] = await _apply(ledger, NOW + 20 + GRACE_MS, reserve_r)
    assert dup.status == "duplicate"
    # a late ship of the allocated order still finds its hold and settles `allocated`
    [late] = await _apply(ledger, NOW + 10 * GRACE_MS, event("ship", quantity=4, reference="A1"))
    assert late.status == "applied" and late.buckets.allocated == 0 and late.buckets.reserved == 0
    assert late.buckets.on_hand == 50 - 3 - 4
    assert await ledger.forget_ended_holds(at_ms=NOW + 11 * GRACE_MS) == 1
    assert await _holds(ledger) == {}
    assert await ledger.redis.exists(ledger.keys.holds("TEE-BLK-M")) == 0


async def test_a_release_before_its_reserve_is_kept_the_idempotency_window(ledger):
    await _apply(ledger, NOW, event("receipt", quantity=10))
    [early] = await _apply(ledger, NOW, event("release", quantity=2, reference="O1"))
    assert early.status == "released_before"
    # past the grace but inside the window: the tombstone stays, the late reserve stays released
    assert await ledger.forget_ended_holds(at_ms=NOW + 5 * GRACE_MS) == 0
    [late] = await _apply(ledger, NOW + 5 * GRACE_MS, event("reserve", quantity=2, reference="O1"))
    assert late.status == "released_before" and late.buckets.reserved == 0
    assert await ledger.forget_ended_holds(at_ms=NOW + WINDOW_MS) == 1
    assert await _holds(ledger) == {}


async def test_a_hold_that_holds_again_is_kept(ledger):
    await _apply(ledger, NOW, event("receipt", quantity=10))
    await _apply(ledger, NOW, event("reserve", quantity=1, reference="O2"),
                 event("ship", quantity=1, reference="O2"))
    # the same reference reserves again before the grace is out (a reopened order)
    await _apply(ledger, NOW + 1, event("reserve", quantity=2, reference="O2"))
    assert await ledger.forget_ended_holds(at_ms=NOW + GRACE_MS) == 0
    assert "O2" in await _holds(ledger)
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].reserved == 2


async def _footprint(ledger, skus):
    r = ledger.redis
    keys = [k async for k in r.scan_iter(match=f"{ledger.keys.prefix}:*", count=1000)]
    # the events' own records (idempotency tables, delta log, journal) are bounded by their
    # window and caps; this counts what the holds cost
    keys = [k for k in keys if not any(p in k for p in (b":idb:", b":idm", b":dlog:", b"journal", b"oversells"))]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    sizes = await pipe.execute()
    fields = sum([await r.hlen(ledger.keys.holds(s)) for s in skus])
    return {"keys": len(keys), "bytes": sum(sizes), "hold_fields": fields}


async def test_memory_is_flat_across_settled_order_event_reservations(ledger):
    skus = [f"SKU-{i}" for i in range(8)]
    await _apply(ledger, NOW, *(event("receipt", sku=s, quantity=1_000_000) for s in skus))
    at = NOW

    async def round_(n, count):
        nonlocal at
        evs = []
        for i in range(count):
            sku, ref = skus[i % 8], f"r{n}-{i}"
            evs.append(event("reserve", sku=sku, quantity=2, reference=ref))
            evs.append(event("release" if i % 2 else "ship", sku=sku, quantity=2, reference=ref))
        for start in range(0, len(evs), 500):
            await _apply(ledger, at, *evs[start:start + 500])
        at += GRACE_MS
        await ledger.forget_ended_holds(at_ms=at)

    await round_(0, 400)
    first = await _footprint(ledger, skus)
    for n in range(1, 4):
        await round_(n, 400)
    last = await _footprint(ledger, skus)
    assert first["hold_fields"] == last["hold_fields"] == 0
    assert last["keys"] == first["keys"]
    assert last["bytes"] <= first["bytes"]
