"""Prometheus metrics of the ledger itself (module level: one set per process).

Oversells are counted where the ledger reports them, so every path that applies events
(the consumer's fast path, `Ledger.apply_batch`, `POST /v1/events` in direct mode) counts
them once. Labels are bounded: source system only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter

if TYPE_CHECKING:
    from availability.domain.events import StockEvent
    from availability.ledger.ledger import ApplyResult

OVERSELLS = Counter(
    "availability_oversells_total",
    "Order or sale events that took more than the location had available (recorded, listed at GET /v1/oversells)",
    ["source"],
)
OVERSOLD_UNITS = Counter(
    "availability_oversold_units_total",
    "Units sold beyond what the location had, by source system",
    ["source"],
)


def count_oversells(events: Sequence[StockEvent], results: Sequence[ApplyResult]) -> None:
    for event, result in zip(events, results):
        if result.units_short:
            OVERSELLS.labels(event.source).inc()
            OVERSOLD_UNITS.labels(event.source).inc(result.units_short)
