"""The SKU explorer's data: finding SKUs, and an ATS answer laid out as arithmetic to read.

The arithmetic is the domain's own explanation (`availability.domain.ats.explain`), so the
console shows exactly what the API answers; this module only arranges its terms into
the two lines a planner reads ("on_hand 12 − reserved 3 − safety 2 = 7" and "shared pool
5 + protected 0 − buffer 1 = 4"), each term with the rule and version behind it.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from availability.domain.ats import Buckets, ExplainTerm, explain
from availability.domain.rules import RuleBook
from availability.ledger.ledger import Ledger

SCAN_BATCH = 2000


class SkuIndex:
    """The SKUs the ledger holds, sorted, refreshed by one SCAN (of every primary, on a
    cluster) at most every `ttl` seconds.

    A planner searching "TEE-BL" should not cost a ledger-wide SCAN per keystroke: 10,000
    SKUs are a few hundred kB in memory, and a SKU that appeared in the last half minute can
    still be opened by its exact code (the SKU page reads the ledger directly).
    """

    def __init__(self, ledger: Ledger, ttl: float = 30.0) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self._skus: list[str] = []
        self._upper: list[str] = []
        self._loaded_at = float("-inf")

    async def skus(self) -> list[str]:
        if time.monotonic() - self._loaded_at > self.ttl:
            await self._reload()
        return self._skus

    async def search(self, query: str, limit: int = 50) -> tuple[list[str], int]:
        """SKUs starting with `query` first, then containing it (case-insensitive); and how many matched."""
        skus = await self.skus()
        needle = query.strip().upper()
        if not needle:
            return skus[:limit], len(skus)
        start = bisect.bisect_left(self._upper, needle)
        prefixed = []
        for i in range(start, len(self._upper)):
            if not self._upper[i].startswith(needle):
                break
            prefixed.append(skus[i])
        prefix_set = set(prefixed)
        inner = [s for s, u in zip(skus, self._upper) if needle in u and s not in prefix_set]
        found = prefixed + inner
        return found[:limit], len(found)

    async def _reload(self) -> None:
        # Through the ledger's walk of its stock keys, not a bare SCAN cursor: on Redis
        # Cluster a cursor answers for one node, and the SKUs of the others' slots were missing.
        found: set[str] = set()
        async for batch in self.ledger.stock_skus(SCAN_BATCH):
            found.update(batch)
        # Sorted by the upper-cased code so a prefix search is one bisect.
        pairs = sorted((s.upper(), s) for s in found)
        self._upper = [u for u, _ in pairs]
        self._skus = [s for _, s in pairs]
        self._loaded_at = time.monotonic()


@dataclass
class Term:
    """One term of the arithmetic: its sign, name, value, and the rule behind it (if any)."""

    sign: str
    name: str
    value: int
    rule_id: int | None = None
    rule_version: int | None = None
    rule_scope: str = ""


@dataclass
class LocationLine:
    location: str
    ats: int
    stock_terms: list[Term]
    location_ats: int
    floored: bool
    channel_terms: list[Term]
    before_threshold: int
    threshold: Term
    below_threshold: bool
    incoming: int
    text: str


@dataclass
class ChannelView:
    channel: str
    ats: int
    text: str
    lines: list[LocationLine] = field(default_factory=list)


def _term(sign: str, name: str, t: ExplainTerm) -> Term:
    rule = t.rule
    return Term(sign, name, t.value, rule.id if rule else None, rule.version if rule else None, rule.scope if rule else "")


def sku_views(book: RuleBook, sku: str, stock: dict[str, Buckets], channels: list[str]) -> list[ChannelView]:
    """Per channel, per location: the ATS as arithmetic, from the domain's explanation."""
    views = []
    for channel in channels:
        explanation = explain(book, sku, channel, stock)
        view = ChannelView(channel, explanation.ats, explanation.text)
        for loc in explanation.locations:
            t = {term.name: term for term in loc.terms}
            stock_terms = [_term("", "on hand", t["on_hand"])]
            for name, label in (("reserved", "reserved"), ("allocated", "allocated"), ("unsellable", "unsellable")):
                if t[name].value:
                    stock_terms.append(_term("−", label, t[name]))
            stock_terms.append(_term("−", "safety stock", t["safety_stock"]))
            raw = t["on_hand"].value - t["reserved"].value - t["allocated"].value - t["unsellable"].value
            raw -= t["safety_stock"].value
            channel_terms = [_term("", "shared pool", t["shared_pool"]), _term("+", "protected", t["protected"])]
            channel_terms.append(_term("−", "buffer", t["buffer"]))
            before_threshold = max(0, t["shared_pool"].value + t["protected"].value - t["buffer"].value)
            line = LocationLine(
                location=loc.location,
                ats=loc.ats,
                stock_terms=stock_terms,
                location_ats=t["location_ats"].value,
                floored=raw < 0,
                channel_terms=channel_terms,
                before_threshold=before_threshold,
                threshold=_term("", "threshold", t["threshold"]),
                below_threshold=before_threshold < t["threshold"].value,
                incoming=stock.get(loc.location, Buckets()).incoming,
                text=loc.text,
            )
            view.lines.append(line)
        views.append(view)
    return views
