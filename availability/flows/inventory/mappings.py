"""Which ATS goes to which Shopify level, and what that value is. Pure: no I/O.

The rule store holds two mappings (`availability shopify import-mappings PATH`):

- SKU -> Shopify InventoryItem GID;
- (channel, our location) -> Shopify Location GID.

A location mapping row says "publish this channel's ATS at this location of ours to that
Shopify location". Usually one row per Shopify location (the `online` channel's ATS at DC1
-> the Shopify location "Warehouse"). When several rows name the same Shopify location, the
Shopify level is the sum of their channel ATS values: that is how one Shopify location can
stand for a group of our locations (e.g. two stores Shopify only knows as one).

A Shopify level is therefore a `LevelKey` (SKU, item GID, Shopify location GID), and its
target value is computed from the SKU's buckets with the same `location_availability`
arithmetic the API answers with, so Shopify shows exactly what the API says.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec

from availability.domain.ats import EMPTY, Buckets, location_availability
from availability.domain.rules import RuleBook


class LevelKey(msgspec.Struct, frozen=True, order=True):
    """One Shopify inventory level of one of our SKUs."""

    sku: str
    item: str
    location: str

    @property
    def field(self) -> str:
        """Field of the SKU's Shopify hash holding this level's last known value."""
        return f"{self.item}|{self.location}"

    @property
    def lease_group(self) -> str:
        return self.sku


class Target(msgspec.Struct, frozen=True):
    """The value a level should have, computed now from the ledger."""

    key: LevelKey
    value: int
    #: the highest channel threshold among the rows that make this level (urgent path)
    threshold: int
    #: our (SKU, location) pairs this level is computed from (to mark them again)
    pairs: tuple[str, ...]
    #: earliest first-dirty time among the claimed marks behind this computation
    dirty_since_ms: int
    computed_ms: int
    urgent: bool = False


class ShopifyMappings:
    """The mappings at one rule-store version, indexed for the publisher."""

    def __init__(
        self,
        items: Mapping[str, str],
        location_rows: Iterable[tuple[str, str, str]],
        version: int = 0,
    ) -> None:
        self.version = version
        self.items: dict[str, str] = dict(items)
        self.skus_by_item: dict[str, str] = {gid: sku for sku, gid in self.items.items()}
        self.rows: tuple[tuple[str, str, str], ...] = tuple(sorted(location_rows))
        by_location: dict[str, set[str]] = defaultdict(set)
        by_shopify: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for channel, location, shopify_location in self.rows:
            by_location[location].add(shopify_location)
            by_shopify[shopify_location].append((channel, location))
        #: our location -> Shopify locations whose value it feeds
        self.shopify_locations_of: dict[str, tuple[str, ...]] = {k: tuple(sorted(v)) for k, v in by_location.items()}
        #: Shopify location -> (channel, our location) rows summed into it
        self.rows_of: dict[str, tuple[tuple[str, str], ...]] = {k: tuple(v) for k, v in by_shopify.items()}

    @property
    def shopify_locations(self) -> tuple[str, ...]:
        return tuple(sorted(self.rows_of))

    def item_of(self, sku: str) -> str | None:
        return self.items.get(sku)

    def levels_for(self, sku: str, locations: Iterable[str]) -> list[LevelKey]:
        """The Shopify levels that changes of `sku` at these locations of ours move."""
        item = self.items.get(sku)
        if item is None:
            return []
        shopify = {s for loc in locations for s in self.shopify_locations_of.get(loc, ())}
        return [LevelKey(sku, item, s) for s in sorted(shopify)]

    def all_levels(self, sku: str) -> list[LevelKey]:
        item = self.items.get(sku)
        if item is None:
            return []
        return [LevelKey(sku, item, s) for s in self.shopify_locations]

    def pairs_of(self, key: LevelKey) -> tuple[str, ...]:
        return tuple(sorted({f"{key.sku}|{location}" for _channel, location in self.rows_of.get(key.location, ())}))

    def target(
        self,
        book: RuleBook,
        key: LevelKey,
        stock: Mapping[str, Buckets],
        *,
        dirty_since_ms: int,
        computed_ms: int,
        urgent: bool = False,
        held: int = 0,
    ) -> Target:
        """The level's target: its ATS less `held`, the units Shopify sold that the ledger
        has not seen yet (flows/inventory/sales.py), never below 0."""
        value, threshold = level_value(book, key.sku, self.rows_of.get(key.location, ()), stock)
        return Target(key, max(0, value - held), threshold, self.pairs_of(key), dirty_since_ms, computed_ms, urgent)

    def diff_items(self, other: ShopifyMappings) -> set[str]:
        """SKUs whose item mapping differs between two versions."""
        return {s for s in self.items.keys() | other.items.keys() if self.items.get(s) != other.items.get(s)}

    def rows_changed(self, other: ShopifyMappings) -> bool:
        return self.rows != other.rows


def sells_from(book: RuleBook, channel: str, location: str) -> bool:
    """Whether `channel` may offer stock at `location` (as `channel_availability` decides)."""
    if channel not in book.channels:
        return False
    if location in book.channel_locations(channel):
        return True
    return book.sells_everywhere(channel) and location not in book.locations


def level_value(
    book: RuleBook, sku: str, rows: Iterable[tuple[str, str]], stock: Mapping[str, Buckets]
) -> tuple[int, int]:
    """(value, highest threshold) of a Shopify level made of these (channel, location) rows.

    A row whose channel does not sell from its location contributes 0: the channel cannot
    offer that stock, so Shopify must not show it.
    """
    value = 0
    threshold = 0
    for channel, location in rows:
        if not sells_from(book, channel, location):
            continue
        line = location_availability(book, sku, location, channel, stock.get(location, EMPTY))
        value += line.ats
        threshold = max(threshold, line.threshold)
    return value, threshold


def crosses(before: int | None, after: int, threshold: int) -> bool:
    """Whether a change from `before` (what Shopify holds; None = unknown) to `after` must skip
    the coalescing window: selling out, coming back in stock, or crossing the channel's
    threshold (below it the channel publishes 0, so this is the same edge seen from the
    raw side; it matters when several rows are summed into one level)."""
    if before is None:
        return after == 0
    for edge in {1, max(1, threshold)}:
        if (before >= edge) != (after >= edge):
            return True
    return False
