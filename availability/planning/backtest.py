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
from availability.ledger.journal import (
    F_AFTER,
    F_BEFORE,
    F_CHANNEL,
    F_EVENT,
    F_LOCATION,
    F_QUANTITY,
    F_SKU,
    F_STATUS,
    F_TYPE,
    ZERO_RAW,
    JournalEntry,
    RawEntry,
    encode_entry,
    raw_order,
)

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


class _Plan:
    """A compiled plan, with what the replay looks up beside it: each selling channel's
    index, and the (channel ATS, available) of every buckets value a replay that left the
    journal's buckets has met (4-tuples; `_PlanPair` keeps the journal's own values)."""

    __slots__ = ("plan", "channels", "index", "memo")

    #: buckets values kept per plan (a bound on memory over a long window)
    MEMO_SIZE = 250_000

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.channels = tuple(selling[0] for selling in plan[2])
        self.index = {channel: i for i, channel in enumerate(self.channels)}
        self.memo: dict[bytes | tuple[int, ...], tuple[tuple[int, ...], int]] = {}

    def at(self, key: bytes | tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """(channel ATS, available = on_hand - reserved - allocated - unsellable) of `key`."""
        found = self.memo.get(key)
        if found is None:
            b = tuple(map(int, key.split(b","))) if isinstance(key, bytes) else key
            if len(self.memo) >= self.MEMO_SIZE:
                self.memo.clear()
            found = self.memo[key] = (plan_ats(self.plan, b), b[0] - b[1] - b[2] - b[3])
        return found


class _PlanPair:
    """The two compiled plans of a (SKU or category, location), current and draft, with what
    both replays get from one buckets value while they hold the journal's own buckets: the
    raw bytes -> (current ATS, available, draft ATS, available, hidden), `hidden` being
    ((channel, units), ...) the current rules show and the draft does not. One dict hit per
    changed entry in the common case."""

    __slots__ = ("current", "draft", "memo")

    def __init__(self, current: _Plan, draft: _Plan) -> None:
        self.current, self.draft = current, draft
        self.memo: dict[bytes, tuple] = {}

    def at(self, raw: bytes) -> tuple:
        found = self.memo.get(raw)
        if found is None:
            b = tuple(map(int, raw.split(b",")))
            available = b[0] - b[1] - b[2] - b[3]
            c_ats, d_ats = plan_ats(self.current.plan, b), plan_ats(self.draft.plan, b)
            if len(self.memo) >= _Plan.MEMO_SIZE:
                self.memo.clear()
            found = self.memo[raw] = (c_ats, available, d_ats, available, _hidden(self.current.channels, c_ats, d_ats))
        return found


class _Pair:
    """Both replays' state at one (SKU, location).

    While neither replay has left anything out, both hold the journal's own buckets and
    `raw` is their raw bytes: an entry whose buckets equal them costs one comparison. Once
    a replay leaves an entry out, each keeps its own buckets and offset (`raw` None)."""

    __slots__ = ("raw", "plans", "c_plan", "d_plan", "c_ats", "d_ats", "c_av", "d_av", "hidden", "count",
                 "c_buckets", "d_buckets", "c_off", "d_off")

    def __init__(self, raw: bytes, plans: _PlanPair) -> None:
        self.raw: bytes | None = raw
        self.plans = plans
        self.c_plan, self.d_plan = plans.current, plans.draft
        #: hidden: ((channel, units), ...) the current rules show and the draft hides, after the last entry
        self.c_ats, self.c_av, self.d_ats, self.d_av, self.hidden = plans.at(raw)
        #: entries since `hidden` was last added to the totals (added when it changes, and at the end)
        self.count = 0
        self.c_buckets: tuple[int, ...] = ()
        self.d_buckets: tuple[int, ...] = ()
        self.c_off: tuple[int, ...] | None = None
        self.d_off: tuple[int, ...] | None = None


def _hidden(channels: tuple[str, ...], current: tuple[int, ...], draft: tuple[int, ...]) -> tuple:
    return tuple((channels[i], shown - draft[i]) for i, shown in enumerate(current) if shown > draft[i])


def _four(raw: bytes | None) -> tuple[int, ...]:
    """(on_hand, reserved, allocated, unsellable) of a raw buckets field."""
    return tuple(map(int, (raw or ZERO_RAW).split(b",")[:4]))


def _own_step(take: bool, buckets: tuple[int, ...], offset: tuple[int, ...] | None, plan: _Plan,
              before: tuple[int, ...], after: tuple[int, ...]):
    """One replay's step on its own buckets: (buckets, offset, new (ATS, available) or None
    when unchanged). Left out (`take` False), the entry's change goes into the offset."""
    if not take:
        return buckets, tuple(o + b - a for o, b, a in zip(offset or (0, 0, 0, 0), before, after)), None
    target = after if offset is None else tuple(x + o for x, o in zip(after, offset))
    if target == buckets:
        return buckets, offset, None
    return target, offset, plan.at(target)


class _Side:
    """What one replay (the current rules, or the draft) decides and counts."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.known = frozenset(name.encode() for name in book.channels)
        self._skus_with_rules = frozenset(r.sku for r in book.rules if r.sku is not None)
        self._plans: dict[tuple, _Plan] = {}
        #: SKU -> the orders this replay refused: their later entries for that SKU are left out
        self.refused: dict[bytes, set[bytes]] = {}
        self.orders: dict[str, set[str]] = defaultdict(set)
        self.units: dict[str, int] = defaultdict(int)
        self.stockouts: dict[str, int] = defaultdict(int)
        self.oversells: dict[str, int] = defaultdict(int)

    def shared(self, sku: str, location: str) -> tuple:
        """What a (SKU, location)'s plan depends on: SKUs without SKU rules share their
        category's terms, so a plan is compiled once per category and location."""
        return (sku if sku in self._skus_with_rules else None, self.book.sku_categories.get(sku), location)

    def plan(self, shared: tuple, sku: str, location: str) -> _Plan:
        found = self._plans.get(shared)
        if found is None:
            found = self._plans[shared] = _Plan(compile_plan(self.book, sku, location))
        return found

    def refuse(self, sku: bytes, order: bytes, channel: str, units: int) -> None:
        self.refused.setdefault(sku, set()).add(order)
        self.orders[channel].add(order.decode())
        self.units[channel] += units

    def moved(self, channels: tuple[str, ...], was: tuple[int, ...], was_available: int,
              now: tuple[tuple[int, ...], int], selling: bool, f: RawEntry) -> tuple[tuple[int, ...], int]:
        """This replay's buckets at a pair changed to `now` (ATS, available): a channel ATS
        going from above 0 to 0 is a stockout; a selling entry that pushed available further
        below 0, an oversell. Returns `now`."""
        ats, available = now
        if ats != was:
            self.stockout(channels, was, ats)
        if selling and available < min(0, was_available):
            self.oversell(f)
        return now

    def stockout(self, channels: tuple[str, ...], was: tuple[int, ...], now: tuple[int, ...]) -> None:
        for i, shown in enumerate(was):
            if shown > 0 and now[i] == 0:
                self.stockouts[channels[i]] += 1

    def oversell(self, f: RawEntry) -> None:
        self.oversells[f.get(F_CHANNEL, b"").decode() or UNATTRIBUTED] += 1

    def counted(self) -> dict[str, "Counted"]:
        names = set(self.orders) | set(self.units) | set(self.stockouts) | set(self.oversells)
        return {
            name: Counted(sorted(self.orders.get(name, ())), self.units.get(name, 0), self.stockouts.get(name, 0),
                          self.oversells.get(name, 0))
            for name in names
        }


_RESERVE, _HELD, _REFUSE = b"reserve", b"held", b"refuse"
_SELLING_RAW = frozenset(t.encode() for t in SELLING_TYPES)
_COMMA = ord(",")


class Backtest:
    """Both replays, current rules and draft, fed the same journal pages in order (the
    raw entries `journal.raw_pages` reads; `feed` takes typed ones)."""

    def __init__(self, current: RuleBook, draft: RuleBook, *, days: int) -> None:
        self.days = days
        self.current = _Side(current)
        self.draft = _Side(draft)
        self.entries = 0
        self.pairs: dict[tuple[bytes, bytes], _Pair] = {}
        self._plan_pairs: dict[tuple, _PlanPair] = {}
        #: locations met per SKU (a refused line without a location is judged over them)
        self.locations_of: dict[bytes, list[bytes]] = {}
        self.unexposed: dict[str, int] = defaultdict(int)
        #: a reservation's holds that a page ended in the middle of (finished by the next page)
        self._pending: list[RawEntry] = []

    def feed(self, entries: Iterable[JournalEntry]) -> None:
        """Typed entries (tests, tools): fed as the fields they were read from."""
        self.feed_raw([(b"", encode_entry(entry)) for entry in entries])

    def feed_raw(self, items: Sequence[tuple[bytes, RawEntry]]) -> None:
        """One page of raw entries, in the journal's order. The common entry (not a hold,
        not a refusal, at a pair where neither replay left anything out, of a SKU with no
        refused order) is replayed inline here: most of a window's cost is this loop."""
        self.entries += len(items)
        pending = self._pending
        pairs = self.pairs
        c_refused, d_refused = self.current.refused, self.draft.refused
        for _id, f in items:
            kind = f.get(F_TYPE)
            if kind == _RESERVE and f.get(F_STATUS) == _HELD:
                if pending and (f.get(F_EVENT) != pending[0].get(F_EVENT) or f.get(F_SKU) != pending[0].get(F_SKU)):
                    self._hold_group(pending)
                    pending = self._pending = []
                pending.append(f)
                continue
            if pending:
                self._hold_group(pending)
                pending = self._pending = []
            if kind == _REFUSE:
                self._judge_refusal(f)
                continue
            sku = f.get(F_SKU, b"")
            pair = pairs.get((sku, f.get(F_LOCATION, b"")))
            if pair is None:
                pair = self._new_pair(f)
            if pair.raw is None or (c_refused and sku in c_refused) or (d_refused and sku in d_refused):
                self._step_judged(pair, f, sku)
                continue
            after = f.get(F_AFTER) or f.get(F_BEFORE) or ZERO_RAW
            after = after[: after.rfind(_COMMA)]
            if after != pair.raw:
                self._moved(pair, after, kind in _SELLING_RAW, f)
            pair.count += 1

    def finish(self) -> BacktestReport:
        if self._pending:
            self._hold_group(self._pending)
            self._pending = []
        for pair in self.pairs.values():
            self._flush(pair)
        return self.report()

    # --- the replay's parts -------------------------------------------------------------------

    def _new_pair(self, f: RawEntry) -> _Pair:
        """The pair of the entry's (SKU, location), met now: its state at the window's start
        is this first entry's `before`."""
        sku, location = f.get(F_SKU, b""), f.get(F_LOCATION, b"")
        sku_s, location_s = sku.decode(), location.decode()
        shared = (self.current.shared(sku_s, location_s), self.draft.shared(sku_s, location_s))
        plans = self._plan_pairs.get(shared)
        if plans is None:
            plans = self._plan_pairs[shared] = _PlanPair(self.current.plan(shared[0], sku_s, location_s),
                                                         self.draft.plan(shared[1], sku_s, location_s))
        before = f.get(F_BEFORE) or ZERO_RAW
        pair = _Pair(before[: before.rfind(_COMMA)], plans)
        self.pairs[(sku, location)] = pair
        self.locations_of.setdefault(sku, []).append(location)
        return pair

    def _pair_of(self, f: RawEntry) -> _Pair:
        return self.pairs.get((f.get(F_SKU, b""), f.get(F_LOCATION, b""))) or self._new_pair(f)

    def _step_judged(self, pair: _Pair, f: RawEntry, sku: bytes) -> None:
        """An entry of a SKU some replay refused an order of: left out of the replays that
        refused its order."""
        order = raw_order(f)
        take_c = not (order and order in self.current.refused.get(sku, ()))
        take_d = not (order and order in self.draft.refused.get(sku, ()))
        self._step(pair, f, take_c, take_d)

    def _step(self, pair: _Pair, f: RawEntry, take_c: bool, take_d: bool) -> None:
        """Apply one entry to both replays (or leave it out of one: `take_*` False)."""
        if pair.raw is not None and take_c and take_d:
            after = f.get(F_AFTER) or f.get(F_BEFORE) or ZERO_RAW
            after = after[: after.rfind(_COMMA)]
            if after != pair.raw:
                self._moved(pair, after, f.get(F_TYPE) in _SELLING_RAW, f)
            pair.count += 1
            return
        if pair.raw is not None:
            # leaving the journal's buckets: from here each replay keeps its own, and an offset
            pair.c_buckets = pair.d_buckets = _four(pair.raw)
            pair.raw = None
        before = _four(f.get(F_BEFORE))
        after = _four(f.get(F_AFTER)) if f.get(F_AFTER) else before
        pair.c_buckets, pair.c_off, c_now = _own_step(take_c, pair.c_buckets, pair.c_off, pair.c_plan, before, after)
        pair.d_buckets, pair.d_off, d_now = _own_step(take_d, pair.d_buckets, pair.d_off, pair.d_plan, before, after)
        if c_now is not None or d_now is not None:
            self._land(pair, c_now, d_now, f.get(F_TYPE) in _SELLING_RAW, f)
        pair.count += 1

    def _moved(self, pair: _Pair, raw: bytes, selling: bool, f: RawEntry) -> None:
        """Both replays move to the journal's new buckets `raw` (the common change: one memo
        hit gives both replays' ATS and what the draft hides)."""
        c_ats, c_av, d_ats, d_av, hidden = pair.plans.at(raw)
        if c_ats != pair.c_ats:
            self.current.stockout(pair.c_plan.channels, pair.c_ats, c_ats)
        if d_ats != pair.d_ats:
            self.draft.stockout(pair.d_plan.channels, pair.d_ats, d_ats)
        if selling:
            if c_av < min(0, pair.c_av):
                self.current.oversell(f)
            if d_av < min(0, pair.d_av):
                self.draft.oversell(f)
        if hidden != pair.hidden:
            self._flush(pair)
            pair.hidden = hidden
        pair.c_ats, pair.c_av, pair.d_ats, pair.d_av, pair.raw = c_ats, c_av, d_ats, d_av, raw

    def _land(self, pair: _Pair, c_now, d_now, selling: bool, f: RawEntry) -> None:
        """The replays whose buckets changed (their new (ATS, available); None: unchanged)
        count stockouts and oversells, and what the draft hides is brought up to date."""
        c_ats, d_ats = pair.c_ats, pair.d_ats
        if c_now is not None:
            pair.c_ats, pair.c_av = self.current.moved(pair.c_plan.channels, c_ats, pair.c_av, c_now, selling, f)
        if d_now is not None:
            pair.d_ats, pair.d_av = self.draft.moved(pair.d_plan.channels, d_ats, pair.d_av, d_now, selling, f)
        if pair.c_ats != c_ats or pair.d_ats != d_ats:
            self._flush(pair)
            pair.hidden = _hidden(pair.c_plan.channels, pair.c_ats, pair.d_ats)

    def _flush(self, pair: _Pair) -> None:
        if pair.count and pair.hidden:
            for channel, units in pair.hidden:
                self.unexposed[channel] += units * pair.count
        pair.count = 0

    def _hold_group(self, group: list[RawEntry]) -> None:
        """One reservation's holds of one SKU (one entry per location): each replay takes
        them all or refuses the order, then they are applied (or left out)."""
        pairs = [self._pair_of(f) for f in group]
        take_c = self._takes(self.current, group, pairs, current=True)
        take_d = self._takes(self.draft, group, pairs, current=False)
        for f, pair in zip(group, pairs):
            self._step(pair, f, take_c, take_d)

    @staticmethod
    def _takes(side: _Side, group: list[RawEntry], pairs: list[_Pair], *, current: bool) -> bool:
        """True when the replay's channel ATS covers the units held at each location, just
        before the holds; else the order is refused (counted here)."""
        first = group[0]
        sku, order = first.get(F_SKU, b""), raw_order(first)
        if order in side.refused.get(sku, ()):
            return False
        channel = first.get(F_CHANNEL, b"")
        if channel not in side.known:
            return True  # not a channel these rules know: nothing to judge it by
        name = channel.decode()
        for f, pair in zip(group, pairs):
            plan, ats = (pair.c_plan, pair.c_ats) if current else (pair.d_plan, pair.d_ats)
            index = plan.index.get(name)
            if index is not None and ats[index] < int(f.get(F_QUANTITY, b"0")):
                side.refuse(sku, order, name, sum(int(g.get(F_QUANTITY, b"0")) for g in group))
                return False
        return True

    def _judge_refusal(self, f: RawEntry) -> None:
        """A line the ledger refused: counted by each replay that refuses it too."""
        channel = f.get(F_CHANNEL, b"")
        sku, location = f.get(F_SKU, b""), f.get(F_LOCATION, b"")
        quantity = int(f.get(F_QUANTITY, b"0"))
        locations = (location,) if location else self.locations_of.get(sku, ())
        for side, current in ((self.current, True), (self.draft, False)):
            if channel not in side.known:
                continue
            name = channel.decode()
            available = 0
            for where in locations:
                pair = self.pairs.get((sku, where))
                if pair is None:
                    continue  # not met yet in the window: its stock then is unknown here
                plan, ats = (pair.c_plan, pair.c_ats) if current else (pair.d_plan, pair.d_ats)
                index = plan.index.get(name)
                if index is not None:
                    available += ats[index]
            if available < quantity:
                side.orders[name].add(raw_order(f).decode())
                side.units[name] += quantity

    def left_out(self) -> int:
        """(SKU, location) pairs whose current replay differs from the journal's buckets."""
        return sum(1 for pair in self.pairs.values() if pair.c_off is not None and any(pair.c_off))

    def partial(self) -> "BacktestPartial":
        """What this backtest counted, mergeable with other shards' (`merge`)."""
        return BacktestPartial(
            entries=self.entries,
            channels=sorted(self.current.book.channels),
            current=self.current.counted(),
            draft=self.draft.counted(),
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
