"""What a proposed rule change would do, computed against the live ledger.

A candidate `RuleBook` is built from the current one with the proposed creates, updates
and deletes applied (nothing is written). Then every (SKU, location, channel) ATS in scope
is computed under both books:

- scope: the SKUs the change can affect (`affected_skus`: SKU- and category-scoped rules
  only touch their SKUs, which are read directly); anything wider SCANs the ledger's stock
  keys in batches, one pipelined read per batch, up to `limit` SKUs;
- report: how many values change, units exposed per channel before and after, SKUs whose
  channel total would drop to zero, values that cross their channel's threshold (low-stock
  level) either way, and a sample of changed rows.

Both books are fresh copies, so a large preview does not churn the live book's memoised
lookups that every storefront request relies on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Sequence

from availability.api.schemas import (
    ChangedValue,
    ChannelExposure,
    PreviewReport,
    ProposedChange,
    RuleView,
    SkuToZero,
    ThresholdCrossed,
)
from availability.domain.ats import Buckets, LocationAvailability, location_availability
from availability.domain.errors import (
    InvalidRule,
    UnknownChannel,
    UnknownLocation,
    UnknownRule,
)
from availability.domain.rules import Rule, RuleBook, rule_from_fields
from availability.ledger.ledger import Ledger
from availability.rules.dirtying import affected_skus

SCAN_BATCH = 1000
TO_ZERO_LISTED = 1000
#: SKUs compared between yields to the event loop (about 5 ms of work), so a large preview
#: does not hold up the lookups served by the same process
YIELD_EVERY = 100


def copy_book(book: RuleBook, rules: Sequence[Rule] | None = None) -> RuleBook:
    return RuleBook(
        version=book.version,
        locations=list(book.locations.values()),
        channels=list(book.channels.values()),
        rules=list(book.rules if rules is None else rules),
        sku_categories=book.sku_categories,
    )


def candidate_book(book: RuleBook, changes: Sequence[ProposedChange]) -> tuple[RuleBook, list[Rule], list[int]]:
    """The book with `changes` applied, the rules as proposed, and the ids deleted.

    New rules get negative ids (-1, -2, ...) so they never collide with stored ones.
    Raises the store's errors for the same mistakes (unknown rule, location or channel,
    a rule that cannot mean anything).
    """
    rules: dict[int, Rule] = {r.id: r for r in book.rules}
    proposed: list[Rule] = []
    deleted: list[int] = []
    next_new_id = -1
    for index, change in enumerate(changes):
        where = f"changes[{index}]: "
        if change.op == "create":
            if change.rule is None:
                raise InvalidRule(f"{where}a create needs `rule`")
            rule = rule_from_fields(change.rule.rule_fields(), rule_id=next_new_id, version=1, where=where)
            next_new_id -= 1
        else:
            if change.id is None:
                raise InvalidRule(f"{where}an {change.op} needs `id`")
            current = rules.get(change.id)
            if current is None:
                raise UnknownRule(f"{where}no live rule {change.id}", rule_id=change.id)
            if change.op == "delete":
                del rules[change.id]
                deleted.append(change.id)
                continue
            if change.rule is None:
                raise InvalidRule(f"{where}an update needs `rule` with the fields to change")
            rule = rule_from_fields(
                change.rule.rule_fields(), rule_id=current.id, version=current.version + 1, base=current, where=where
            )
        _check_refs(book, rule, where)
        rules[rule.id] = rule
        proposed.append(rule)
    return copy_book(book, list(rules.values())), proposed, deleted


def _check_refs(book: RuleBook, rule: Rule, where: str) -> None:
    if rule.location is not None and rule.location not in book.locations:
        raise UnknownLocation(f"{where}unknown location {rule.location!r}", location=rule.location)
    if rule.channel is not None and rule.channel not in book.channels:
        raise UnknownChannel(f"{where}unknown channel {rule.channel!r}", channel=rule.channel)


class _Comparison:
    """Running totals of before/after ATS over the SKUs read so far."""

    def __init__(self, before: RuleBook, after: RuleBook, sample: int) -> None:
        self.before = before
        self.after = after
        self.sample_size = sample
        self.skus = 0
        self.pairs = 0
        self.compared = 0
        self.changed = 0
        self.units_before: dict[str, int] = defaultdict(int)
        self.units_after: dict[str, int] = defaultdict(int)
        self.to_zero: list[SkuToZero] = []
        self.to_zero_count = 0
        self.sample: list[ChangedValue] = []
        self.crossed: list[ThresholdCrossed] = []
        self.crossed_count = 0
        self._channels_at: dict[str, tuple[str, ...]] = {}
        for name in before.channels:
            self.units_before[name] += 0
            self.units_after[name] += 0

    def channels_at(self, location: str) -> tuple[str, ...]:
        # A preview changes rules only, never master data: both books sell alike.
        found = self._channels_at.get(location)
        if found is None:
            found = self._channels_at[location] = self.before.channels_at(location)
        return found

    def add(self, sku: str, stock: dict[str, Buckets]) -> None:
        self.skus += 1
        sku_before: dict[str, int] = defaultdict(int)
        sku_after: dict[str, int] = defaultdict(int)
        for location, buckets in stock.items():
            self.pairs += 1
            for channel in self.channels_at(location):
                line_before = location_availability(self.before, sku, location, channel, buckets)
                line_after = location_availability(self.after, sku, location, channel, buckets)
                was, will = line_before.ats, line_after.ats
                self.compared += 1
                if line_before.below_threshold != line_after.below_threshold:
                    self._crossed(sku, location, channel, line_before, line_after)
                sku_before[channel] += was
                sku_after[channel] += will
                if was != will:
                    self.changed += 1
                    if len(self.sample) < self.sample_size:
                        self.sample.append(
                            ChangedValue(sku=sku, location=location, channel=channel, before=was, after=will)
                        )
        for channel, was in sku_before.items():
            self.units_before[channel] += was
            self.units_after[channel] += sku_after[channel]
            if was > 0 and sku_after[channel] == 0:
                self.to_zero_count += 1
                if len(self.to_zero) < TO_ZERO_LISTED:
                    self.to_zero.append(SkuToZero(sku=sku, channel=channel, before=was))


    def _crossed(self, sku: str, location: str, channel: str, before: LocationAvailability,
                 after: LocationAvailability) -> None:
        self.crossed_count += 1
        if len(self.crossed) < TO_ZERO_LISTED:
            self.crossed.append(
                ThresholdCrossed(
                    sku=sku, location=location, channel=channel,
                    direction="below" if after.below_threshold else "above",
                    units_before=_after_buffer(before), units_after=_after_buffer(after),
                    threshold_before=before.threshold, threshold_after=after.threshold,
                )
            )


def _after_buffer(line: LocationAvailability) -> int:
    """The value a threshold is compared with: own protection + shared pool - buffer, floored."""
    return max(0, line.protected + line.shared_pool - line.buffer)


async def preview(
    ledger: Ledger, book: RuleBook, changes: Sequence[ProposedChange], *, limit: int, sample: int = 20
) -> PreviewReport:
    before = copy_book(book)
    after, proposed, deleted = candidate_book(book, changes)
    comparison = _Comparison(before, after, sample)
    scoped = affected_skus(before, after)
    if scoped is not None:
        skus = sorted(scoped)
        complete = len(skus) <= limit
        skus = skus[:limit]
        for start in range(0, len(skus), SCAN_BATCH):
            await _compare(comparison, await ledger.stock_many(skus[start : start + SCAN_BATCH]))
    else:
        complete = await _scan_all(ledger, comparison, limit)
    return PreviewReport(
        rules_version=book.version,
        scope="all" if scoped is None else "skus",
        complete=complete,
        skus_scanned=comparison.skus,
        pairs_scanned=comparison.pairs,
        values_compared=comparison.compared,
        values_changed=comparison.changed,
        channels=[
            ChannelExposure(
                channel=name,
                units_before=was,
                units_after=comparison.units_after[name],
                delta=comparison.units_after[name] - was,
            )
            for name, was in sorted(comparison.units_before.items())
        ],
        skus_to_zero_count=comparison.to_zero_count,
        skus_to_zero=comparison.to_zero,
        sample=comparison.sample,
        proposed=[RuleView.of(rule) for rule in proposed],
        deleted=deleted,
        thresholds_crossed_count=comparison.crossed_count,
        thresholds_crossed=comparison.crossed,
    )


async def _compare(comparison: _Comparison, stock: dict[str, dict[str, Buckets]]) -> None:
    for n, (sku, buckets) in enumerate(stock.items(), 1):
        comparison.add(sku, buckets)
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _scan_all(ledger: Ledger, comparison: _Comparison, limit: int) -> bool:
    """Every stock key (up to `limit` SKUs; on a cluster, every primary's); True if the scan
    reached the end."""
    seen: set[str] = set()
    full = False
    async for batch in ledger.stock_skus(SCAN_BATCH):
        fresh = [sku for sku in dict.fromkeys(batch) if sku not in seen]
        if full:
            # Exactly at the limit: complete only if nothing is left to scan.
            if fresh:
                return False
            continue
        seen.update(fresh)
        room = limit - comparison.skus
        truncated = len(fresh) > room
        fresh = fresh[:room]
        if fresh:
            await _compare(comparison, await ledger.stock_many(fresh))
        if truncated:
            return False
        full = comparison.skus >= limit
    return True
