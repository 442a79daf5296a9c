"""The event stream every apply benchmark and its same-work ceiling share.

`bench_ledger`, `bench_ingest` and `ceilings` all draw their events from `mixed_events`, so
the ceiling's Redis does the work the measured run asks of it: the same event mix (mostly
sales and receipts, some orders and counts), the same 100,000-SKU key space, the same four
locations and quantities, one SKU per event.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from availability.domain.events import StockEvent

T0 = datetime(2026, 11, 20, tzinfo=UTC)
SKUS = 100_000
LOCATIONS = ("DC1", "DC2", "STORE-1", "STORE-2")
#: the mix a retailer's stream carries: mostly sales and receipts, some orders and counts
MIX = (("pos_sale", 40), ("receipt", 20), ("reserve", 12), ("release", 5), ("fulfil", 8),
       ("adjustment", 5), ("cycle_count", 3), ("purchase_order", 4), ("pos_return", 3))


def iter_mixed_events(count: int, skus: int = SKUS, seed: int = 1) -> Iterator[StockEvent]:
    rnd = random.Random(seed)
    types = [t for t, weight in MIX for _ in range(weight)]
    for i in range(count):
        etype = rnd.choice(types)
        yield StockEvent(
            event_id=f"bench-{i}", type=etype, source="sim", occurred_at=T0 + timedelta(milliseconds=i),
            sku=f"SKU-{rnd.randrange(skus)}", location=rnd.choice(LOCATIONS), quantity=rnd.randint(1, 5),
            reference=f"o{rnd.randrange(1000)}" if etype in ("reserve", "release", "fulfil") else None,
            reason="damaged" if etype == "adjustment" else None,
        )


def mixed_events(count: int, skus: int = SKUS, seed: int = 1) -> list[StockEvent]:
    return list(iter_mixed_events(count, skus, seed))
