"""Reservations on a real Redis: channel ATS enforced, all-or-nothing, idempotent, TTL."""

from __future__ import annotations

import asyncio

import pytest

from availability.domain.ats import channel_availability
from availability.domain.errors import InsufficientStock, InvalidReservation, ReservationConflict
from availability.domain.reservations import ReservationLine, ReservationRequest
from tests.factories import Channel, book, event
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, ReservationPolicy


@pytest.fixture(params=[256, 0], ids=["group-commit", "per-sku-protocol"])
async def ledger(request, redis_client, key_prefix):
    # every test here runs both ways a one-SKU reservation can go: group commit
    # (reserve_group.lua) and the per-SKU intent protocol (reserve.lua)
    led = Ledger(redis_client, keys=KeyLayout(key_prefix), reservations=ReservationPolicy(group_max=request.param))
    await led.load_scripts()
    return led


def request(rid, *lines, channel="online", ttl=None):
    return ReservationRequest(rid, channel, [ReservationLine(*line) for line in lines], ttl)


async def test_500_concurrent_single_unit_reservations_against_100_units(ledger, redis_client):
    # 130 on hand, safety 10, online buffer 20 -> online channel ATS is exactly 100
    rules = book(
        locations=("DC1",),
        rules=[dict(kind="safety_stock", units=10), dict(kind="buffer", units=20, channel="online")],
    )
    await ledger.apply(event("receipt", sku="HOT", quantity=130))
    assert channel_availability(rules, "HOT", "online", await ledger.stock("HOT")).ats == 100

    async def attempt(i):
        try:
            await ledger.reserve(request(f"r{i}", ("HOT", 1)), rules)
            return "held"
        except InsufficientStock as exc:
            assert exc.short_lines == [{"sku": "HOT", "requested": 1, "available": 0, "location": None}]
            return "short"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(500)))
    assert outcomes.count("held") == 100
    assert outcomes.count("short") == 400
    stock = await ledger.stock("HOT")
    assert stock["DC1"].reserved == 100
    assert channel_availability(rules, "HOT", "online", stock).ats == 0


async def test_multi_line_reservation_is_all_or_nothing(ledger):
    rules = book()
    await ledger.apply_batch([event("receipt", sku="A", quantity=5), event("receipt", sku="B", quantity=1)])
    with pytest.raises(InsufficientStock) as caught:
        await ledger.reserve(request("ord-1", ("A", 3), ("B", 2)), rules)
    assert caught.value.short_lines == [{"sku": "B", "requested": 2, "available": 1, "location": None}]
    stock = await ledger.stock_many(["A", "B"])
    assert stock["A"]["DC1"].reserved == 0 and stock["B"]["DC1"].reserved == 0
    # the failed id is not burnt: the same order can be retried once stock arrives
    await ledger.apply(event("receipt", sku="B", quantity=1))
    held = await ledger.reserve(request("ord-1", ("A", 3), ("B", 2)), rules)
    assert [line.allocations[0].quantity for line in held.lines] == [3, 2]


async def test_location_chosen_by_priority_whole_line_first_then_split(ledger):
    rules = book(locations=("DC1", "STORE-1", "STORE-2"))
    await ledger.apply_batch(
        [event("receipt", location="DC1", quantity=2), event("receipt", location="STORE-1", quantity=5),
         event("receipt", location="STORE-2", quantity=5)]
    )
    whole = await ledger.reserve(request("a", ("TEE-BLK-M", 4)), rules)
    assert [(a.location, a.quantity) for a in whole.lines[0].allocations] == [("STORE-1", 4)]
    split = await ledger.reserve(request("b", ("TEE-BLK-M", 7)), rules)
    assert [(a.location, a.quantity) for a in split.lines[0].allocations] == [("DC1", 2), ("STORE-1", 1), ("STORE-2", 4)]


async def test_ring_fence_of_a_higher_priority_channel_holds(ledger):
    rules = book(
        locations=("STORE-1",),
        channels=[Channel(name="pos", priority=1), Channel(name="online", priority=2)],
        rules=[dict(kind="protection", units=4, channel="pos")],
    )
    await ledger.apply(event("receipt", location="STORE-1", quantity=6))
    with pytest.raises(InsufficientStock):
        await ledger.reserve(request("web", ("TEE-BLK-M", 3), channel="online"), rules)
    await ledger.reserve(request("web", ("TEE-BLK-M", 2), channel="online"), rules)
    held = await ledger.reserve(request("till", ("TEE-BLK-M", 4), channel="pos"), rules)
    assert held.lines[0].allocations[0].quantity == 4


async def test_same_reservation_id_is_idempotent_and_conflicts_when_different(ledger):
    rules = book()
    await ledger.apply(event("receipt", quantity=10))
    first = await ledger.reserve(request("ord-7", ("TEE-BLK-M", 2)), rules)
    again = await ledger.reserve(request("ord-7", ("TEE-BLK-M", 2)), rules)
    assert again.lines == first.lines
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].reserved == 2
    with pytest.raises(ReservationConflict):
        await ledger.reserve(request("ord-7", ("TEE-BLK-M", 3)), rules)


async def test_release_commit_and_their_conflicts(ledger):
    rules = book()
    await ledger.apply(event("receipt", quantity=10))
    await ledger.reserve(request("keep", ("TEE-BLK-M", 2)), rules)
    await ledger.reserve(request("drop", ("TEE-BLK-M", 3)), rules)
    assert (await ledger.commit("keep")).status == "committed"
    assert (await ledger.release("drop")).status == "released"
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].reserved == 0
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].allocated == 2
    with pytest.raises(ReservationConflict):
        await ledger.commit("drop")
    with pytest.raises(ReservationConflict):
        await ledger.reserve(request("drop", ("TEE-BLK-M", 3)), rules)


async def test_ttl_expiry_returns_the_units(ledger):
    rules = book()
    await ledger.apply(event("receipt", quantity=10))
    held = await ledger.reserve(request("cart-1", ("TEE-BLK-M", 4), ttl=60), rules, at_ms=1_000_000)
    assert held.expires_at_ms == 1_060_000
    assert await ledger.expire_due(at_ms=1_059_999) == 0
    assert await ledger.expire_due(at_ms=1_060_000) == 1
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].reserved == 0
    assert (await ledger.get_reservation("cart-1")).status == "expired"


async def test_committed_reservation_does_not_expire(ledger):
    rules = book()
    await ledger.apply(event("receipt", quantity=10))
    await ledger.reserve(request("cart-2", ("TEE-BLK-M", 4), ttl=60), rules, at_ms=1_000_000)
    await ledger.commit("cart-2")
    assert await ledger.expire_due(at_ms=2_000_000) == 0
    assert (await ledger.stock("TEE-BLK-M"))["DC1"].allocated == 4


async def test_line_at_a_location_the_channel_does_not_sell_from_is_rejected(ledger):
    rules = book(locations=("DC1", "STORE-1"), channels=[Channel(name="online", locations=("DC1",))])
    with pytest.raises(InvalidReservation):
        await ledger.reserve(request("x", ("TEE-BLK-M", 1, "STORE-1")), rules)


async def test_fresh_install_sells_stock_at_locations_master_data_does_not_list_yet(ledger):
    from tests.factories import book as make_book

    fresh = make_book(locations=())
    await ledger.apply_batch([event("receipt", location="DC9", quantity=3), event("receipt", location="DC2", quantity=4)])
    stock = await ledger.stock("TEE-BLK-M")
    assert channel_availability(fresh, "TEE-BLK-M", "online", stock).ats == 7
    held = await ledger.reserve(request("f1", ("TEE-BLK-M", 4)), fresh)
    assert [(a.location, a.quantity) for a in held.lines[0].allocations] == [("DC2", 4)]
    held = await ledger.reserve(request("f2", ("TEE-BLK-M", 2, "DC9")), fresh)
    assert held.lines[0].allocations[0].quantity == 2
    with pytest.raises(InsufficientStock):
        await ledger.reserve(request("f3", ("TEE-BLK-M", 2)), fresh)


async def test_a_replay_in_the_same_millisecond_is_still_a_replay(ledger):
    rules = book()
    await ledger.apply(event("receipt", quantity=10))
    _, created = await ledger.reserve_or_replay(request("same-ms", ("TEE-BLK-M", 1)), rules, at_ms=5_000)
    _, again = await ledger.reserve_or_replay(request("same-ms", ("TEE-BLK-M", 1)), rules, at_ms=5_000)
    assert (created, again) == (True, False)


async def test_many_abandoned_carts_expire_in_one_sweep(ledger):
    rules = book()
    await ledger.apply_batch([event("receipt", sku="A", quantity=10), event("receipt", sku="B", quantity=10)])
    await ledger.reserve(request("cart-a", ("A", 1), ("B", 2), ttl=10), rules, at_ms=1_000)
    await ledger.reserve(request("cart-b", ("A", 3), ttl=10), rules, at_ms=1_000)
    await ledger.reserve(request("cart-c", ("B", 1), ttl=99), rules, at_ms=1_000)
    assert await ledger.expire_due(at_ms=20_000) == 2
    stock = await ledger.stock_many(["A", "B"])
    assert (stock["A"]["DC1"].reserved, stock["B"]["DC1"].reserved) == (0, 1)
    assert [(await ledger.get_reservation(r)).status for r in ("cart-a", "cart-b", "cart-c")] == [
        "expired", "expired", "held"]
