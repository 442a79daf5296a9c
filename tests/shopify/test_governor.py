"""The throttle pacing arithmetic and the governor's bookkeeping (no HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.shopify.client import (
    ThrottleGovernor,
    ThrottleStatus,
    estimate_available,
    pacing_delay,
)

STATUS = ThrottleStatus(maximum_available=2000.0, currently_available=100.0, restore_rate=100.0)


def test_no_wait_when_the_bucket_holds_the_cost():
    assert pacing_delay(STATUS, cost=100) == 0.0
    assert pacing_delay(STATUS, cost=10, reserve_margin=90) == 0.0


def test_wait_is_the_deficit_over_the_restore_rate():
    assert pacing_delay(STATUS, cost=150) == pytest.approx(0.5)
    assert pacing_delay(STATUS, cost=150, reserve_margin=50) == pytest.approx(1.0)


def test_elapsed_time_refills_the_estimate():
    assert pacing_delay(STATUS, cost=150, elapsed=0.2) == pytest.approx(0.3)
    assert pacing_delay(STATUS, cost=150, elapsed=0.5) == 0.0
    # Never more than the bucket holds.
    assert estimate_available(STATUS, elapsed=3600) == 2000.0
    assert estimate_available(STATUS, elapsed=-5) == 100.0


def test_in_flight_points_count_as_spent():
    assert pacing_delay(STATUS, cost=10, in_flight=95) == pytest.approx(0.05)


def test_need_is_capped_at_the_bucket_size():
    tiny = ThrottleStatus(maximum_available=50.0, currently_available=50.0, restore_rate=10.0)
    # 40 + margin 30 > 50: wait only for a full bucket, never forever.
    assert pacing_delay(tiny, cost=40, reserve_margin=30) == 0.0
    empty = ThrottleStatus(maximum_available=50.0, currently_available=0.0, restore_rate=10.0)
    assert pacing_delay(empty, cost=40, reserve_margin=30) == pytest.approx(5.0)


def test_zero_restore_rate_does_not_divide_by_zero():
    assert pacing_delay(ThrottleStatus(10.0, 0.0, 0.0), cost=5) == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_governor_delay_uses_time_since_observation():
    clock = FakeClock()
    gov = ThrottleGovernor(reserve_margin=10, clock=clock)
    assert gov.delay_for(500) == 0.0  # nothing known yet
    gov.observe(ThrottleStatus(1000.0, 0.0, 50.0))
    assert gov.delay_for(40) == pytest.approx(1.0)
    clock.now += 0.6
    assert gov.delay_for(40) == pytest.approx(0.4)
    assert gov.available_estimate() == pytest.approx(30.0)


def test_release_without_status_assumes_points_spent():
    clock = FakeClock()
    gov = ThrottleGovernor(clock=clock, initial_status=ThrottleStatus(100.0, 100.0, 10.0))
    gov._in_flight = 30  # as if acquired
    gov.release(30, None)
    assert gov.in_flight == 0
    assert gov.available_estimate() == pytest.approx(70.0)
    gov.release(0, ThrottleStatus(100.0, 12.0, 10.0))
    assert gov.available_estimate() == pytest.approx(12.0)


async def test_acquire_waits_for_the_bucket_and_tracks_in_flight():
    # The governor's clock is the test's: time passes when the test says so, so what is
    # checked is the pacing, not how promptly a loaded machine wakes a sleeper.
    now = [100.0]
    gov = ThrottleGovernor(initial_status=ThrottleStatus(1000.0, 0.0, 1000.0), clock=lambda: now[0])
    acquiring = asyncio.create_task(gov.acquire(50))  # 50 points at 1000/s: 50 ms
    await asyncio.sleep(0)  # it starts, finds the bucket empty and sleeps
    assert not acquiring.done() and gov.in_flight == 0
    now[0] += 0.03  # not enough yet: it sleeps again for the rest
    await asyncio.sleep(0.1)
    assert not acquiring.done() and gov.in_flight == 0
    now[0] += 0.025  # past the 50 ms (by more than float rounding of the clock's sum)
    assert await asyncio.wait_for(acquiring, 10) == pytest.approx(0.055)  # waited on its clock
    assert gov.in_flight == 50
    gov.release(50, ThrottleStatus(1000.0, 1000.0, 1000.0))
    assert gov.in_flight == 0
    assert await gov.acquire(50) == 0.0  # a full bucket: no wait at all


async def test_cold_start_lets_one_probe_through_first():
    gov = ThrottleGovernor()
    await gov.acquire(10)
    second = asyncio.create_task(gov.acquire(10))
    await asyncio.sleep(0.05)
    assert not second.done()  # waits for the first answer's throttleStatus
    gov.release(10, ThrottleStatus(2000.0, 1990.0, 100.0))
    await asyncio.wait_for(second, 1)
    assert gov.in_flight == 10


def test_negative_margin_rejected():
    with pytest.raises(ValueError):
        ThrottleGovernor(reserve_margin=-1)
