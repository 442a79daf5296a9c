"""A reservation attempt killed between its holds and its finish (or rollback) strands
nothing: the intent it wrote first lets the recovery sweep roll its holds back once its
lease has passed, and a retry of the same id behaves (busy during the lease, then rolled
back and placed afresh; never short against its own stranded hold).

The victim is a real process (the service's own composition root, configured from
AVAILABILITY_* variables) parked by the test-only pause setting and SIGKILLed there; the
final buckets are compared with a plain-Python oracle of all-or-nothing reservations.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from availability.domain.errors import InsufficientStock, ReservationInProgress, ReservationTimeout
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, ReservationPolicy
from availability.ledger.sweeper import ExpirySweeper
from tests.conftest import differs_on_cluster
from tests.factories import book, event

REPO = Path(__file__).resolve().parents[2]
#: Long enough that the test's retry lands inside it on a loaded machine (it must be told
#: to wait), short enough to keep the sweeps' waits short.
LEASE_S = 3.0
#: How long the sweep may take to roll a dead attempt back: generous (a loaded CI machine
#: stalls processes for seconds), yet far below the reservation TTL (900 s by default, the
#: victim names none), so it still tells recovery at the lease from expiry at the TTL.
RECOVERY_BOUND_S = 60.0

VICTIM = textwrap.dedent(
    """
    import asyncio, json, sys
    from availability.bootstrap import open_runtime
    from availability.config import Settings
    from availability.domain.reservations import ReservationLine, ReservationRequest

    async def main():
        lines = [ReservationLine(sku, qty) for sku, qty in json.loads(sys.argv[2])]
        ttl = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
        count = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        async with open_runtime(Settings()) as runtime:
            book = runtime.rules.book
            if count:  # that many concurrent reservations, ids "<id>-0"...: one group commit batch
                await asyncio.gather(*(
                    runtime.ledger.reserve(ReservationRequest(f"{sys.argv[1]}-{i}", "online", lines, ttl), book)
                    for i in range(count)
                ), return_exceptions=True)
            else:
                await runtime.ledger.reserve(ReservationRequest(sys.argv[1], "online", lines, ttl), book)
        print("finished", flush=True)

    asyncio.run(main())
    """
)


class Oracle:
    """Plain-Python ledger of on_hand/reserved at one location, reservations all-or-nothing."""

    def __init__(self, on_hand: dict[str, int]) -> None:
        self.on_hand = dict(on_hand)
        self.reserved = {sku: 0 for sku in on_hand}

    def reserve(self, lines: list[tuple[str, int]]) -> bool:
        wanted: dict[str, int] = {}
        for sku, qty in lines:
            wanted[sku] = wanted.get(sku, 0) + qty
        if any(self.on_hand.get(s, 0) - self.reserved.get(s, 0) < q for s, q in wanted.items()):
            return False
        for sku, qty in wanted.items():
            self.reserved[sku] += qty
        return True


async def _buckets(ledger: Ledger, skus) -> dict[str, tuple[int, int]]:
    stock = await ledger.stock_many(skus)
    return {sku: (stock[sku]["DC1"].on_hand, stock[sku]["DC1"].reserved) for sku in skus}


def _expected(oracle: Oracle) -> dict[str, tuple[int, int]]:
    return {sku: (oracle.on_hand[sku], oracle.reserved[sku]) for sku in oracle.on_hand}


async def _start_victim(
    redis_url, key_prefix, tmp_path, rid, lines, pause_at, *, ttl=None, count=0, group_max=256
) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": key_prefix,
        "AVAILABILITY_DATA_DIR": str(tmp_path / "victim"),
        "AVAILABILITY_RESERVATION_LEASE_SECONDS": str(LEASE_S),
        "AVAILABILITY_DEBUG_RESERVE_PAUSE_AT": pause_at,
        "AVAILABILITY_RESERVATION_GROUP_MAX": str(group_max),
    }
    import json

    victim = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", VICTIM, rid, json.dumps(lines), json.dumps(ttl), str(count)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # the pause announces itself on stderr once the process is parked in the crash window
    loop = asyncio.get_running_loop()
    while True:
        line = await asyncio.wait_for(loop.run_in_executor(None, victim.stderr.readline), timeout=60)
        if not line:
            raise AssertionError(f"victim exited (rc {victim.wait()}) before pausing")
        if f"paused {pause_at}" in line:
            return victim


def _kill(victim: subprocess.Popen) -> None:
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL


@pytest.fixture
async def sweeping_ledger(redis_client, key_prefix):
    led = Ledger(redis_client, keys=KeyLayout(key_prefix), reservations=ReservationPolicy(lease_ms=int(LEASE_S * 1000)))
    await led.load_scripts()
    return led


def _sweeper(ledger: Ledger) -> ExpirySweeper:
    # the service `serve` runs (services.py "expiry"), on the test's ledger
    return ExpirySweeper(SimpleNamespace(ledger=ledger, settings=SimpleNamespace(expiry_sweep_seconds=0.05)))


async def _settled(ledger: Ledger, skus, expected) -> bool:
    return await _buckets(ledger, skus) == expected and not await ledger.index_count(ledger.keys.pending)


async def _wait_recovered(sweeper: ExpirySweeper, ledger: Ledger, skus, expected, *, bound_s: float) -> None:
    """Run the sweeper service until the buckets match and no intent is pending."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sweeper.start()
    try:
        while not await _settled(ledger, skus, expected):
            assert loop.time() - started < bound_s, await _buckets(ledger, skus)
            await asyncio.sleep(0.05)
    finally:
        await sweeper.stop()


@pytest.mark.parametrize("pause_at", ["after-holds", "after-intent"])
async def test_killed_between_hold_and_rollback_the_sweep_releases_the_stock(
    sweeping_ledger, redis_url, key_prefix, tmp_path, pause_at
):
    ledger = sweeping_ledger
    await ledger.apply_batch([event("receipt", sku="A", quantity=5), event("receipt", sku="B", quantity=1)])
    oracle = Oracle({"A": 5, "B": 1})
    lines = [("A", 5), ("B", 2)]  # B is short: the victim must roll A back, and dies first
    victim = await _start_victim(redis_url, key_prefix, tmp_path, "ord-crash", lines, pause_at)
    held_a = 5 if pause_at == "after-holds" else 0
    assert await _buckets(ledger, ["A", "B"]) == {"A": (5, held_a), "B": (1, 0)}
    _kill(victim)
    assert not oracle.reserve(lines)

    # stranded for now; a retry during the lease is told to wait, and holds nothing
    with pytest.raises(ReservationInProgress) as busy:
        await ledger.reserve(ReservationRequest("ord-crash", "online", [ReservationLine(*x) for x in lines]), book())
    # the wait is what is left of the lease (judged on Redis's clock), not the TTL
    assert 1 <= int(busy.value.headers["Retry-After"]) <= LEASE_S
    lease_deadline_ms = await ledger.redis.zscore(ledger.keys.pending_of("ord-crash"), "ord-crash")
    seconds, micros = await ledger.redis.time()
    assert lease_deadline_ms - (seconds * 1000 + micros // 1000) <= LEASE_S * 1000
    assert await _buckets(ledger, ["A", "B"]) == {"A": (5, held_a), "B": (1, 0)}
    # other shoppers are refused only while the lease runs
    await _wait_recovered(_sweeper(ledger), ledger, ["A", "B"], _expected(oracle), bound_s=RECOVERY_BOUND_S)
    assert await ledger.index_count(ledger.keys.pending) == 0
    assert not await ledger.redis.exists(ledger.keys.reservation("ord-crash"))
    assert await ledger.redis.hlen(ledger.keys.holds("A")) == 0

    # the retry after recovery is judged on the stock alone: B now arrives, all fits
    await ledger.apply(event("receipt", sku="B", quantity=1, event_id="b-more"))
    oracle.on_hand["B"] += 1
    held = await ledger.reserve(ReservationRequest("ord-crash", "online", [ReservationLine(*x) for x in lines]), book())
    assert held.status == "held" and oracle.reserve(lines)
    assert await _buckets(ledger, ["A", "B"]) == _expected(oracle)


async def test_killed_after_holding_everything_a_retry_after_the_lease_is_not_short_against_its_own_hold(
    sweeping_ledger, redis_url, key_prefix, tmp_path
):
    ledger = sweeping_ledger
    await ledger.apply_batch([event("receipt", sku="A", quantity=5), event("receipt", sku="B", quantity=2)])
    oracle = Oracle({"A": 5, "B": 2})
    lines = [("A", 5), ("B", 2)]  # every unit there is: a retry short against its own hold would fail
    victim = await _start_victim(redis_url, key_prefix, tmp_path, "ord-all", lines, "after-holds")
    assert await _buckets(ledger, ["A", "B"]) == {"A": (5, 5), "B": (2, 2)}
    _kill(victim)
    # no sweep runs: the retry itself, once the lease has passed, rolls the dead attempt
    # back and places the reservation afresh
    await asyncio.sleep(LEASE_S + 0.1)
    request = ReservationRequest("ord-all", "online", [ReservationLine(*x) for x in lines])
    reservation, created = await ledger.reserve_or_replay(request, book())
    assert created and reservation.status == "held"
    assert oracle.reserve(lines)
    assert await _buckets(ledger, ["A", "B"]) == _expected(oracle)
    # and now it is an ordinary reservation: a replay is a replay
    _, again = await ledger.reserve_or_replay(request, book())
    assert not again
    assert await _buckets(ledger, ["A", "B"]) == _expected(oracle)


async def test_an_attempt_that_outlives_its_lease_holds_nothing_and_says_so(redis_client, key_prefix):
    # The owner stalls (not dies) past its lease after holding A: recovery rolls A back,
    # and when the owner wakes its finish is refused, it answers an error and holds nothing.
    ledger = Ledger(
        redis_client,
        keys=KeyLayout(key_prefix),
        # paused far past the lease, so the sweep (every 50 ms) gets to it first however
        # loaded the machine is
        reservations=ReservationPolicy(lease_ms=200, debug_pause_at="after-holds", debug_pause_seconds=3.0),
    )
    await ledger.load_scripts()
    await ledger.apply_batch([event("receipt", sku="A", quantity=5), event("receipt", sku="B", quantity=5)])
    sweeper = _sweeper(ledger)
    await sweeper.start()
    try:
        with pytest.raises(ReservationTimeout):
            await ledger.reserve(ReservationRequest("slow", "online", [ReservationLine("A", 2), ReservationLine("B", 1)]), book())
    finally:
        await sweeper.stop()
    assert sweeper.recovered_total == 1
    assert await _buckets(ledger, ["A", "B"]) == {"A": (5, 0), "B": (5, 0)}
    assert not await redis_client.exists(ledger.keys.reservation("slow"))


async def test_a_hold_landing_after_the_lease_is_refused(redis_client, key_prefix):
    # The fence itself: the owner is parked after writing its intent, past its lease, and
    # recovery has dropped the intent; its holds must not land behind recovery's back.
    ledger = Ledger(
        redis_client,
        keys=KeyLayout(key_prefix),
        # group_max=0: a one-SKU reservation through the per-SKU protocol, whose fence this is
        reservations=ReservationPolicy(lease_ms=200, debug_pause_at="after-intent", debug_pause_seconds=3.0, group_max=0),
    )
    await ledger.load_scripts()
    await ledger.apply(event("receipt", sku="A", quantity=5))
    task = asyncio.create_task(ledger.reserve(ReservationRequest("late", "online", [ReservationLine("A", 2)]), book()))
    # the lease is counted from the intent: wait for it to be written, then past the lease
    # (the owner stays parked for 3 s, so recovery runs first however loaded the machine is)
    while not await ledger.index_count(ledger.keys.pending):
        assert not task.done(), task
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert await ledger.recover_abandoned() == 1
    with pytest.raises(ReservationTimeout):
        await task
    assert await _buckets(ledger, ["A"]) == {"A": (5, 0)}
    assert await redis_client.hlen(ledger.keys.holds("A")) == 0


async def test_short_single_sku_answer_leaves_no_header_no_index_entry(sweeping_ledger):
    ledger = sweeping_ledger
    await ledger.apply(event("receipt", sku="A", quantity=1))
    with pytest.raises(InsufficientStock):
        await ledger.reserve(ReservationRequest("no", "online", [ReservationLine("A", 2)]), book())
    r = ledger.redis
    assert not await r.exists(ledger.keys.reservation("no"))
    assert await ledger.index_count(ledger.keys.pending) == 0 and await ledger.index_count(ledger.keys.expiry) == 0


async def test_a_one_sku_attempt_that_died_after_finishing_a_refused_hold_leaves_nothing_a_retry_trips_on(
    sweeping_ledger,
):
    # A one-SKU attempt finishes in the same round trip as its hold; if the hold was short
    # and the process died before dropping the header, the header says finished with
    # nothing held. The retry drops it and is placed on the stock alone.
    ledger = sweeping_ledger
    await ledger.apply(event("receipt", sku="A", quantity=3))
    assert (await ledger._intent("begin", "one", "cafe0001", 5000, b'["online",[{"sku":"A","quantity":2,"location":null}],0,0,["A"]]', 0))[0] == b"new"
    assert (await ledger._intent("finish", "one", "cafe0001"))[0] == b"ok"
    reservation, created = await ledger.reserve_or_replay(
        ReservationRequest("one", "online", [ReservationLine("A", 2)]), book()
    )
    assert created and reservation.status == "held"
    assert await _buckets(ledger, ["A"]) == {"A": (3, 2)}


async def test_a_one_sku_attempt_without_ttl_killed_after_a_refused_hold_leaves_nothing_once_swept(
    sweeping_ledger, redis_url, key_prefix, tmp_path
):
    # The per-SKU protocol for one SKU (group commit off, as for a replay or a retry that
    # group commit hands back): the hold is refused and the process dies before dropping
    # its header. With ttl_seconds null nothing would ever expire it: the header is still
    # a pending intent, so the recovery sweep drops it.
    ledger = sweeping_ledger
    await ledger.apply(event("receipt", sku="A", quantity=1))
    victim = await _start_victim(redis_url, key_prefix, tmp_path, "no-ttl", [("A", 2)], "after-holds", ttl=0, group_max=0)
    _kill(victim)
    assert await ledger.redis.exists(ledger.keys.reservation("no-ttl"))
    await _wait_recovered(_sweeper(ledger), ledger, ["A"], {"A": (1, 0)}, bound_s=RECOVERY_BOUND_S)
    assert not await ledger.redis.exists(ledger.keys.reservation("no-ttl"))
    assert await ledger.redis.hlen(ledger.keys.holds("A")) == 0
    assert await ledger.index_count(ledger.keys.expiry) == 0


@differs_on_cluster(
    "group commit groups only ids whose header is in the SKU's partition (KeyLayout.may_group): the victim's "
    "g-0..g-39 mostly take the intent protocol there, whose crash recovery the tests above cover")
@pytest.mark.parametrize("pause_at", ["before-group", "after-group"])
async def test_a_process_killed_mid_batch_strands_nothing_the_sweep_does_not_release(
    sweeping_ledger, redis_url, key_prefix, tmp_path, pause_at
):
    # 40 concurrent one-SKU reservations of 1 unit, 30 units: one group commit batch. The
    # victim dies before its batch call or after it (held, nobody answered). Either way the
    # ledger is whole (every hold has its finished header, reserved = holds, none pending),
    # a retry of an id replays what was made, and the sweep releases everything at the TTL.
    ledger = sweeping_ledger
    await ledger.apply(event("receipt", sku="A", quantity=30))
    oracle = Oracle({"A": 30})
    victim = await _start_victim(redis_url, key_prefix, tmp_path, "g", [("A", 1)], pause_at, ttl=2, count=40)
    _kill(victim)
    made = [oracle.reserve([("A", 1)]) for _ in range(40)] if pause_at == "after-group" else [False] * 40
    assert await _buckets(ledger, ["A"]) == _expected(oracle)
    r = ledger.redis
    assert await r.hlen(ledger.keys.holds("A")) == sum(made) and await ledger.index_count(ledger.keys.pending) == 0
    for i, held in enumerate(made):
        header = ledger.keys.reservation(f"g-{i}")
        assert (await r.hget(header, "st") == b"H") if held else not await r.exists(header)
    if pause_at == "after-group":
        again, created = await ledger.reserve_or_replay(ReservationRequest("g-0", "online", [ReservationLine("A", 1)], 2), book())
        assert not created and again.status == "held"
    oracle.reserved["A"] = 0  # every hold had a 2 s TTL
    await _wait_recovered(_sweeper(ledger), ledger, ["A"], _expected(oracle), bound_s=RECOVERY_BOUND_S)
    assert await ledger.index_count(ledger.keys.expiry) == 0


async def test_a_reservation_across_partitions_killed_after_its_holds_is_rolled_back_in_each(
    sweeping_ledger, redis_url, key_prefix, tmp_path
):
    """Issue 15: the SKUs' keys sit in different partitions (different Redis Cluster slots),
    and the header in a third; every step is single-slot, and recovery, driven from the
    header's partition, rolls back the holds in each SKU's partition."""
    ledger = sweeping_ledger
    keys = ledger.keys
    skus = ["A", "B", "C"]
    rid = next(f"ord-x{i}" for i in range(1000)
               if len({keys.reservation_partition(f"ord-x{i}"), *(keys.partition(s) for s in skus)}) == 4)
    assert len({keys.partition(s) for s in skus}) == 3
    await ledger.apply_batch([event("receipt", sku=s, quantity=4, event_id=f"r-{s}") for s in skus])
    oracle = Oracle({s: 4 for s in skus})
    lines = [("A", 3), ("B", 2), ("C", 1)]
    victim = await _start_victim(redis_url, key_prefix, tmp_path, rid, lines, "after-holds")
    assert await _buckets(ledger, skus) == {"A": (4, 3), "B": (4, 2), "C": (4, 1)}
    _kill(victim)  # all held, never finished: an error for its caller, so nothing may stay held
    assert await ledger.redis.zscore(keys.pending_of(rid), rid) is not None
    await _wait_recovered(_sweeper(ledger), ledger, skus, _expected(oracle), bound_s=RECOVERY_BOUND_S)
    assert not await ledger.redis.exists(keys.reservation(rid))
    assert all([await ledger.redis.hlen(keys.holds(s)) == 0 for s in skus])
    held = await ledger.reserve(ReservationRequest(rid, "online", [ReservationLine(*x) for x in lines]), book())
    assert held.status == "held" and oracle.reserve(lines)
    assert await _buckets(ledger, skus) == _expected(oracle)
