"""`availability ledger migrate-layout`: a ledger written in the old per-SKU layout (one
global dirty set, journal, oversells and reservation indexes) is moved to the partitioned
layout by a real process, SIGKILLed mid-migration and run again: it resumes, verifies by
counting and by a checksum of the buckets, and the ledger reads, replays and reserves on
the new layout exactly as it did on the old."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.ledger.keys import KeyLayout, LayoutMismatch
from availability.ledger.ledger import Ledger
from tests.factories import book, event
from tests.ingest.conftest import random_events

pytestmark = pytest.mark.skipif(
    os.environ.get("AVAILABILITY_TEST_CLUSTER", "").lower() in ("1", "true", "yes"),
    reason="the old per-SKU layout never ran on a cluster: the migration's source is one server (--to-cluster moves it onto one)",
)

REPO = Path(__file__).resolve().parents[2]
SKUS = tuple(f"M-{i}" for i in range(1500))
STAMP = 1_795_000_000_000


class OldLayout(KeyLayout):
    """The names of the layout before partitions (version 1), so that today's ledger code
    writes an old-layout ledger for the migration to move."""

    __slots__ = ()

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix, 1)

    def _sku(self, sku: str) -> str:
        return f"{self.prefix}:{{{sku}}}"

    def reservation(self, reservation_id: str) -> str:
        return f"{self.prefix}:resv:{{{reservation_id}}}"

    def dirty(self, partition: int) -> str:
        return f"{self.prefix}:dirty"

    def journal(self, partition: int) -> str:
        return f"{self.prefix}:journal"

    def oversells(self, partition: int) -> str:
        return f"{self.prefix}:oversells"

    def ended_holds_index(self, partition: int) -> str:
        return f"{self.prefix}:holds:ended"

    def expiry(self, partition: int) -> str:
        return f"{self.prefix}:resv:expiry"

    def pending(self, partition: int) -> str:
        return f"{self.prefix}:resv:pending"

    def ended(self, partition: int) -> str:
        return f"{self.prefix}:resv:ended"


def _env(redis_url: str, prefix: str, tmp_path: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": prefix,
        "AVAILABILITY_DATA_DIR": str(tmp_path / "data"),
        "AVAILABILITY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/rules.db",
        "AVAILABILITY_LEDGER_PARTITIONS": "64",
    }


def _migrate(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "ledger", "migrate-layout", *extra],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


async def test_migrate_layout_killed_mid_way_resumes_and_verifies(redis_client, redis_url, tmp_path):
    prefix = f"mg{uuid.uuid4().hex[:8]}"
    old = Ledger(redis_client, keys=OldLayout(prefix))
    await old.load_scripts()
    events = [event("receipt", sku=s, quantity=20, event_id=f"seed-{s}") for s in SKUS]
    events += random_events(3000, seed=4, skus=SKUS[:200], dup_rate=0.0)
    events += [event("pos_sale", sku=SKUS[7], quantity=500, event_id="oversold")]  # an oversell record
    await old.apply_batch(events, at_ms=STAMP)
    for i in range(30):  # multi-SKU reservations (intent protocol), one-SKU ones (group commit), TTLs
        lines = [ReservationLine(SKUS[300 + i], 1)] + ([ReservationLine(SKUS[400 + i], 2)] if i % 2 else [])
        await old.reserve(ReservationRequest(f"r-{i}", "online", lines, ttl_seconds=None if i % 3 else 600), book())
    await old.release("r-3")
    await old.mark_dirty([(SKUS[9], "DC1")])
    stock_before = await old.stock_many(SKUS)
    oversells_before = sorted((i, o.event_id, o.units_short) for i, o in await old.oversells(limit=1000))
    reservations_before = [await old.get_reservation(f"r-{i}") for i in range(30)]
    journal_before = await redis_client.xlen(f"{prefix}:journal")
    assert journal_before > 0 and await redis_client.xlen(f"{prefix}:oversells") > 0

    new = Ledger(redis_client, keys=KeyLayout(prefix, 64))
    await new.load_scripts()
    with pytest.raises(LayoutMismatch, match="migrate-layout"):
        await new.check_layout()  # the service refuses to start on the old layout

    env = _env(redis_url, prefix, tmp_path)
    victim = _migrate(env, "--batch", "20")
    state_key = f"{prefix}:migrate:layout"
    try:
        for _ in range(6000):  # kill it once it has copied some keys, long before it finishes
            copied = await redis_client.hget(state_key, "copied")
            if copied and int(copied) > 0:
                break
            assert victim.poll() is None, victim.stderr.read()
            await asyncio.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    state = {k.decode(): v.decode() for k, v in (await redis_client.hgetall(state_key)).items()}
    assert state["phase"] == "keys" and int(state["copied"]) < len(SKUS), state  # really mid-way

    again = _migrate(env, "--batch", "200")
    out, err = await asyncio.to_thread(again.communicate, timeout=300)
    assert again.returncode == 0, err
    report = json.loads(out)
    assert report["phase"] == "done" and report["resumed"] is True
    assert report["old"] == report["new"], report
    assert report["new"]["stock_keys"] == len(SKUS) and report["new"]["journal_entries"] == journal_before

    await new.check_layout()  # recorded: 64 partitions
    assert await new.stock_many(SKUS) == stock_before
    assert [await new.get_reservation(f"r-{i}") for i in range(30)] == reservations_before
    assert await new.journal_length() == journal_before
    assert await new.index_count(new.keys.dirty) > 0 and await new.index_count(new.keys.expiry) > 0
    assert sorted((i, o.event_id, o.units_short) for i, o in await new.oversells(limit=1000)) == oversells_before
    assert "oversold" in {e for _, e, _ in oversells_before}
    # nothing of the old layout is left
    left = [k async for k in redis_client.scan_iter(match=f"{prefix}:{{M-*}}:*", count=5000)]
    assert left == [] and not await redis_client.exists(f"{prefix}:journal", f"{prefix}:dirty", f"{prefix}:resv:expiry")
    # idempotency records came along: a redelivered event is a duplicate, a new one applies
    [dup, fresh] = await new.apply_batch([events[0], event("receipt", sku=SKUS[0], quantity=1, event_id="after")],
                                         at_ms=STAMP)
    assert (dup.status, fresh.status) == ("duplicate", "applied")
    # and reservations go on: release one moved across, expire sweeps the moved TTL index
    released = await new.release("r-1")
    assert released.status == "released"
