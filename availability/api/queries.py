"""Use cases behind the read routes: one function each, ledger + RuleBook in, domain answer out."""

from __future__ import annotations

from availability.api.problems import InvalidInput
from availability.ledger.stockreader import StockReader
from availability.domain.ats import (
    ChannelAvailability,
    Explanation,
    channel_availability,
    explain,
)
from availability.domain.errors import UnknownChannel, UnknownLocation
from availability.domain.rules import RuleBook

MAX_SKU_LENGTH = 128


_NOT_IN_SKU = frozenset("{}|\x7f" + "".join(map(chr, range(32))))


def check_sku(sku: str) -> str:
    """A SKU the ledger could hold a key for (schemas.SKU_PATTERN says the same)."""
    if not sku or len(sku) > MAX_SKU_LENGTH or not _NOT_IN_SKU.isdisjoint(sku):
        raise InvalidInput(
            f"sku must be 1..{MAX_SKU_LENGTH} characters without '{{', '}}', '|' or control characters",
            sku=sku[:200],
        )
    return sku


def narrow(book: RuleBook, channel: str, location: str | None, location_group: str | None) -> tuple[str, ...] | None:
    """Check the channel and turn `location` / `location_group` into the locations to answer for.

    None = every location the channel sells from. A location and a group together mean
    the location plus the group (POS: "my store and nearby stores").
    """
    if channel not in book.channels:
        raise UnknownChannel(
            f"unknown channel {channel!r} (configured: {', '.join(sorted(book.channels))})", channel=channel
        )
    if location is None and location_group is None:
        return None
    wanted: list[str] = []
    if location is not None:
        # A channel configured without locations also sells stock at locations master data
        # does not list yet (a fresh install), so such a code is a fair question there.
        if location not in book.locations and not book.sells_everywhere(channel):
            raise UnknownLocation(f"unknown location {location!r}", location=location)
        wanted.append(location)
    if location_group is not None:
        members = book.locations_in_group(location_group)
        if not members:
            raise UnknownLocation(f"no location is in group {location_group!r}", location_group=location_group)
        wanted.extend(members)
    return tuple(wanted)


async def availability_of(
    reader: StockReader,
    book: RuleBook,
    sku: str,
    channel: str,
    location: str | None = None,
    location_group: str | None = None,
) -> ChannelAvailability:
    locations = narrow(book, channel, location, location_group)
    stock = (await reader.stock_many((check_sku(sku),)))[sku]
    return channel_availability(book, sku, channel, stock, locations)


async def availability_batch(
    reader: StockReader,
    book: RuleBook,
    skus: list[str],
    channel: str,
    location: str | None = None,
    location_group: str | None = None,
    *,
    max_skus: int = 500,
) -> list[ChannelAvailability]:
    """Many SKUs in one Redis round trip, answered in the order asked (duplicates once)."""
    if not skus:
        raise InvalidInput("`skus` must name at least one SKU")
    if len(skus) > max_skus:
        raise InvalidInput(f"at most {max_skus} SKUs per batch, got {len(skus)}", max_skus=max_skus)
    locations = narrow(book, channel, location, location_group)
    unique = list(dict.fromkeys(check_sku(s) for s in skus))
    stock = await reader.stock_many(unique)
    return [channel_availability(book, sku, channel, stock[sku], locations) for sku in unique]


async def explain_of(
    reader: StockReader,
    book: RuleBook,
    sku: str,
    channel: str,
    location: str | None = None,
    location_group: str | None = None,
) -> Explanation:
    locations = narrow(book, channel, location, location_group)
    stock = (await reader.stock_many((check_sku(sku),)))[sku]
    return explain(book, sku, channel, stock, locations)
