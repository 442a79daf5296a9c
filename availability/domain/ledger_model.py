"""The ledger's event semantics in plain Python: the specification and the test oracle.

`availability/ledger/scripts/apply_event.lua` is the production implementation (atomic
in Redis); this module says the same thing in readable Python, and the property tests
drive both with the same random event sequences (duplicates, reorderings, late counts)
and require identical buckets. Change one, change the other.

Semantics (product.md, "Events and the ledger"):
- idempotent: an event seen within the idempotency window changes nothing (the ledger
  keeps an 8-byte digest of the event id per SKU, so does this model);
- an absolute count (cycle_count, snapshot) as of T sets on_hand to the count plus the
  on_hand deltas that happened after T; a count older than the last one is ignored. A
  count may say it saw a source only up to an earlier time (`seen_through`, or the
  ledger's configured lag per source): that source's deltas after that time are not
  inside it and stay on top of it;
- an on_hand delta that happened at or before the last count (at or before the count's
  cutoff for its source) is already inside it, so only its effects on other buckets
  (reserved, allocated, unsellable) stand;
- a sale or order that takes more than the location has available (on_hand − reserved −
  allocated − unsellable) is applied anyway and recorded as an oversell with the units
  it pushed below zero;
- order events move units between buckets through a *hold* per order reference, so a
  release that arrives before its reserve leaves the order released.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from availability.domain.ats import Buckets
from availability.domain.events import ABSOLUTE_TYPES, StockEvent, event_digest, source_code, to_epoch_ms

#: event types that sell or take units for an order: they can oversell
SELLING_TYPES = frozenset({"reserve", "allocate", "pos_sale", "fulfil", "ship"})


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
    #: per source code, the last count's cutoff where it is earlier than count_ms
    count_cuts: dict[int, int] = field(default_factory=dict)
    #: on_hand deltas not inside the last count: (occurred_ms, delta, source code)
    deltas: list[tuple[int, int, int]] = field(default_factory=list)

    def inside_count(self, at: int, code: int) -> bool:
        if self.count_ms < 0 or at > self.count_ms:
            return False
        cut = self.count_cuts.get(code)
        return cut is None or at <= cut

    def buckets(self) -> Buckets:
        return Buckets(self.on_hand, self.reserved, self.allocated, self.unsellable, self.incoming)


class LedgerModel:
    """In-memory ledger with exactly the semantics of the Lua scripts (no windows or caps)."""

    def __init__(self, *, count_lag_ms: dict[str, int] | None = None) -> None:
        self.pairs: dict[tuple[str, str], PairState] = {}
        self.holds: dict[tuple[str, str], Hold] = {}  # (sku, reference) -> hold
        self.seen: set[tuple[str, bytes]] = set()  # (sku, digest of event_id)
        self.count_lag_ms = count_lag_ms or {}
        #: oversells as the ledger records them: (event_id, reference, sku, location, units short)
        self.oversells: list[tuple[str, str, str, str, int]] = []

    def cutoffs(self, event: StockEvent) -> dict[int, int]:
        """Per source code, how far a count saw that source (only where earlier than it)."""
        at = event.occurred_ms
        cuts = {source_code(s): max(0, at - lag) for s, lag in self.count_lag_ms.items()}
        for s, moment in (event.seen_through or {}).items():
            cuts[source_code(s)] = max(0, min(at, to_epoch_ms(moment)))
        return {code: ms for code, ms in cuts.items() if ms < at}

    def buckets(self, sku: str, location: str) -> Buckets:
        pair = self.pairs.get((sku, location))
        return pair.buckets() if pair else Buckets()

    def apply(self, event: StockEvent) -> str:
        key = (event.sku, event_digest(event.event_id))
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        pair = self.pairs.setdefault((event.sku, event.location), PairState())
        q, at, etype = event.quantity, event.occurred_ms, event.type
        if etype in ABSOLUTE_TYPES:
            if pair.count_ms >= 0 and at <= pair.count_ms:
                return "stale_count"
            cuts = self.cutoffs(event)
            # Deltas after the count's time (for a lagging source, after its cutoff) are
            # not inside it: they stay on top of it and stay in the log.
            pair.deltas = [(when, d, c) for when, d, c in pair.deltas if when > cuts.get(c, at)]
            pair.on_hand = q + sum(d for _, d, _ in pair.deltas)
            pair.count_ms = at
            pair.count_cuts = cuts
            return "applied"
        available_before = pair.on_hand - pair.reserved - pair.allocated - pair.unsellable
        status = self._delta_event(event, pair)
        if etype in SELLING_TYPES:
            available = pair.on_hand - pair.reserved - pair.allocated - pair.unsellable
            short = max(0, -available) - max(0, -available_before)
            if short > 0:
                self.oversells.append((event.event_id, event.reference or "", event.sku, event.location, short))
        return status

    def _delta_event(self, event: StockEvent, pair: PairState) -> str:
        q, at, etype = event.quantity, event.occurred_ms, event.type
        status = "applied"
        d_oh = 0
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
            if pair.inside_count(at, source_code(event.source)):
                status = "inside_count"
            else:
                pair.on_hand += d_oh
                pair.deltas.append((at, d_oh, source_code(event.source)))
        return status

    def forget_ended_holds(self) -> int:
        """Retention once every ended hold's time has passed (forget_holds.lua after the
        grace, and after the idempotency window for a release that came before its reserve):
        holds released, expired or fulfilled with nothing left on them are forgotten, so a
        later event under that reference starts afresh. Returns how many went."""
        gone = [k for k, h in self.holds.items() if h.state in ("R", "X", "F") and h.empty()]
        for k in gone:
            del self.holds[k]
        return len(gone)

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
