"""Retention: a reservation that has ended (committed, released, expired) keeps its holds and
header for the grace period, then the retention sweep removes them, so memory stays flat
however many reservations settle. Counted on a real Redis: keys, hash fields and MEMORY
USAGE of everything but the capped journal."""

from __future__ import annotations

import asyncio

import pytest

from availability.domain.errors import UnknownReservation
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, ReservationPolicy
from tests.factories import book, event

GRACE_MS = 60_000
SKUS = [f"SKU-{i}" for i in range(8)]


@pytest.fixture
async def ledger(redis_client, key_prefix):
    led = Ledger(redis_client, keys=KeyLayout(key_prefix), reservations=ReservationPolicy(retention_ms=GRACE_MS))
    await led.load_scripts()
    return led


async def _footprint(ledger: Ledger) -> dict:
    """Keys, hash fields / zset members and bytes under the ledger's prefix, journal and
    event records aside."""
    r = ledger.redis
    keys = [k async for k in r.scan_iter(match=f"{ledger.keys.prefix}:*", count=1000)]
    # the ship events' own records (idempotency window, on_hand delta log) are the event
    # path's memory, bounded by its window and cap, not the reservations'
    event_path = (b":idb:", b":dlog:", b":dl:")  # idempotency tables, delta logs
    keys = [k for k in keys if k.decode() not in (*ledger.keys.all_journals(), *ledger.keys.all_oversells(), ledger.keys.layout)
            and not k.endswith((b":seen", b":idm", b":cuts")) and not any(part in k for part in event_path)]
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes = await pipe.execute()
    holds = sum([await r.hlen(ledger.keys.holds(sku)) for sku in SKUS])
    return {"keys": len(keys), "bytes": sum(sizes), "hold_fields": holds,
            "headers": sum(1 for k in keys if ledger.keys.kind(k.decode()) == "resv_header")}


async def _settle_round(ledger: Ledger, round_no: int, count: int, t0: int) -> None:
    """`count` reservations at logical time t0: a third committed, a third released, a third
    left to expire."""
    rules = book()
    requests = [
        ReservationRequest(f"r{round_no}-{i}", "online",
                           [ReservationLine(SKUS[i % 8], 1), ReservationLine(SKUS[(i + 3) % 8], 2)], 10)
        for i in range(count)
    ]
    for start in range(0, count, 250):
        await asyncio.gather(*(ledger.reserve(q, rules, at_ms=t0) for q in requests[start : start + 250]))
    ends = [
        (ledger.commit if i % 3 == 0 else ledger.release)(q.reservation_id, at_ms=t0 + 1)
        for i, q in enumerate(requests)
        if i % 3 != 2
    ]
    for start in range(0, len(ends), 250):
        await asyncio.gather(*ends[start : start + 250])
    # the committed third ships (an order event naming the reservation): only then has a
    # committed hold nothing left on it for retention to keep
    await ledger.apply_batch([
        event("ship", sku=line.sku, quantity=line.quantity, reference=q.reservation_id, at=1)
        for i, q in enumerate(requests) if i % 3 == 0 for line in q.lines
    ], at_ms=t0 + 1)
    while await ledger.expire_due(at_ms=t0 + 10_000):
        pass


async def _run(ledger: Ledger, rounds: int, per_round: int) -> list[dict]:
    await ledger.apply_batch([event("receipt", sku=sku, quantity=10**6) for sku in SKUS])
    start = await _footprint(ledger)
    prints = [start]
    t = 1_000_000
    for round_no in range(rounds):
        await _settle_round(ledger, round_no, per_round, t)
        # within the grace period everything is still there
        assert (await _footprint(ledger))["headers"] == per_round
        t += GRACE_MS + 20_000
        # the sweep's retention pass: reservations, and the holds their ship events ended
        while await ledger.forget_settled(at_ms=t) + await ledger.forget_ended_holds(at_ms=t):
            pass
        prints.append(await _footprint(ledger))
    return prints


async def test_memory_is_flat_across_settled_reservations(ledger):
    prints = await _run(ledger, rounds=4, per_round=300)
    start, *after = prints
    for fp in after:
        # nothing per reservation is left: no header, no hold field, no index entry
        assert fp["headers"] == 0 and fp["hold_fields"] == 0
        assert fp["keys"] == start["keys"]
    # 1,200 settled; the second round's footprint equals the last's (the first round may
    # grow a hash from its compact encoding to a table, which Redis keeps)
    assert after[-1]["bytes"] <= after[1]["bytes"]
    assert after[-1]["bytes"] - start["bytes"] < 16 * 1024, prints


@pytest.mark.slow
async def test_memory_is_flat_across_100k_settled_reservations(ledger):
    prints = await _run(ledger, rounds=10, per_round=10_000)
    start, *after = prints
    assert all(fp["headers"] == 0 and fp["hold_fields"] == 0 and fp["keys"] == start["keys"] for fp in after)
    assert after[-1]["bytes"] <= after[1]["bytes"], prints


async def test_an_ended_reservation_is_kept_for_the_grace_period_then_its_id_is_free(ledger):
    rules = book()
    await ledger.apply(event("receipt", sku="A", quantity=5))
    request = ReservationRequest("ord-1", "online", [ReservationLine("A", 2)], 0)
    await ledger.reserve(request, rules, at_ms=1_000)
    await ledger.release("ord-1", at_ms=2_000)
    assert await ledger.forget_settled(at_ms=2_000 + GRACE_MS - 1) == 0
    # inside the grace period: still known, and a replay of the id is still refused
    assert (await ledger.get_reservation("ord-1")).status == "released"
    assert await ledger.forget_settled(at_ms=2_000 + GRACE_MS) == 1
    with pytest.raises(UnknownReservation):
        await ledger.get_reservation("ord-1")
    assert await ledger.redis.hlen(ledger.keys.holds("A")) == 0
    assert await ledger.index_count(ledger.keys.ended) == 0
    # after it, the id can be used again
    again = await ledger.reserve(request, rules, at_ms=3_000 + GRACE_MS)
    assert again.status == "held"
    assert (await ledger.stock("A"))["DC1"].reserved == 2


async def test_a_held_reservation_is_never_forgotten(ledger):
    rules = book()
    await ledger.apply(event("receipt", sku="A", quantity=5))
    await ledger.reserve(ReservationRequest("live", "online", [ReservationLine("A", 1)], 0), rules, at_ms=1_000)
    assert await ledger.forget_settled(at_ms=10**12) == 0
    assert (await ledger.get_reservation("live")).status == "held"


async def test_a_committed_reservation_is_kept_until_its_allocation_is_shipped_or_cancelled(ledger):
    # Retention once removed a committed hold a grace period after the commit; a cancel (or
    # ship) after that found nothing and the allocated units were never given back.
    rules = book()
    await ledger.apply(event("receipt", sku="A", quantity=5))
    for rid in ("ship-me", "cancel-me"):
        await ledger.reserve(ReservationRequest(rid, "online", [ReservationLine("A", 2)], 0), rules, at_ms=1_000)
        await ledger.commit(rid, at_ms=2_000)
    later = 2_000 + 3 * GRACE_MS
    assert await ledger.forget_settled(at_ms=later) == 0
    assert (await ledger.get_reservation("cancel-me")).status == "committed"
    await ledger.release("cancel-me", at_ms=later + 1)  # the order is cancelled after the grace period
    await ledger.apply(event("ship", sku="A", quantity=1, reference="ship-me", at=1))  # part shipped
    buckets = (await ledger.stock("A"))["DC1"]
    assert (buckets.on_hand, buckets.reserved, buckets.allocated) == (4, 0, 1)
    assert await ledger.forget_settled(at_ms=later + 2 * GRACE_MS) == 1  # the cancelled one
    assert (await ledger.get_reservation("ship-me")).status == "committed"  # 1 unit still to ship
    await ledger.apply(event("ship", sku="A", quantity=1, reference="ship-me", at=2))
    assert await ledger.forget_settled(at_ms=later + 4 * GRACE_MS) == 1
    with pytest.raises(UnknownReservation):
        await ledger.get_reservation("ship-me")
    buckets = (await ledger.stock("A"))["DC1"]
    assert (buckets.on_hand, buckets.reserved, buckets.allocated) == (3, 0, 0)
    assert await ledger.redis.hlen(ledger.keys.holds("A")) == 0
