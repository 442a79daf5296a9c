"""Available-to-sell arithmetic and its explanation. Pure functions, no I/O.

The model (docs/ats-model.md has worked examples):

    location ATS  = max(0, on_hand - reserved - allocated - unsellable - safety stock)
    protections   : filled in channel-priority order from the location ATS; the rest is
                    the shared pool (so protections never promise more than is there)
    channel raw   = the channel's own filled protection + shared pool
    buffer        = buffer units + ceil(buffer percent x location ATS)   (never exposes more)
    after buffer  = max(0, channel raw - buffer)
    channel ATS   = 0 if after buffer < threshold else after buffer

The reservation script (ledger/scripts/reserve.lua) does the same arithmetic in Lua on
integer basis points; tests/ledger/test_ats_agreement.py proves the two agree.
"""

from __future__ import annotations

from typing import Iterable

import msgspec

from availability.domain.rules import AppliedRule, Protection, RuleBook, RuleTerms

BASIS_POINTS = 10_000


class Buckets(msgspec.Struct, array_like=True):
    """Stock buckets of one (SKU, location). on_hand may go negative (sold before counted)."""

    on_hand: int = 0
    reserved: int = 0
    allocated: int = 0
    unsellable: int = 0
    incoming: int = 0


def basis_points(percent: float) -> int:
    return int(round(percent * 100))


def percent_of(bp: int, units: int) -> int:
    """floor(bp/10000 x units) in integers, as the Lua side computes it."""
    return (bp * units) // BASIS_POINTS


def percent_of_ceil(bp: int, units: int) -> int:
    return -((-bp * units) // BASIS_POINTS)


def location_ats(buckets: Buckets, safety_units: int) -> int:
    return max(
        0, buckets.on_hand - buckets.reserved - buckets.allocated - buckets.unsellable - safety_units
    )


def fill_protections(loc_ats: int, protections: Iterable[Protection]) -> tuple[dict[str, int], int]:
    """Fill ring-fences in priority order; returns (filled units per channel, shared pool)."""
    remaining = loc_ats
    filled: dict[str, int] = {}
    for p in protections:
        wanted = p.units if p.units else percent_of(basis_points(p.percent), loc_ats)
        got = min(wanted, remaining)
        filled[p.channel] = got
        remaining -= got
    return filled, remaining


def channel_ats(loc_ats: int, own_protected: int, shared_pool: int, terms: RuleTerms) -> int:
    raw = own_protected + shared_pool
    buffer = terms.buffer_units + percent_of_ceil(basis_points(terms.buffer_percent), loc_ats)
    after_buffer = max(0, raw - buffer)
    return 0 if after_buffer < terms.threshold_units else after_buffer


class LocationAvailability(msgspec.Struct, frozen=True):
    """One location's line of a channel's answer, with every term (for explain)."""

    location: str
    ats: int
    on_hand: int
    reserved: int
    allocated: int
    unsellable: int
    incoming: int
    safety_stock: int
    location_ats: int
    protected: int
    shared_pool: int
    buffer: int
    threshold: int
    below_threshold: bool


class ChannelAvailability(msgspec.Struct, frozen=True):
    sku: str
    channel: str
    ats: int
    locations: list[LocationAvailability]
    rules_version: int


def location_availability(
    book: RuleBook, sku: str, location: str, channel: str, buckets: Buckets
) -> LocationAvailability:
    terms = book.terms(sku, location, channel)
    loc_ats = location_ats(buckets, terms.safety_units)
    filled, pool = fill_protections(loc_ats, book.protections(sku, location))
    own = filled.get(channel, 0)
    buffer = terms.buffer_units + percent_of_ceil(basis_points(terms.buffer_percent), loc_ats)
    after_buffer = max(0, own + pool - buffer)
    below = after_buffer < terms.threshold_units
    return LocationAvailability(
        location=location,
        ats=0 if below else after_buffer,
        on_hand=buckets.on_hand,
        reserved=buckets.reserved,
        allocated=buckets.allocated,
        unsellable=buckets.unsellable,
        incoming=buckets.incoming,
        safety_stock=terms.safety_units,
        location_ats=loc_ats,
        protected=own,
        shared_pool=pool,
        buffer=buffer,
        threshold=terms.threshold_units,
        below_threshold=below,
    )


EMPTY = Buckets()


def channel_availability(
    book: RuleBook,
    sku: str,
    channel: str,
    stock: dict[str, Buckets],
    locations: Iterable[str] | None = None,
) -> ChannelAvailability:
    """A channel's total for one SKU and its per-location lines in location priority order.

    `locations` narrows the answer (one store, or a store group for POS); locations the
    channel does not sell from are left out, because the channel cannot offer them.
    """
    sellable = book.channel_locations(channel)
    if book.sells_everywhere(channel):
        unlisted = sorted(code for code in stock if code not in book.locations)
        sellable = sellable + tuple(unlisted) if unlisted else sellable
    if locations is not None:
        wanted = set(locations)
        sellable = tuple(code for code in sellable if code in wanted)
    lines = [location_availability(book, sku, code, channel, stock.get(code, EMPTY)) for code in sellable]
    return ChannelAvailability(sku, channel, sum(line.ats for line in lines), lines, book.version)


# --- explain ------------------------------------------------------------------------------


class ExplainTerm(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    value: int
    rule: AppliedRule | None = None


class LocationExplanation(msgspec.Struct, frozen=True):
    location: str
    ats: int
    text: str
    terms: list[ExplainTerm]


class Explanation(msgspec.Struct, frozen=True):
    sku: str
    channel: str
    ats: int
    rules_version: int
    locations: list[LocationExplanation]
    text: str


def explain(
    book: RuleBook, sku: str, channel: str, stock: dict[str, Buckets], locations: Iterable[str] | None = None
) -> Explanation:
    """Every ATS answer as its arithmetic, naming the rule and version behind each term."""
    answer = channel_availability(book, sku, channel, stock, locations)
    explained = [_explain_location(book, sku, channel, line) for line in answer.locations]
    total = " + ".join(f"{e.location} {e.ats}" for e in explained) or "no location"
    text = f"{channel} ATS for {sku} = {total} = {answer.ats} (rules v{book.version})"
    return Explanation(sku, channel, answer.ats, book.version, explained, text)


def _explain_location(book: RuleBook, sku: str, channel: str, line: LocationAvailability) -> LocationExplanation:
    terms = book.terms(sku, line.location, channel)
    protections = book.protections(sku, line.location)
    own_rule = next((p.rule for p in protections if p.channel == channel), None)
    others = [p for p in protections if p.channel != channel]
    fenced_by_others = line.location_ats - line.protected - line.shared_pool
    parts = [f"on_hand {line.on_hand}"]
    for name in ("reserved", "allocated", "unsellable"):
        if getattr(line, name):
            parts.append(f"- {name} {getattr(line, name)}")
    if line.safety_stock:
        parts.append(f"- safety {line.safety_stock}{_rule_ref(terms.safety_rule)}")
    head = " ".join(parts) + f" = {line.location_ats}"
    if line.location_ats == 0 and line.on_hand - line.reserved - line.allocated - line.unsellable - line.safety_stock < 0:
        head += " (floored at 0)"
    channel_part = f"{channel}: shared pool {line.shared_pool}"
    if fenced_by_others:
        names = ", ".join(p.channel for p in others)
        channel_part += f" (after {fenced_by_others} ring-fenced for {names})"
    channel_part += f" + protected {line.protected}{_rule_ref(own_rule)}"
    if line.buffer:
        channel_part += f" - buffer {line.buffer}{_rule_ref(terms.buffer_rule)}"
    channel_part += f" = {line.ats if not line.below_threshold else max(0, line.protected + line.shared_pool - line.buffer)}"
    if line.below_threshold:
        channel_part += f", below threshold {line.threshold}{_rule_ref(terms.threshold_rule)} so 0"
    explained_terms = [
        ExplainTerm("on_hand", line.on_hand),
        ExplainTerm("reserved", line.reserved),
        ExplainTerm("allocated", line.allocated),
        ExplainTerm("unsellable", line.unsellable),
        ExplainTerm("safety_stock", line.safety_stock, terms.safety_rule),
        ExplainTerm("location_ats", line.location_ats),
        ExplainTerm("ring_fenced_by_other_channels", fenced_by_others, None),
        ExplainTerm("protected", line.protected, own_rule),
        ExplainTerm("shared_pool", line.shared_pool),
        ExplainTerm("buffer", line.buffer, terms.buffer_rule),
        ExplainTerm("threshold", line.threshold, terms.threshold_rule),
        ExplainTerm("ats", line.ats),
    ]
    return LocationExplanation(line.location, line.ats, f"{line.location}: {head}; {channel_part}", explained_terms)


def _rule_ref(rule: AppliedRule | None) -> str:
    return f" [rule {rule.id} v{rule.version}: {rule.scope}]" if rule else ""
