"""Group commit (reserve_group.lua and the per-SKU batcher) on a real Redis: concurrent
one-SKU reservations of a hot SKU are settled in a few script calls, each request gets
its own answer, and the outcome is exactly a plain-Python oracle's that takes the
requests one by one in arrival order: never oversold, all-or-nothing per reservation."""

from __future__ import annotations

import asyncio
import random

import pytest

from availability.domain.errors import InsufficientStock, ReservationConflict, ReservationInProgress
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, ReservationPolicy
from tests.factories import book, event


def groupable(keys: KeyLayout, sku: str, base: str) -> str:
    """`base`, or on a cluster the first `base~k` whose header falls in the SKU's partition:
    group commit names the header beside the SKU's keys, so a cluster groups only those ids
    (KeyLayout.may_group; the others take the intent protocol). Single Redis: any id."""
    if not keys.cluster:
        return base
    k = 0
    while not keys.may_group(rid := base if k == 0 else f"{base}~{k}", sku):
        k += 1
    return rid


@pytest.fixture
async def ledger(redis_client, key_prefix):
    led = Ledger(redis_client, keys=KeyLayout(key_prefix), reservations=ReservationPolicy(group_max=64))
    await led.load_scripts()
    return led


class Oracle:
    """ATS per location (no rules), lines placed by location priority like reserve.lua:
    one location that has the whole line, else split in order; all lines or none."""

    def __init__(self, stock: dict[str, int]) -> None:
        self.free = dict(stock)

    def reserve(self, lines: list[tuple[int, str | None]]) -> list[list[tuple[str, int]]] | None:
        free = dict(self.free)
        placed = []
        for quantity, location in lines:
            candidates = [location] if location else list(free)
            whole = next((loc for loc in candidates if free.get(loc, 0) >= quantity), None)
            if whole:
                allocs = [(whole, quantity)]
            else:
                allocs, left = [], quantity
                for loc in candidates:
                    take = min(left, free.get(loc, 0))
                    if take:
                        allocs.append((loc, take))
                        left -= take
                if left:
                    return None
            for loc, take in allocs:
                free[loc] -= take
            placed.append(allocs)
        self.free = free
        return placed


async def _attempt(ledger, request, rules, **kw):
    try:
        return await ledger.reserve(request, rules, **kw)
    except InsufficientStock as exc:
        return exc


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_reservations_answer_each_request_as_the_oracle_does(ledger, seed):
    rng = random.Random(seed)
    rules = book()  # DC1 then STORE-1
    await ledger.apply_batch([event("receipt", sku="HOT", location="DC1", quantity=120),
                              event("receipt", sku="HOT", location="STORE-1", quantity=40)])
    oracle = Oracle({"DC1": 120, "STORE-1": 40})
    requests = []
    for i in range(400):
        lines = [(rng.randint(1, 4), rng.choice([None, None, "DC1", "STORE-1"])) for _ in range(rng.choice([1, 1, 2]))]
        requests.append(ReservationRequest(groupable(ledger.keys, "HOT", f"o{i}"), "online", [ReservationLine("HOT", q, loc) for q, loc in lines]))
    # submitted in this order in one go: the batcher keeps arrival order
    answers = await asyncio.gather(*(_attempt(ledger, r, rules) for r in requests))
    assert ledger.group.batches < len(requests) / 10  # it really grouped them
    held_units = 0
    for request, answer in zip(requests, answers):
        expected = oracle.reserve([(line.quantity, line.location) for line in request.lines])
        if expected is None:
            assert isinstance(answer, InsufficientStock), request
            assert not await ledger.redis.exists(ledger.keys.reservation(request.reservation_id))
            continue
        assert [[(a.location, a.quantity) for a in line.allocations] for line in answer.lines] == expected
        assert await ledger.get_reservation(request.reservation_id) == answer  # the ledger agrees
        held_units += sum(line.quantity for line in request.lines)
    stock = await ledger.stock("HOT")
    assert {loc: b.on_hand - b.reserved for loc, b in stock.items()} == oracle.free
    assert sum(b.reserved for b in stock.values()) == held_units
    assert all(b.reserved <= b.on_hand for b in stock.values())  # never oversold
    journal = await ledger.journal_length()
    assert journal >= 2 + sum(1 for a in answers if not isinstance(a, InsufficientStock))


async def test_replays_and_taken_ids_in_a_batch_take_the_per_sku_protocol(ledger):
    rules = book()
    await ledger.apply(event("receipt", sku="HOT", quantity=10))
    dup = groupable(ledger.keys, "HOT", "dup")
    first = ReservationRequest(dup, "online", [ReservationLine("HOT", 2)])
    other = ReservationRequest(dup, "online", [ReservationLine("HOT", 3)])
    results = await asyncio.gather(
        ledger.reserve_or_replay(first, rules), ledger.reserve_or_replay(first, rules),
        ledger.reserve_or_replay(other, rules), return_exceptions=True,
    )
    assert results[0][1] is True and results[1][1] is False and results[1][0] == results[0][0]
    assert isinstance(results[2], ReservationConflict)
    assert (await ledger.stock("HOT"))["DC1"].reserved == 2
    # an id whose multi-SKU attempt is still pending is told to wait, nothing held for it
    await ledger._intent("begin", "busy", "cafe0001", 5000, b'["online",[],0,0,["HOT","B"]]', 0)
    with pytest.raises(ReservationInProgress):
        await ledger.reserve(ReservationRequest("busy", "online", [ReservationLine("HOT", 1)]), rules)
    assert (await ledger.stock("HOT"))["DC1"].reserved == 2


async def test_grouped_reservations_commit_release_and_expire_like_any_other(ledger):
    rules = book()
    await ledger.apply(event("receipt", sku="HOT", quantity=10))
    made = await asyncio.gather(*(
        ledger.reserve(ReservationRequest(f"g{i}", "online", [ReservationLine("HOT", 2)], 5), rules, at_ms=1_000)
        for i in range(3)
    ))
    assert [m.expires_at_ms for m in made] == [6_000] * 3
    await ledger.commit("g0")
    await ledger.release("g1")
    assert await ledger.expire_due(at_ms=6_000) == 1
    buckets = (await ledger.stock("HOT"))["DC1"]
    assert (buckets.reserved, buckets.allocated) == (0, 2)
    assert [(await ledger.get_reservation(f"g{i}")).status for i in range(3)] == ["committed", "released", "expired"]


async def test_an_idle_request_is_sent_at_once_and_off_means_the_per_sku_protocol(redis_client, key_prefix):
    rules = book()
    for group_max, batches in ((64, 1), (0, 0)):
        led = Ledger(redis_client, keys=KeyLayout(f"{key_prefix}{group_max}"), reservations=ReservationPolicy(group_max=group_max))
        await led.load_scripts()
        await led.apply(event("receipt", sku="HOT", quantity=3))
        one = groupable(led.keys, "HOT", "one")
        held = await asyncio.wait_for(led.reserve(ReservationRequest(one, "online", [ReservationLine("HOT", 1)]), rules), 5)
        assert held.status == "held" and led.group.batches == batches
        assert await led.index_count(led.keys.pending) == 0


async def test_a_batch_past_the_scripts_write_chunk_holds_indexes_and_expires_every_reservation(redis_client, key_prefix):
    # 1,100 requests in one call: the script writes the batch's holds in one HSET and its TTL
    # entries in one ZADD per expiry zset, each cut into calls of at most 1,000 arguments,
    # with ids spread over the partitions (each expiry zset named once however many share it)
    led = Ledger(redis_client, keys=KeyLayout(key_prefix), reservations=ReservationPolicy(group_max=1200))
    await led.load_scripts()
    rules = book()
    await led.apply(event("receipt", sku="HOT", quantity=1000))
    ids = [groupable(led.keys, "HOT", f"big{i}") for i in range(1100)]
    answers = await asyncio.gather(*(
        _attempt(led, ReservationRequest(rid, "online", [ReservationLine("HOT", 1)], 60), rules, at_ms=5_000)
        for rid in ids
    ))
    assert led.group.batches == 1
    held = [rid for rid, answer in zip(ids, answers) if not isinstance(answer, InsufficientStock)]
    assert held == ids[:1000]  # arrival order: the first 1,000 are held, the last 100 short
    holds = await led.redis.hgetall(led.keys.holds("HOT"))
    assert sorted(k.decode() for k in holds) == sorted(held)
    for rid in held:
        assert await led.redis.zscore(led.keys.expiry_of(rid), rid) == 65_000
        assert (await led.get_reservation(rid)).status == "held"
    for rid in ids[1000:]:
        assert not await led.redis.exists(led.keys.reservation(rid))
        assert await led.redis.zscore(led.keys.expiry_of(rid), rid) is None
    assert (await led.stock("HOT"))["DC1"].reserved == 1000
    while await led.expire_due(at_ms=65_000):
        pass
    assert (await led.stock("HOT"))["DC1"].reserved == 0


async def test_an_id_an_order_event_already_holds_is_not_held_twice_by_a_batch(ledger):
    # The hold exists with no header (an order event's): the batch answers it 'again' (one
    # HMGET of the batch's ids finds it) and the per-SKU protocol refuses it as taken, while
    # the request beside it in the same call is held.
    rules = book()
    await ledger.apply(event("receipt", sku="HOT", quantity=10))
    taken = groupable(ledger.keys, "HOT", "ord")
    await ledger.apply(event("reserve", sku="HOT", quantity=2, reference=taken))
    fresh = groupable(ledger.keys, "HOT", "fresh")
    results = await asyncio.gather(
        ledger.reserve(ReservationRequest(taken, "online", [ReservationLine("HOT", 1)]), rules),
        ledger.reserve(ReservationRequest(fresh, "online", [ReservationLine("HOT", 1)]), rules),
        return_exceptions=True,
    )
    assert isinstance(results[0], ReservationConflict)
    assert results[1].status == "held" and ledger.group.batches == 1
    assert (await ledger.stock("HOT"))["DC1"].reserved == 3
    assert not await ledger.redis.exists(ledger.keys.reservation(taken))
