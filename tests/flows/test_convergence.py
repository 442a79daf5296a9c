"""Whatever Shopify and the network do, every mapped level ends equal to ATS: random event
sequences through the real ledger (checked against the plain-Python oracle), with 5xx
answers, latency, lost answers, forced throttling, an external writer and duplicated
webhooks; no request applied twice; the bucket never overdrawn; two publishers never
pushing one level at once."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

import pytest

from adapters.shopify.simulator import FaultConfig
from availability.domain.ledger_model import LedgerModel
from availability.flows.inventory.drift import DriftRepairer
from availability.flows.machinery import Backoff
from tests.flows.conftest import LOCATIONS, stock_event
from tests.shopify.bucket_audit import CallLog, refused_by_documented_bucket

FAST_RETRIES = Backoff(base=0.02, cap=0.25, max_attempts=40)
#: Bound of the traffic the pacing and two-publisher tests drive until their behaviour has
#: shown (generous for a loaded machine; a quiet one shows it in about 1-2 s).
TRAFFIC_BOUND_S = 60


def random_events(rng: random.Random, skus: list[str], n: int):
    out = []
    for _ in range(n):
        sku, loc = rng.choice(skus), rng.choice(LOCATIONS)
        kind = rng.random()
        if kind < 0.35:
            out.append(stock_event("receipt", sku, loc, rng.randint(1, 8)))
        elif kind < 0.75:
            out.append(stock_event("pos_sale", sku, loc, rng.randint(1, 3), source="pos"))
        elif kind < 0.85:
            out.append(stock_event("pos_return", sku, loc, 1, source="pos"))
        else:
            reason = rng.choice(["found", "lost", "damaged", "quality_hold", "quality_release"])
            out.append(stock_event("adjustment", sku, loc, rng.randint(1, 2), reason=reason))
        if rng.random() < 0.1:
            out.append(out[-1])  # a redelivered event: applied once
    return out


def instrument(client, name: str, intervals: list):
    """Record when each level was being pushed, by whom."""
    original = client.set_available

    async def set_available(entries, key, *args, **kwargs):
        started = time.monotonic()
        try:
            return await original(entries, key, *args, **kwargs)
        finally:
            ended = time.monotonic()
            for e in entries:
                intervals.append(((e.inventory_item_id, e.location_id), started, ended, name))

    client.set_available = set_available


@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_every_mapped_level_converges_to_ats_after_random_faults(shop_factory, webhook_intake, seed):
    rng = random.Random(seed)
    faults = FaultConfig(
        error_rate=0.15,
        latency_ms=8,
        latency_jitter_ms=8,
        timeout_rate=0.08,
        timeout_s=0.4,
        external_writer_interval_s=0.15,
        webhook_duplicate_rate=0.2,
    )
    shop = await shop_factory(6, initial=0, faults=faults, seed=seed, webhook_url=webhook_intake.url)
    skus = list(shop.items)
    client, log = shop.client(timeout=0.2), CallLog()
    log.attach(client._http)
    publisher = await shop.publisher(client=client, window_s=0.1, backoff=FAST_RETRIES)
    repairer = DriftRepairer(publisher, interval_s=0, block_ms=50)
    await repairer.start(periodic=False)
    model = LedgerModel()
    try:
        for step in range(40):
            batch = random_events(rng, skus, rng.randint(1, 6))
            for event in batch:
                model.apply(event)
            await shop.apply(*batch)
            if step % 12 == 6:
                shop.state.set_faults(force_throttle=3)
            if step % 12 == 9:
                # error_rate's draws share the simulator's generator with its writer,
                # so a short run can draw no 5xx at all; this one always comes
                shop.state.set_faults(force_error=1)
            await asyncio.sleep(rng.uniform(0.0, 0.06))
        shop.state.set_faults(
            error_rate=0.0, timeout_rate=0.0, latency_ms=0.0, latency_jitter_ms=0.0, external_writer_interval_s=0.0
        )
        await asyncio.sleep(0.3)  # the simulator's writer finishes the change it was sleeping on
        assert await shop.converged(25) == {}, (publisher.stats, shop.state.stats)
    finally:
        await repairer.stop()

    stats = shop.state.stats
    # every mapped level equals the oracle's ATS (the ledger agreed with the oracle too)
    for sku in skus:
        oracle = {loc: model.buckets(sku, loc) for loc in LOCATIONS}
        for loc in LOCATIONS:
            assert shop.shopify(sku, loc) == shop.ats_of(sku, loc, oracle), (sku, loc)
    # the run did exercise the faults
    assert stats.injected_errors > 0 and stats.external_changes > 0
    assert publisher.stats.retries > 0
    # no idempotency key was ever applied twice; nothing asked of the bucket exceeded what the plan holds
    assert max(shop.state.applications_by_key().values()) == 1
    limits = shop.state.limits
    assert log.calls and not refused_by_documented_bucket(log.calls, capacity=limits.bucket_size,
                                                          restore_rate=limits.restore_rate)


async def test_a_retried_request_is_never_applied_twice(shop_factory):
    """Lost answers (applied, answer held back past the client's timeout) and 5xx: the retry
    reuses the key and Shopify replays instead of applying again."""
    shop = await shop_factory(5, initial=0, faults=FaultConfig(timeout_rate=0.5, timeout_s=0.3, error_rate=0.2), seed=4)
    skus = list(shop.items)
    client = shop.client(timeout=0.15)
    # Which calls the seeded faults hit depends on timing (reads time out too), so the first
    # set call is made to lose its answer and its retry to get through: one replay for sure.
    original, calls = client.set_available, []

    async def first_answer_lost(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            shop.state.set_faults(timeout_rate=1.0, error_rate=0.0)
        elif len(calls) == 2:
            shop.state.set_faults(timeout_rate=0.0, error_rate=0.0)
        try:
            return await original(*args, **kwargs)
        finally:
            if len(calls) == 2:
                shop.state.set_faults(timeout_rate=0.5, error_rate=0.2)

    client.set_available = first_answer_lost
    publisher = await shop.publisher(client=client, window_s=0.05, backoff=FAST_RETRIES)
    rng = random.Random(4)
    for _ in range(15):
        await shop.apply(*random_events(rng, skus, 3))
        await asyncio.sleep(0.05)
    shop.state.set_faults(timeout_rate=0.0, error_rate=0.0)
    assert await shop.converged(20) == {}
    stats = shop.state.stats
    assert stats.injected_timeouts > 0 and stats.replays > 0
    # the per-level set history: no key's entries were applied in two adjustment groups
    assert max(shop.state.applications_by_key().values()) == 1
    applied = defaultdict(int)
    for record in shop.state.history:
        if record.source == "api":
            applied[(record.idempotency_key, record.inventory_item_id, record.location_id)] += 1
    assert max(applied.values()) == 1
    assert publisher.stats.retries > 0


async def test_pacing_keeps_a_small_bucket_from_being_overdrawn_or_throttled(shop_factory):
    shop = await shop_factory(12, initial=0, restore_rate=40.0, bucket_size=200.0)
    skus = list(shop.items)
    client, log = shop.client(), CallLog()
    log.attach(client._http)
    publisher = await shop.publisher(client=client, window_s=0.05)
    rng = random.Random(5)

    def pacing_needed_and_done() -> bool:
        return shop.state.stats.points_spent > 200 and publisher.client.stats.paced_seconds > 0

    # Traffic until the pacing has shown (more than a bucketful spent, some waits paced), not
    # for a wall time a loaded machine may fill with fewer pushes; bounded.
    deadline = time.monotonic() + TRAFFIC_BOUND_S
    while not pacing_needed_and_done():
        assert time.monotonic() < deadline, (shop.state.stats, publisher.client.stats)
        await shop.apply(*random_events(rng, skus, 10))
        await asyncio.sleep(0.02)
    assert await shop.converged(30) == {}
    stats = shop.state.stats
    assert stats.throttled == 0
    assert publisher.stats.throttled == 0
    # the publisher's own pacing kept every request within the documented 200-point, 40/s bucket
    assert not refused_by_documented_bucket(log.calls, capacity=200.0, restore_rate=40.0)
    assert stats.points_spent > 200  # more than one bucketful: the pacing was needed
    assert publisher.client.stats.paced_seconds > 0


async def test_two_publishers_never_push_the_same_level_at_once(shop_factory):
    shop = await shop_factory(4, initial=0, faults=FaultConfig(latency_ms=25, latency_jitter_ms=20))
    skus = list(shop.items)
    intervals: list = []
    pubs = []
    for name in ("A", "B"):
        client = shop.client()
        instrument(client, name, intervals)
        pubs.append(await shop.publisher(client=client, window_s=0.02, rounds_in_flight=3))
    rng = random.Random(9)

    def contended() -> bool:
        # both publishers worked, and some level was pushed by each (else there is no pair of
        # their spans to compare)
        names: dict = defaultdict(set)
        for level, _started, _ended, name in intervals:
            names[level].add(name)
        return all(p.stats.quantities_pushed > 0 for p in pubs) and any(len(n) == 2 for n in names.values())

    # At least 100 steps of traffic (a spread of levels and rounds), then on until the two have
    # contended, not for a wall time a loaded machine may fill with few pushes; bounded.
    deadline = time.monotonic() + TRAFFIC_BOUND_S
    steps = 0
    while steps < 100 or not contended():
        assert time.monotonic() < deadline, [p.stats for p in pubs]
        await shop.apply(*random_events(rng, skus, 4))
        await asyncio.sleep(0.01)
        steps += 1
    assert await shop.converged(15) == {}

    by_level = defaultdict(list)
    for level, started, ended, name in intervals:
        by_level[level].append((started, ended, name))
    for level, spans in by_level.items():
        spans.sort()
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            assert e1 <= s2, f"{level} pushed by {n1} and {n2} at once"
    assert all(p.stats.quantities_pushed > 0 for p in pubs), "both publishers must have worked"
    assert max(shop.state.applications_by_key().values()) == 1
