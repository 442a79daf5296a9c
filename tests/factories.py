"""Small builders for tests: events and rule books with readable defaults."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from availability.domain.events import StockEvent
from availability.domain.rules import Channel, Location, Rule, RuleBook

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
_counter = iter(range(10**9))


def event(type_: str, sku: str = "TEE-BLK-M", location: str = "DC1", quantity: int = 1, *, at: int = 0, **kw) -> StockEvent:
    """`at` is seconds after T0."""
    return StockEvent(
        event_id=kw.pop("event_id", f"e{next(_counter)}"),
        type=type_,
        source=kw.pop("source", "wms"),
        occurred_at=T0 + timedelta(seconds=at),
        sku=sku,
        location=location,
        quantity=quantity,
        **kw,
    )


def book(*, locations=("DC1", "STORE-1"), channels=None, rules=(), version=1, categories=None) -> RuleBook:
    locs = [
        loc if isinstance(loc, Location) else Location(code=loc, priority=i + 1)
        for i, loc in enumerate(locations)
    ]
    return RuleBook(
        version=version,
        locations=locs,
        channels=list(channels or []),
        rules=[r if isinstance(r, Rule) else Rule(id=i + 1, **r) for i, r in enumerate(rules)],
        sku_categories=categories,
    )


__all__ = ["T0", "event", "book", "Channel", "Location", "Rule"]
