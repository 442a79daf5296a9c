"""Fixtures for ingestion tests: a full Runtime (real Redis, SQLite rule store) per test,
with its own key prefix, so stream names, groups and ledger keys never collide."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest_asyncio

from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.domain.events import ADJUSTMENT_REASONS, StockEvent
from availability.ingest.streams import StreamNames
from tests.factories import T0

SKUS = tuple(f"SKU-{i}" for i in range(12))
LOCATIONS = ("DC1", "S1", "S2")
TYPES = ("pos_sale", "pos_return", "pos_void", "receipt", "transfer_out", "transfer_in", "return", "ship",
         "adjustment", "cycle_count", "snapshot", "purchase_order", "pick", "reserve", "release", "allocate", "fulfil")


def make_settings(redis_url: str, key_prefix: str, tmp_path, **overrides) -> Settings:
    fields = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "data_dir": str(tmp_path),
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/rules.db",
        "partitions": 4,
        "batch_size": 200,
        "consumer_poll_ms": 20,
        "reclaim_interval_seconds": 0.2,
    }
    fields.update(overrides)
    return Settings(**fields)


@pytest_asyncio.fixture
async def runtime(redis_url, key_prefix, tmp_path):
    async with open_runtime(make_settings(redis_url, key_prefix, tmp_path)) as rt:
        yield rt


def random_events(n: int, *, seed: int = 7, skus=SKUS, dup_rate: float = 0.05) -> list[StockEvent]:
    """A delivery of n canonical events over a few SKUs: every type, late counts, order
    events by reference, and some events delivered twice."""
    rng = random.Random(seed)
    events: list[StockEvent] = []
    for i in range(n):
        if events and rng.random() < dup_rate:
            events.append(rng.choice(events))
            continue
        etype = rng.choice(TYPES)
        reference = None
        if etype in ("reserve", "release", "allocate", "fulfil"):
            reference = rng.choice(("o1", "o2", "o3", "o4"))
        elif etype in ("receipt", "transfer_in", "ship") and rng.random() < 0.5:
            reference = rng.choice(("o1", "PO-1"))
        events.append(
            StockEvent(
                event_id=f"ev-{seed}-{i}",
                type=etype,
                source=rng.choice(("wms", "pos", "erp", "oms")),
                occurred_at=T0 + timedelta(seconds=rng.randint(0, 500)),
                sku=rng.choice(skus),
                location=rng.choice(LOCATIONS),
                quantity=rng.randint(0, 30),
                reference=reference,
                reason=rng.choice(ADJUSTMENT_REASONS) if etype == "adjustment" else None,
            )
        )
    return events


async def wait_drained(redis, names: StreamNames, *, timeout: float = 20.0, expect_entries: int | None = None) -> None:
    """Until every partition's group has read everything and acknowledged it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = True
        for stream in names.all_partitions():
            info = await redis.xinfo_stream(stream)
            groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
            group = groups.get(names.group)
            if group is None or group["pending"] or group["last-delivered-id"] != info["last-generated-id"]:
                done = False
                break
        if done:
            return
        if loop.time() > deadline:
            raise AssertionError(f"streams not drained within {timeout}s: {stream} {group}")
        await asyncio.sleep(0.05)


async def assert_ledger_equals_oracle(ledger, events, skus=SKUS) -> None:
    from availability.domain.ats import Buckets
    from availability.domain.ledger_model import LedgerModel

    oracle = LedgerModel()
    for event in events:  # the stream keeps each SKU's events in order: per-SKU order is what counts
        oracle.apply(event)
    stock = await ledger.stock_many(skus)
    for sku in skus:
        for loc in LOCATIONS:
            assert stock[sku].get(loc, Buckets()) == oracle.buckets(sku, loc), (sku, loc)
