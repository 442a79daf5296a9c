"""Backtest: what the last N days would have looked like under other rules. Pure: no I/O.

The journal (availability/ledger/journal.py) holds every bucket change with the buckets
before and after it. A replay walks it in order under one `RuleBook`, and the report
compares two replays over the same entries: the current rules and the draft. The model
(docs/backtest.md has it with its limits):

- **What the rules decide.** Only holds the reservation API placed (`reserve` entries
  with status `held`) passed an ATS check, so only they are judged again: the order's
  holds of a SKU are taken in a replay when the replay's channel ATS at each location
  covers the units held there, else the order is *refused* in that replay. A refused
  reservation line the ledger journaled (`refuse`) is judged too: refused in the replay
  when the replay's ATS (at its location, or summed over the locations of that SKU the
  replay has met) does not cover it. Everything else (sales, receipts, counts, orders
  taken elsewhere such as Shopify's) happened whatever the rules, and is replayed as it was.
- **State.** A replay's buckets are the journal's plus an offset per (SKU, location): the
  changes of the orders it refused (their hold and everything that order did later:
  commit, release, fulfil, ship) are left out. So the state at the window's start is the
  first entry's `before`, and a replay that refuses nothing follows the ledger exactly.
- **Measures, per channel.** Orders (distinct ids) and units refused; stockouts (a
  (SKU, location, channel) ATS going from above 0 to 0); oversells (an order or sale that
  pushed a location's available below zero, as the ledger's oversell exceptions do);
  units unexposed: after each entry, the units the current rules offer at its location
  and the draft does not (max(0, current - draft)), summed over entries.
- **Report.** `orders_refused` and `units_refused` are draft minus current (negative: the
  draft takes orders the current rules refuse); `stockouts_avoided` and
  `oversells_avoided` are current minus draft (negative: the draft causes more);
  `units_unexposed` is the sum above.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import msgspec

from availability.domain.rules import RuleBook
from availability.ledger.journal import JournalEntry

BASIS_POINTS = 10_000

#: entries that take or sell units at a location: an oversell is counted on them (as
#: apply_event.lua records oversell exceptions)
SELLING_TYPES = frozenset({"reserve", "allocate", "pos_sale", "fulfil", "ship"})

#: the row oversells of entries that name no channel are counted in
UNATTRIBUTED = "(no channel)"


class ChannelOutcome(msgspec.Struct, kw_only=True):
    channel: str
    orders_refused: int
    units_refused: int
    stockouts_avoided: int
    oversells_avoided: int
    units_unexposed: int


class BacktestReport(msgspec.Struct, kw_only=True):
    days: int
    entries: int
    channels: list[ChannelOutcome]


# A (SKU, location)'s ATS terms under one book, compiled to plain values:
# (safety units, protections in fill order ((channel, units, bp), ...),
#  channels selling there ((channel, buffer units, buffer bp, threshold), ...))
Plan = tuple[int, tuple[tuple[str, int, int], ...], tuple[tuple[str, int, int, int], ...]]


def _bp(percent: float) -> int:
    return int(round(percent * 100))


def compile_plan(book: RuleBook, sku: str, location: str) -> Plan:
    channels = book.channels_at(location)
    terms = [book.terms(sku, location, ch) for ch in channels]
    safety = terms[0].safety_units if terms else 0
    protections = tuple((p.channel, p.units, _bp(p.percent)) for p in book.protections(sku, location))
    selling = tuple(
        (ch, t.buffer_units, _bp(t.buffer_percent), t.threshold_units) for ch, t in zip(channels, terms)
    )
    return safety, protections, selling


def plan_ats(plan: Plan, buckets: Sequence[int]) -> tuple[int, ...]:
    """Channel ATS of each channel in `plan` for buckets (on_hand, reserved, allocated,
    unsellable): domain/ats.py's arithmetic, inlined for speed (tests/planning compares it
    with `location_availability`). Reserved, allocated and unsellable count from 0: a
    replay's never go below it, as the ledger's don't (only a journal that misses an
    order's start could take them there)."""
    safety, protections, selling = plan
    on_hand, reserved, allocated, unsellable = buckets[0], buckets[1], buckets[2], buckets[3]
    loc_ats = on_hand - safety
    if reserved > 0:
        loc_ats -= reserved
    if allocated > 0:
        loc_ats -= allocated
    if unsellable > 0:
        loc_ats -= unsellable
    if loc_ats < 0:
        loc_ats = 0
    remaining = loc_ats
    filled: dict[str, int] | None = None
    if protections:
        filled = {}
        for channel, units, bp in protections:
            wanted = units if units else (bp * loc_ats) // BASIS_POINTS
            got = wanted if wanted < remaining else remaining
            filled[channel] = got
            remaining -= got
    out = []
    for channel, buffer_units, buffer_bp, threshold in selling:
        # buffer = units + ceil(percent x location ATS): rounded so it never exposes more
        after = remaining - buffer_units + (-buffer_bp * loc_ats) // BASIS_POINTS
        if filled is not None:
            after += filled.get(channel, 0)
        if after < 0:
            after = 0
        out.append(0 if after < threshold else after)
    return tuple(out)


class _Tally:
    __slots__ = ("orders", "units", "stockouts", "oversells")

    def __init__(self) -> None:
        self.orders: set[str] = set()
        self.units = 0
        self.stockouts = 0
        self.oversells = 0


class Replay:
    """The journal replayed under one rule book (see the module docstring)."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self._skus_with_rules = frozenset(r.sku for r in book.rules if r.sku is not None)
        self._plans: dict[tuple, Plan] = {}
        self._pair_plan: dict[tuple[str, str], Plan] = {}
        #: (SKU, location) -> [replay buckets (on_hand, reserved, allocated, unsellable),
        #: channel ATS, plan, offset]: the offset is what the replay leaves out of the
        #: journal's buckets (None while nothing is)
        self.state: dict[tuple[str, str], list] = {}
        #: locations met per SKU (a refused line without a location is judged over them)
        self.locations_of: dict[str, list[str]] = defaultdict(list)
        #: (order, SKU) the replay refused: the order's later entries for that SKU are left out
        self.refused: set[tuple[str, str]] = set()
        self.tally: dict[str, _Tally] = defaultdict(_Tally)

    def plan(self, sku: str, location: str) -> Plan:
        key = (sku, location)
        found = self._pair_plan.get(key)
        if found is None:
            # SKUs without SKU rules share their category's terms: compile once per category
            shared = (sku if sku in self._skus_with_rules else None, self.book.sku_categories.get(sku), location)
            found = self._plans.get(shared)
            if found is None:
                found = self._plans[shared] = compile_plan(self.book, sku, location)
            self._pair_plan[key] = found
        return found

    def _pair(self, entry: JournalEntry) -> list:
        """The replay's state of the entry's (SKU, location), met now if not before (its
        state at the window's start is this first entry's `before`)."""
        key = (entry.sku, entry.location)
        pair = self.state.get(key)
        if pair is None:
            plan = self.plan(entry.sku, entry.location)
            buckets = entry.before[:4]
            pair = self.state[key] = [buckets, plan_ats(plan, buckets), plan, None]
            self.locations_of[entry.sku].append(entry.location)
        return pair

    def channel_ats(self, entry: JournalEntry, channel: str) -> int | None:
        """The replay's ATS for `channel` at the entry's (SKU, location) just before it,
        None when the channel does not sell there."""
        _buckets, ats, plan, _offset = self._pair(entry)
        for index, selling in enumerate(plan[2]):
            if selling[0] == channel:
                return ats[index]
        return None

    def takes(self, group: Sequence[JournalEntry]) -> bool:
        """Judge one reservation's holds of one SKU (one entry per location): True when the
        replay takes them, False when it refuses the order (counted here)."""
        first = group[0]
        order = (first.order, first.sku)
        if order in self.refused:
            return False
        channel = first.channel
        if channel not in self.book.channels:
            return True  # not a channel these rules know: nothing to judge it by
        for entry in group:
            ats = self.channel_ats(entry, channel)
            if ats is not None and ats < entry.quantity:
                self.refused.add(order)
                tally = self.tally[channel]
                tally.orders.add(first.order)
                tally.units += sum(e.quantity for e in group)
                return False
        return True

    def judge_refusal(self, entry: JournalEntry) -> None:
        """A line the ledger refused: counted when this replay refuses it too."""
        channel = entry.channel
        if channel not in self.book.channels:
            return
        if entry.location:
            locations = [entry.location]
        else:
            locations = self.locations_of.get(entry.sku, [])
        available = 0
        for location in locations:
            pair = self.state.get((entry.sku, location))
            if pair is None:
                continue  # not met yet in the window: its stock then is unknown here
            for index, selling in enumerate(pair[2][2]):
                if selling[0] == channel:
                    available += pair[1][index]
        if available < entry.quantity:
            tally = self.tally[channel]
            tally.orders.add(entry.order)
            tally.units += entry.quantity

    def step(self, entry: JournalEntry, *, take: bool = True) -> tuple[int, ...]:
        """Apply one entry (or leave it out: `take` False, or its order was refused);
        returns the channel ATS at its (SKU, location) after it."""
        pair = self.state.get((entry.sku, entry.location)) or self._pair(entry)
        buckets, ats, plan, offset = pair
        b, a = entry.before, entry.after
        if take and entry.order and (entry.order, entry.sku) in self.refused:
            take = False
        if not take:
            if offset is None:
                offset = (0, 0, 0, 0)
            pair[3] = (offset[0] + b[0] - a[0], offset[1] + b[1] - a[1], offset[2] + b[2] - a[2], offset[3] + b[3] - a[3])
            return ats
        if offset is None:
            after = a[:4]
        else:
            after = (a[0] + offset[0], a[1] + offset[1], a[2] + offset[2], a[3] + offset[3])
        if after == buckets:
            return ats
        new_ats = plan_ats(plan, after)
        if new_ats != ats:
            for index, was in enumerate(ats):
                if was > 0 and new_ats[index] == 0:
                    self.tally[plan[2][index][0]].stockouts += 1
        if entry.type in SELLING_TYPES:
            was_available = buckets[0] - buckets[1] - buckets[2] - buckets[3]
            now_available = after[0] - after[1] - after[2] - after[3]
            if now_available < min(0, was_available):
                self.tally[entry.channel or UNATTRIBUTED].oversells += 1
        pair[0] = after
        pair[1] = new_ats
        return new_ats

    def left_out(self) -> int:
        """(SKU, location) pairs whose replay differs from the journal's buckets."""
        return sum(1 for pair in self.state.values() if pair[3] is not None and any(pair[3]))


def is_judged_hold(entry: JournalEntry) -> bool:
    """A hold the reservation API placed after an ATS check (the rules decided it)."""
    return entry.type == "reserve" and entry.status == "held"


class Backtest:
    """Two replays, current rules and draft, fed the same journal pages in order."""

    def __init__(self, current: RuleBook, draft: RuleBook, *, days: int) -> None:
        self.days = days
        self.current = Replay(current)
        self.draft = Replay(draft)
        self.entries = 0
        self.unexposed: dict[str, int] = defaultdict(int)
        #: a reservation's holds that a page ended in the middle of (finished by the next page)
        self._pending: list[JournalEntry] = []

    def feed(self, entries: Iterable[JournalEntry]) -> None:
        pending = self._pending
        current, draft, compare = self.current, self.draft, self._compare
        for entry in entries:
            held = entry.type == "reserve" and entry.status == "held"  # is_judged_hold, inlined
            if pending and not (held and entry.event_id == pending[0].event_id and entry.sku == pending[0].sku):
                self._hold_group(pending)
                pending = self._pending = []
            if held:
                pending.append(entry)
            elif entry.type == "refuse":
                self.entries += 1
                current.judge_refusal(entry)
                draft.judge_refusal(entry)
            else:
                compare(entry, current.step(entry), draft.step(entry))

    def finish(self) -> BacktestReport:
        if self._pending:
            self._hold_group(self._pending)
            self._pending = []
        return self.report()

    def _hold_group(self, group: list[JournalEntry]) -> None:
        take_current = self.current.takes(group)
        take_draft = self.draft.takes(group)
        for entry in group:
            self._compare(
                entry, self.current.step(entry, take=take_current), self.draft.step(entry, take=take_draft)
            )

    def _compare(self, entry: JournalEntry, current_ats: tuple[int, ...], draft_ats: tuple[int, ...]) -> None:
        self.entries += 1
        if current_ats == draft_ats:
            return
        selling = self.current.state[(entry.sku, entry.location)][2][2]
        for index, shown in enumerate(current_ats):
            hidden = shown - draft_ats[index]
            if hidden > 0:
                self.unexposed[selling[index][0]] += hidden

    def partial(self) -> "BacktestPartial":
        """What this backtest counted, mergeable with other shards' (`merge`)."""
        return BacktestPartial(
            entries=self.entries,
            channels=sorted(self.current.book.channels),
            current={name: _counted(t) for name, t in self.current.tally.items()},
            draft={name: _counted(t) for name, t in self.draft.tally.items()},
            unexposed=dict(self.unexposed),
        )

    def report(self) -> BacktestReport:
        return merge([self.partial()], days=self.days)


class Counted(msgspec.Struct, array_like=True):
    orders: list[str]
    units: int
    stockouts: int
    oversells: int


class BacktestPartial(msgspec.Struct, kw_only=True):
    """One shard's counts (a worker process replays the SKUs of one shard): every measure is
    per SKU, so shards add up, but for orders, which are counted once by id."""

    entries: int
    channels: list[str]
    current: dict[str, Counted]
    draft: dict[str, Counted]
    unexposed: dict[str, int]


def _counted(tally: _Tally) -> Counted:
    return Counted(sorted(tally.orders), tally.units, tally.stockouts, tally.oversells)


def merge(parts: Sequence[BacktestPartial], *, days: int) -> BacktestReport:
    def total(side: str, name: str) -> tuple[set[str], int, int, int]:
        orders: set[str] = set()
        units = stockouts = oversells = 0
        for part in parts:
            counted = getattr(part, side).get(name)
            if counted is not None:
                orders.update(counted.orders)
                units += counted.units
                stockouts += counted.stockouts
                oversells += counted.oversells
        return orders, units, stockouts, oversells

    names: set[str] = set()
    for part in parts:
        names |= set(part.channels) | set(part.current) | set(part.draft) | set(part.unexposed)
    rows = []
    for name in sorted(names):
        c, d = total("current", name), total("draft", name)
        rows.append(
            ChannelOutcome(
                channel=name,
                orders_refused=len(d[0]) - len(c[0]),
                units_refused=d[1] - c[1],
                stockouts_avoided=c[2] - d[2],
                oversells_avoided=c[3] - d[3],
                units_unexposed=sum(part.unexposed.get(name, 0) for part in parts),
            )
        )
    return BacktestReport(days=days, entries=sum(part.entries for part in parts), channels=rows)
