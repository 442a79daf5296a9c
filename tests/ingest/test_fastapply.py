"""The consumer's fast apply path sends exactly what `Ledger.apply_batch` sends: the same
random events through both give the same statuses and the same buckets."""

from __future__ import annotations

import os

import pytest

from availability.ingest.fastapply import FastApplier
from availability.ledger import resp
from availability.ledger.resp import PyReader as _PyReader
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from tests.ingest.conftest import SKUS, random_events

pytestmark = pytest.mark.skipif(
    os.environ.get("AVAILABILITY_TEST_CLUSTER", "").lower() in ("1", "true", "yes"),
    reason="the fast applier speaks RESP to one server (on a cluster the consumer applies through the ledger)",
)


@pytest.mark.parametrize("reader,batched", [("hiredis", True), ("hiredis", False), ("python", True)])
async def test_fast_applier_equals_ledger_apply_batch(redis_client, redis_url, key_prefix, reader, batched, monkeypatch):
    if reader == "python":
        monkeypatch.setattr(resp, "_HiredisReader", None)  # as without hiredis installed
    elif not resp.HAVE_HIREDIS:
        pytest.skip("hiredis is not installed")
    events = random_events(2000, seed=21, dup_rate=0.1)
    reference = Ledger(redis_client, keys=KeyLayout(f"{key_prefix}a"))
    fast_ledger = Ledger(redis_client, keys=KeyLayout(f"{key_prefix}b"))
    await reference.load_scripts()
    await fast_ledger.load_scripts()
    applier = FastApplier(fast_ledger, redis_url, connections=2, batched=batched, per_call=64)
    try:
        expected, got = [], []
        for start in range(0, len(events), 300):
            chunk = events[start : start + 300]
            expected += await reference.apply_batch(chunk, at_ms=1_795_000_000_000)
            got += await applier.apply_batch(chunk, at_ms=1_795_000_000_000)
    finally:
        await applier.close()
    assert [(r.event_id, r.status, r.buckets) for r in got] == [(r.event_id, r.status, r.buckets) for r in expected]
    assert await fast_ledger.stock_many(SKUS) == await reference.stock_many(SKUS)


async def test_unicode_and_noscript(redis_client, redis_url, key_prefix):
    from tests.factories import event

    ledger = Ledger(redis_client, keys=KeyLayout(key_prefix))
    await ledger.load_scripts()
    applier = FastApplier(ledger, redis_url, connections=1)
    try:
        [result] = await applier.apply_batch([event("receipt", sku="TÉE-ÑOIR-М", quantity=3, reference="PO-ü")])
        assert result.status == "applied" and result.buckets.on_hand == 3
        assert (await ledger.stock("TÉE-ÑOIR-М"))["DC1"].on_hand == 3
        # Redis lost its script cache (restart): the scripts are reloaded and the batch re-sent.
        await redis_client.script_flush()
        [again] = await applier.apply_batch([event("receipt", sku="TÉE-ÑOIR-М", quantity=2)])
        assert again.status == "applied" and again.buckets.on_hand == 5
    finally:
        await applier.close()


def test_pure_python_reader_parses_replies():
    reader = _PyReader()
    reader.feed(b"*6\r\n$7\r\napplied\r\n:3\r\n:0\r\n:0")
    assert reader.gets() is False
    reader.feed(b"\r\n:0\r\n:0\r\n-NOSCRIPT No matching script\r\n")
    assert reader.gets() == [b"applied", 3, 0, 0, 0, 0]
    error = reader.gets()
    assert isinstance(error, Exception) and str(error).startswith("NOSCRIPT")
    assert reader.gets() is False


def test_fast_encoding_is_exactly_the_ledgers_script_call(redis_client, redis_url, key_prefix):
    """Byte for byte what `ledger.apply_call` gives for the same events and stamp (every
    KEYS and ARGV, the idempotency buckets, the digest, a count's per-source cutoffs)."""
    from datetime import timedelta

    from availability.ledger.ledger import LedgerLimits, apply_call
    from tests.factories import T0, event

    def _encode(*parts) -> bytes:  # RESP, written out here as the oracle of the fast path's
        out = [b"*%d\r\n" % len(parts)]
        for part in parts:
            raw = part if isinstance(part, bytes) else str(part).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    limits = LedgerLimits(count_lag_ms={"pos": 60_000})
    ledger = Ledger(redis_client, keys=KeyLayout(key_prefix), limits=limits)
    applier = FastApplier(ledger, redis_url, connections=1)
    events = random_events(50, seed=3) + [
        event("snapshot", source="erp", quantity=5, seen_through={"wms": T0 - timedelta(seconds=30)}),
        event("reserve", sku="TÉE", reference="ord-ü", channel="online", source="shopify"),
    ]
    stamp = 1_796_000_000_000
    expected = b"".join(
        _encode("EVALSHA", applier._sha[5:-2].decode(), str(len(k)), *k, *a)
        for k, a in (apply_call(ledger.keys, limits, e, stamp) for e in events)
    )
    assert applier._encode(events, stamp) == expected

    # batched: one EVALSHA apply_batch.lua per partition group, with `ledger.batch_call`'s KEYS/ARGV
    from availability.ledger.ledger import batch_call, partition_batches

    groups = partition_batches(ledger.keys, events, applier.per_call)
    expected = b"".join(
        _encode("EVALSHA", applier._batch_sha[5:-2].decode(), str(len(k)), *k, *a)
        for k, a in (batch_call(ledger.keys, limits, [events[i] for i in g], stamp) for g in groups)
    )
    payload, got_groups = applier._encode_batched(events, stamp)
    assert payload == expected and got_groups == groups
    assert sorted(i for g in groups for i in g) == list(range(len(events)))
    assert all(len({ledger.keys.partition(events[i].sku) for i in g}) == 1 for g in groups)
