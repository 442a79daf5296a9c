"""The ledger's event semantics in plain Python: the specification and the test oracle.

`availability/ledger/scripts/apply_event.lua` is the production implementation (atomic
in Redis); this module says the same thing in readable Python, and the property tests
drive both with the same random event sequences (duplicates, reorderings, late counts)
and require identical buckets. Change one, change the other.

Semantics (product.md, "Events and the ledger"):
- idempotent: an event_id seen within the idempotency window changes nothing;
- an absolute count (cycle_count, snapshot) as of T sets on_hand to the count plus the
  on_hand deltas that happened after T; a count older than the last one is ignored;
- an on_hand delta that happened at or before the last count is already inside it, so
  only its effects on other buckets (reserved, allocated, unsellable) stand;
- order events move units between buckets through a *hold* per order reference, so a
  release that arrives before its reserve leaves the order released.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from availability.domain.ats import Buckets
from availability.domain.events import ABSOLUTE_TYPES, StockEvent


@dataclass
class Hold:
    state: str  # H held, C committed/allocated, R released, X expired, F fulfilled
    channel: str = ""
    expires_ms: int = 0
    #: location -> [reserved, allocated], in first-touched order
    lines: dict[str, list[int]] = field(default_factory=dict)

    def line(self, location: str) -> list[int]:
        return self.lines.setdefault(location, [0, 0])

    def empty(self) -> bool:
        return all(r == 0 and a == 0 for r, a in self.lines.values())

    def compact(self) -> None:
        # The Lua side stores only non-zero lines, so a line emptied and touched again
        # moves to the end of the order; mirror that.
        self.lines = {loc: line for loc, line in self.lines.items() if line[0] or line[1]}


@dataclass
class PairState:
    on_hand: int = 0
    reserved: int = 0
    allocated: int = 0
    unsellable: int = 0
    incoming: int = 0
    count_ms: int = -1
    #: on_hand deltas since the last count: (occurred_ms, delta)
    deltas: list[tuple[int, int]] = field(default_factory=list)

    def buckets(self) -> Buckets:
        return Buckets(self.on_hand, self.reserved, self.allocated, self.unsellable, self.incoming)


class LedgerModel:
    """In-memory ledger with exactly the semantics of the Lua scripts (no windows or caps)."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairState] = {}
        self.holds: dict[tuple[str, str], Hold] = {}  # (sku, reference) -> hold
        self.seen: set[tuple[str, str]] = set()

    def buckets(self, sku: str, location: str) -> Buckets:
        pair = self.pairs.get((sku, location))
        return pair.buckets() if pair else Buckets()

    def apply(self, event: StockEvent) -> str:
        key = (event.sku, event.event_id)
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        pair = self.pairs.setdefault((event.sku, event.location), PairState())
        q, at, etype = event.quantity, event.occurred_ms, event.type
        status = "applied"
        d_oh = 0
        if etype in ABSOLUTE_TYPES:
            if pair.count_ms >= 0 and at <= pair.count_ms:
                return "stale_count"
            pair.on_hand = q + sum(d for when, d in pair.deltas if when > at)
            pair.count_ms = at
            pair.deltas = [(when, d) for when, d in pair.deltas if when > at]
            return status
        if etype in ("pos_sale", "transfer_out"):
            d_oh = -q
        elif etype in ("pos_return", "pos_void", "return"):
            d_oh = q
        elif etype in ("receipt", "transfer_in"):
            d_oh = q
            if event.reference:
                pair.incoming -= min(q, pair.incoming)
        elif etype == "purchase_order":
            pair.incoming += q
        elif etype == "adjustment":
            reason = event.reason
            if reason == "found":
                d_oh = q
            elif reason == "lost":
                d_oh = -q
            elif reason in ("damaged", "quality_hold"):
                pair.unsellable += q
            elif reason == "quality_release":
                pair.unsellable -= min(q, pair.unsellable)
            elif reason == "write_off":
                d_oh = -q
                pair.unsellable -= min(q, pair.unsellable)
        elif etype == "pick":
            status = "recorded"
        else:  # reserve, release, allocate, fulfil, ship
            status, d_oh = self._order_event(event, pair)
        if d_oh:
            if pair.count_ms >= 0 and at <= pair.count_ms:
                status = "inside_count"
            else:
                pair.on_hand += d_oh
                pair.deltas.append((at, d_oh))
        return status

    def _order_event(self, event: StockEvent, pair: PairState) -> tuple[str, int]:
        status, d_oh = self._settle_order_event(event, pair)
        hold = self.holds.get((event.sku, event.reference or ""))
        if hold is not None:
            hold.compact()
        return status, d_oh

    def _settle_order_event(self, event: StockEvent, pair: PairState) -> tuple[str, int]:
        q, etype, loc = event.quantity, event.type, event.location
        hold_key = (event.sku, event.reference or "")
        hold = self.holds.get(hold_key) if event.reference else None
        d_oh = -q if etype in ("fulfil", "ship") else 0
        if hold is not None and hold.state == "R":
            return ("released_before" if d_oh == 0 else "applied"), d_oh
        if etype == "reserve":
            if hold is None:
                hold = self.holds[hold_key] = Hold("H", event.channel or "")
            hold.line(loc)[0] += q
            pair.reserved += q
        elif etype == "release":
            if hold is None:
                self.holds[hold_key] = Hold("R")
                return "released_before", 0
            line = hold.line(loc)
            released = min(q, line[0])
            line[0] -= released
            pair.reserved -= released
            if hold.empty():
                hold.state = "R"
        elif etype == "allocate":
            if hold is None:
                hold = self.holds[hold_key] = Hold("C", event.channel or "")
            line = hold.line(loc)
            moved = min(q, line[0])
            line[0] -= moved
            pair.reserved -= moved
            line[1] += q
            pair.allocated += q
            hold.state = "C"
        elif hold is not None:  # fulfil / ship of a known order
            line = hold.line(loc)
            from_allocated = min(q, line[1])
            line[1] -= from_allocated
            pair.allocated -= from_allocated
            from_reserved = min(q - from_allocated, line[0])
            line[0] -= from_reserved
            pair.reserved -= from_reserved
            # Shipped from elsewhere than it was held: settle the hold at other locations too.
            rest = q - from_allocated - from_reserved
            for other, other_line in hold.lines.items():
                if rest <= 0:
                    break
                if other == loc or not (other_line[0] or other_line[1]):
                    continue
                other_allocated = min(rest, other_line[1])
                other_reserved = min(rest - other_allocated, other_line[0])
                other_line[1] -= other_allocated
                other_line[0] -= other_reserved
                rest -= other_allocated + other_reserved
                other_pair = self.pairs.setdefault((event.sku, other), PairState())
                other_pair.reserved -= min(other_reserved, other_pair.reserved)
                other_pair.allocated -= min(other_allocated, other_pair.allocated)
            if hold.empty():
                hold.state = "F"
        return "applied", d_oh
