"""Master data (locations, channels) and availability rules, and how a rule is chosen.

A rule sets one *kind* of term (safety stock, a channel's protection, buffer or
threshold) for whatever its *selectors* match. A selector left empty matches
anything. The most specific matching rule wins; specificity is the sum of the
weights of the selectors a rule sets:

    sku 32 > category 16 > location 8 > location_group 4 > channel 2

so "SKU X anywhere" beats "everything at STORE-12", and "SKU X at STORE-12" beats
both. Ties (same weight, e.g. two location groups that both contain the location)
go to the higher `priority`, then to the most recently changed rule (higher
`version`, then higher `id`). This is documented in docs/ats-model.md.

Everything here is pure: the rule store loads rows and builds a `RuleBook`, which
the ATS arithmetic reads.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal, Mapping

import msgspec

from availability.domain.errors import InvalidRule

RuleKind = Literal["safety_stock", "protection", "buffer", "threshold"]
RULE_KINDS: tuple[str, ...] = RuleKind.__args__  # type: ignore[attr-defined]

#: kinds that are about one channel and need the `channel` selector
CHANNEL_KINDS = frozenset({"protection", "buffer", "threshold"})

LocationType = Literal["warehouse", "store", "3pl", "dropship"]

SELECTOR_WEIGHTS = {"sku": 32, "category": 16, "location": 8, "location_group": 4, "channel": 2}

DEFAULT_CHANNEL = "online"


class Location(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    name: str = ""
    type: LocationType = "warehouse"
    #: lower is tried first by reservations without a location, and listed first
    priority: int = 100
    ships: bool = True
    pickup: bool = False
    sells_in_store: bool = False
    groups: tuple[str, ...] = ()
    #: inactive locations are kept for history but no default channel sells from them
    active: bool = True


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    #: lower fills its ring-fence first when stock is scarce
    priority: int = 100
    #: location codes this channel may sell from; None = every location
    locations: tuple[str, ...] | None = None
    #: location groups this channel may sell from (added to `locations`)
    location_groups: tuple[str, ...] = ()
    description: str = ""


class Rule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One versioned rule. `units` and `percent` are read according to `kind`:

    - safety_stock: `units` held back at the location, for every channel
    - protection:   the channel ring-fences `units` or `percent` of location ATS
    - buffer:       the channel hides `units` plus `percent` of location ATS
    - threshold:    the channel shows 0 when its ATS is below `units`
    """

    id: int
    kind: RuleKind
    units: int = 0
    percent: float = 0.0
    sku: str | None = None
    category: str | None = None
    location: str | None = None
    location_group: str | None = None
    channel: str | None = None
    priority: int = 0
    version: int = 1
    note: str = ""

    @property
    def specificity(self) -> int:
        return sum(w for sel, w in SELECTOR_WEIGHTS.items() if getattr(self, sel) is not None)

    def scope_label(self) -> str:
        parts = [f"{sel}={getattr(self, sel)}" for sel in SELECTOR_WEIGHTS if getattr(self, sel) is not None]
        return ", ".join(parts) if parts else "global"


def check_rule(rule: Rule) -> Rule:
    """Reject rules that cannot mean anything. Raises `InvalidRule`."""
    if rule.kind not in RULE_KINDS:
        raise InvalidRule(f"unknown rule kind {rule.kind!r}")
    if rule.units < 0:
        raise InvalidRule("units must not be negative")
    if not 0 <= rule.percent <= 100:
        raise InvalidRule("percent must be between 0 and 100")
    if rule.kind in CHANNEL_KINDS and rule.channel is None:
        raise InvalidRule(f"a {rule.kind} rule applies to one channel: set `channel`")
    if rule.kind == "safety_stock" and rule.channel is not None:
        raise InvalidRule("safety stock is held back for every channel: leave `channel` empty")
    if rule.kind in ("safety_stock", "threshold") and rule.percent:
        raise InvalidRule(f"a {rule.kind} rule is in units only")
    if rule.kind == "protection" and rule.units and rule.percent:
        raise InvalidRule("a protection is either units or percent, not both")
    return rule


RULE_FIELDS: tuple[str, ...] = Rule.__struct_fields__


def rule_from_fields(fields: Any, *, rule_id: int, version: int, base: Rule | None = None, where: str = "") -> Rule:
    """Validate a dict of rule fields (from JSON) over an optional current state.

    Unknown fields are rejected rather than ignored: a misspelt selector
    ("skus") would otherwise widen a rule to every SKU. An empty selector string
    means "no selector", which is what a cleared form field sends.
    """
    if not isinstance(fields, Mapping):
        raise InvalidRule(f"{where}a rule is an object of fields, not {type(fields).__name__}")
    unknown = sorted(str(k) for k in fields if k not in RULE_FIELDS)
    if unknown:
        raise InvalidRule(f"{where}unknown rule field(s) {', '.join(unknown)}; fields are {', '.join(RULE_FIELDS)}")
    data: dict[str, Any] = {f: getattr(base, f) for f in RULE_FIELDS} if base is not None else {}
    for key, value in fields.items():
        if key in ("id", "version"):
            continue  # assigned by the store
        if key in SELECTOR_WEIGHTS and isinstance(value, str) and not value.strip():
            value = None
        data[key] = value
    data["id"] = rule_id
    data["version"] = version
    kind = data.get("kind")
    if kind is None:
        raise InvalidRule(f"{where}`kind` is required: one of {', '.join(RULE_KINDS)}")
    if not isinstance(kind, str) or kind not in RULE_KINDS:
        raise InvalidRule(f"{where}unknown rule kind {kind!r}: one of {', '.join(RULE_KINDS)}")
    try:
        rule = msgspec.convert(data, Rule)
    except msgspec.ValidationError as exc:
        raise InvalidRule(f"{where}{exc}") from None
    try:
        return check_rule(rule)
    except InvalidRule as exc:
        if where:
            raise InvalidRule(f"{where}{exc.detail}") from None
        raise


class AppliedRule(msgspec.Struct, frozen=True):
    """The rule behind one term of an explanation: enough to find it in the store."""

    id: int
    version: int
    scope: str


class RuleTerms(msgspec.Struct, frozen=True):
    """The terms that apply to one (SKU, location, channel), resolved from the rules."""

    safety_units: int = 0
    buffer_units: int = 0
    buffer_percent: float = 0.0
    threshold_units: int = 0
    safety_rule: AppliedRule | None = None
    buffer_rule: AppliedRule | None = None
    threshold_rule: AppliedRule | None = None


class Protection(msgspec.Struct, frozen=True):
    """A channel's ring-fence at one location, in fill order (channel priority)."""

    channel: str
    priority: int
    units: int
    percent: float
    rule: AppliedRule


class RuleBook:
    """Compiled, read-only view of master data and rules at one store version.

    Built once per rule-store version and shared by every request; lookups are
    memoised because a storefront asks the same (SKU, location, channel) often.
    """

    def __init__(
        self,
        *,
        version: int,
        locations: list[Location],
        channels: list[Channel],
        rules: list[Rule],
        sku_categories: dict[str, str] | None = None,
    ) -> None:
        self.version = version
        self.locations: dict[str, Location] = {loc.code: loc for loc in locations}
        if not channels:
            # A fresh install sells online from everywhere, so it answers before anyone configures it.
            channels = [Channel(name=DEFAULT_CHANNEL, priority=100, description="default channel")]
        self.channels: dict[str, Channel] = {ch.name: ch for ch in channels}
        self.rules = rules
        self.sku_categories = dict(sku_categories or {})
        # kind -> rules ordered best-first, split so SKU rules are only scanned for their SKU
        self._by_kind_sku: dict[str, dict[str, list[Rule]]] = {k: {} for k in RULE_KINDS}
        self._by_kind_general: dict[str, list[Rule]] = {k: [] for k in RULE_KINDS}
        for rule in sorted(rules, key=_rule_rank):
            if rule.sku is not None:
                self._by_kind_sku[rule.kind].setdefault(rule.sku, []).append(rule)
            else:
                self._by_kind_general[rule.kind].append(rule)
        self._channel_locations: dict[str, tuple[str, ...]] = {
            name: self._resolve_channel_locations(ch) for name, ch in self.channels.items()
        }
        # Memoised per instance (the book is replaced, not mutated, when rules change).
        # A SKU without SKU rules gets the same terms as every SKU of its category, so
        # those are cached by category: 1,000,000 (SKU, location) pairs share a few
        # hundred entries instead of thrashing a per-SKU cache.
        self._skus_with_rules = frozenset(sku for by_sku in self._by_kind_sku.values() for sku in by_sku)
        self._terms_cached = lru_cache(maxsize=200_000)(self._terms)
        self._protections_cached = lru_cache(maxsize=200_000)(self._protections)

    # --- master data -----------------------------------------------------------------------

    def channel_locations(self, channel: str) -> tuple[str, ...]:
        """Locations a channel sells from, in location priority order."""
        return self._channel_locations[channel]

    def sells_everywhere(self, channel: str) -> bool:
        """A channel configured without locations sells from every location, including ones
        the ledger has stock for but master data does not list yet (a fresh install)."""
        ch = self.channels[channel]
        return ch.locations is None and not ch.location_groups

    def channels_at(self, location: str) -> tuple[str, ...]:
        if location not in self.locations:
            return tuple(name for name in self.channels if self.sells_everywhere(name))
        return tuple(name for name, locs in self._channel_locations.items() if location in locs)

    def location_priority(self, code: str) -> int:
        loc = self.locations.get(code)
        return loc.priority if loc else 1_000_000

    def locations_in_group(self, group: str) -> tuple[str, ...]:
        return tuple(
            sorted(
                (c for c, loc in self.locations.items() if group in loc.groups),
                key=lambda c: (self.location_priority(c), c),
            )
        )

    def _resolve_channel_locations(self, channel: Channel) -> tuple[str, ...]:
        if channel.locations is None and not channel.location_groups:
            codes = [c for c, loc in self.locations.items() if loc.active]
        else:
            codes = list(channel.locations or ())
            for group in channel.location_groups:
                codes.extend(self.locations_in_group(group))
        seen: dict[str, None] = {}
        for code in codes:
            seen.setdefault(code, None)
        return tuple(sorted(seen, key=lambda c: (self.location_priority(c), c)))

    # --- rule resolution -------------------------------------------------------------------

    def terms(self, sku: str, location: str, channel: str) -> RuleTerms:
        """Safety stock, buffer and threshold for one (SKU, location, channel)."""
        key_sku = sku if sku in self._skus_with_rules else None
        return self._terms_cached(key_sku, self.sku_categories.get(sku), location, channel)

    def protections(self, sku: str, location: str) -> tuple[Protection, ...]:
        """Ring-fences at a location, in fill order: channel priority, then name."""
        key_sku = sku if sku in self._skus_with_rules else None
        return self._protections_cached(key_sku, self.sku_categories.get(sku), location)

    def best_rule(self, kind: str, sku: str, location: str, channel: str | None) -> Rule | None:
        return self._best(kind, sku, self.sku_categories.get(sku), location, channel)

    def _best(self, kind: str, sku: str | None, category: str | None, location: str, channel: str | None) -> Rule | None:
        loc = self.locations.get(location)
        groups = loc.groups if loc else ()
        # SKU rules outrank every non-SKU rule, so the first SKU match is the answer.
        sku_rules = self._by_kind_sku[kind].get(sku, ()) if sku is not None else ()
        for candidates in (sku_rules, self._by_kind_general[kind]):
            for rule in candidates:
                if _matches(rule, category, location, groups, channel):
                    return rule
        return None

    def _terms(self, sku: str | None, category: str | None, location: str, channel: str) -> RuleTerms:
        safety = self._best("safety_stock", sku, category, location, None)
        buffer = self._best("buffer", sku, category, location, channel)
        threshold = self._best("threshold", sku, category, location, channel)
        return RuleTerms(
            safety_units=safety.units if safety else 0,
            buffer_units=buffer.units if buffer else 0,
            buffer_percent=buffer.percent if buffer else 0.0,
            threshold_units=threshold.units if threshold else 0,
            safety_rule=_applied(safety),
            buffer_rule=_applied(buffer),
            threshold_rule=_applied(threshold),
        )

    def _protections(self, sku: str | None, category: str | None, location: str) -> tuple[Protection, ...]:
        found = []
        for name in self.channels_at(location):
            rule = self._best("protection", sku, category, location, name)
            if rule is not None and (rule.units or rule.percent):
                found.append(Protection(name, self.channels[name].priority, rule.units, rule.percent, _applied(rule)))
        found.sort(key=lambda p: (p.priority, p.channel))
        return tuple(found)


def _rule_rank(rule: Rule) -> tuple[int, int, int, int]:
    return (-rule.specificity, -rule.priority, -rule.version, -rule.id)


def _matches(rule: Rule, category: str | None, location: str, groups: tuple[str, ...], channel: str | None) -> bool:
    return (
        (rule.category is None or rule.category == category)
        and (rule.location is None or rule.location == location)
        and (rule.location_group is None or rule.location_group in groups)
        and (rule.channel is None or rule.channel == channel)
    )


def _applied(rule: Rule | None) -> AppliedRule | None:
    return AppliedRule(rule.id, rule.version, rule.scope_label()) if rule else None
