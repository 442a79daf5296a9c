"""The pacing audit's own arithmetic: it must flag a call the documented bucket could not pay for."""

from __future__ import annotations

from tests.shopify.bucket_audit import Call, refused_by_documented_bucket


def test_calls_within_the_bucket_and_its_refill_pass():
    # 40-point bucket, 400/s: four 10-point calls at once, then one every 25 ms.
    calls = [Call(0.0, 0.001, 10, 10) for _ in range(4)]
    calls += [Call(0.025 * n, 0.025 * n + 0.001, 10, 10) for n in range(1, 20)]
    assert refused_by_documented_bucket(calls, capacity=40, restore_rate=400) == []


def test_a_burst_beyond_the_bucket_is_flagged():
    calls = [Call(0.0, 0.001, 10, 10) for _ in range(6)]
    refused = refused_by_documented_bucket(calls, capacity=40, restore_rate=400)
    # the round trip's own refill (0.4 points) does not pay for a fifth or sixth call
    assert refused == calls[4:]


def test_unused_points_come_back_when_the_answer_does():
    # A read that asked for 30 and cost 3: 27 points return at its answer, so the next call fits.
    calls = [Call(0.0, 0.002, 30, 3), Call(0.003, 0.004, 30, 30)]
    assert refused_by_documented_bucket(calls, capacity=40, restore_rate=1) == []
    # Without the refund (the answer arrives after the second call is sent) it would not.
    late = [Call(0.0, 0.010, 30, 3), Call(0.003, 0.004, 30, 30)]
    assert refused_by_documented_bucket(late, capacity=40, restore_rate=1) == [late[1]]


def test_a_throttled_call_spends_nothing():
    calls = [Call(0.0, 0.001, 40, None), Call(0.002, 0.003, 40, 40)]
    assert refused_by_documented_bucket(calls, capacity=40, restore_rate=1) == []
