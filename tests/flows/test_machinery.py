"""The shared flow machinery against a real Redis: leases, the coalescing work queue, the
outbox take-over, dead letters, backoff."""

from __future__ import annotations

import random

import pytest

from availability.ledger.keys import KeyLayout
from availability.flows.machinery import (
    Backoff,
    DeadLetter,
    DeadLetterQueue,
    GiveUp,
    Leases,
    Outbox,
    OutboxMessage,
    Scripts,
    WorkQueue,
    now_ms,
    retry_transient,
)


def _head(key_prefix: str) -> str:
    """A queue's keys share one partition's hash tag (the claim names marks, urgent marks
    and leases in one script: one slot on Redis Cluster)."""
    return KeyLayout(key_prefix).queue_head("test-flow")


@pytest.fixture
def queue(redis_client, key_prefix):
    scripts = Scripts(redis_client)
    head = _head(key_prefix)
    leases = Leases(redis_client, f"{head}:leases", scripts)
    return WorkQueue(redis_client, marks_key=f"{head}:dirty", urgent_key=f"{head}:urgent", leases=leases, scripts=scripts)


def test_backoff_grows_with_jitter_and_honours_hints():
    b = Backoff(base=0.1, factor=2, cap=1.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0), (20, 1.0)]:
        draws = [b.delay(attempt, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws)
        assert max(draws) - min(draws) > ceiling / 10  # jittered, not a constant
    assert b.delay(1, retry_after=3.0) == 3.0


async def test_retry_transient_retries_then_gives_up():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("slow")
        return "ok"

    async def no_sleep(_):
        return None

    assert await retry_transient(flaky, backoff=Backoff(max_attempts=5), transient=(TimeoutError,), sleep=no_sleep) == "ok"
    assert len(calls) == 3

    async def always():
        raise TimeoutError("down")

    with pytest.raises(GiveUp) as info:
        await retry_transient(always, backoff=Backoff(max_attempts=4), transient=(TimeoutError,), sleep=no_sleep)
    assert info.value.attempts == 4


async def test_claim_takes_only_due_marks_and_keeps_first_dirty_time(queue):
    t = now_ms()
    await queue.mark(["A|DC1"], at_ms=t - 5000)
    await queue.mark(["A|DC1"], at_ms=t)  # NX: the first time stays
    await queue.mark(["B|DC1"], at_ms=t)
    claimed = await queue.claim("w1", window_ms=1000, limit=10, lease_ms=10_000, at_ms=t)
    assert [(c.member, c.dirty_since_ms) for c in claimed] == [("A|DC1", t - 5000)]
    assert await queue.pending() == (1, 0)


async def test_a_leased_group_is_not_claimed_by_another_owner_until_released(queue):
    t = now_ms()
    await queue.mark(["A|DC1", "A|S1", "B|DC1"], at_ms=t - 5000)
    first = await queue.claim("w1", window_ms=1000, limit=1, lease_ms=10_000)
    assert [c.member for c in first] == ["A|DC1"]
    # w2 may not take A's other mark while w1 holds A, but takes B
    second = await queue.claim("w2", window_ms=1000, limit=10, lease_ms=10_000)
    assert [c.member for c in second] == ["B|DC1"]
    await queue.mark(["A|DC1"], at_ms=t - 5000)  # changed again after w1's claim
    assert await queue.claim("w2", window_ms=1000, limit=10, lease_ms=10_000) == []
    assert await queue.leases.release(["A"], "w2") == 0  # not w2's to release
    assert await queue.leases.release(["A"], "w1") == 1
    third = await queue.claim("w2", window_ms=1000, limit=10, lease_ms=10_000)
    assert sorted(c.member for c in third) == ["A|DC1", "A|S1"]


async def test_an_expired_lease_is_taken_over(queue):
    await queue.mark(["A|DC1"], at_ms=now_ms() - 5000)
    assert await queue.claim("dead", window_ms=0, limit=10, lease_ms=1)
    await queue.mark(["A|DC1"], at_ms=now_ms() - 5000)
    import asyncio

    await asyncio.sleep(0.01)
    assert [c.member for c in await queue.claim("alive", window_ms=0, limit=10, lease_ms=10_000)] == ["A|DC1"]


async def test_urgent_marks_skip_the_window(queue):
    t = now_ms()
    await queue.mark(["A|DC1"], at_ms=t)
    await queue.flag_urgent(["A|DC1"], at_ms=t)
    claimed = await queue.claim("w1", window_ms=60_000, limit=10, lease_ms=10_000, at_ms=t)
    assert [(c.member, c.dirty_since_ms, c.urgent) for c in claimed] == [("A|DC1", t, True)]
    assert await queue.pending() == (0, 0)


async def test_outbox_messages_of_a_dead_worker_are_taken_over_with_their_key(redis_client, key_prefix):
    outbox = Outbox(redis_client, _head(key_prefix))
    msg = OutboxMessage(id="m1", flow="f", idempotency_key="k-1", payload={"x": [1, 2]}, correlation_id="c", created_ms=1)
    await outbox.put(msg, lease_ms=60_000)
    assert await outbox.take_over(lease_ms=1000) == []  # alive
    await outbox.renew("m1", -1)  # the worker stopped renewing
    taken = await outbox.take_over(lease_ms=60_000)
    assert taken == [msg]
    assert await outbox.take_over(lease_ms=60_000) == []  # now leased to the taker
    await outbox.done("m1")
    assert await outbox.pending() == 0


async def test_dead_letters_list_and_replay(redis_client, key_prefix):
    dlq = DeadLetterQueue(redis_client, f"{key_prefix}:dlq")
    for i in range(3):
        await dlq.put(DeadLetter(id=f"d{i}", flow="f", reason="BAD", payload={"i": i}))
    assert [d.id for d in await dlq.list()] == ["d0", "d1", "d2"]
    seen = []

    async def handler(letter):
        seen.append(letter.id)

    await dlq.replay(handler, ["d1"])
    assert seen == ["d1"]
    assert [d.id for d in await dlq.list()] == ["d0", "d2"]

    async def failing(letter):
        raise RuntimeError("still broken")

    with pytest.raises(RuntimeError):
        await dlq.replay(failing, ["d0"])
    assert await dlq.size() == 2  # put back
