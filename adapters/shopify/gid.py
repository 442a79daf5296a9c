"""Shopify global IDs (GIDs).

Shopify's GraphQL Admin API names every object by a GID such as
``gid://shopify/InventoryItem/123`` or ``gid://shopify/Location/456``. Inventory levels
carry a query string naming the item as well:
``gid://shopify/InventoryLevel/456?inventory_item_id=123`` (that is what the
``inventory_levels/update`` webhook puts in ``admin_graphql_api_id``).

This module is the only place in the code base that knows the GID format: the rest of the
service keeps GIDs as opaque strings obtained from these helpers or from Shopify itself.
"""

from __future__ import annotations

import re

__all__ = [
    "GidError",
    "inventory_level_gid",
    "is_gid",
    "item_gid",
    "location_gid",
    "numeric_id",
    "parse_gid",
    "parse_inventory_level_gid",
]

_GID_RE = re.compile(r"^gid://shopify/(?P<type>[A-Za-z][A-Za-z0-9]*)/(?P<id>[0-9]+)(?:\?(?P<query>[^#]*))?$")


class GidError(ValueError):
    """A string is not a Shopify GID (or not of the expected type)."""


def _gid(type_name: str, n: int | str) -> str:
    # bool is an int subclass; True would silently become "1".
    if isinstance(n, bool):
        raise GidError(f"not a numeric id: {n!r}")
    try:
        value = int(n)
    except (TypeError, ValueError):
        raise GidError(f"not a numeric id: {n!r}") from None
    if value <= 0:
        raise GidError(f"ids are positive integers, got {value}")
    return f"gid://shopify/{type_name}/{value}"


def item_gid(n: int | str) -> str:
    """``gid://shopify/InventoryItem/<n>``."""
    return _gid("InventoryItem", n)


def location_gid(n: int | str) -> str:
    """``gid://shopify/Location/<n>``."""
    return _gid("Location", n)


def inventory_level_gid(location_id: int | str, inventory_item_id: int | str) -> str:
    """The GID of the inventory level of an item at a location, as Shopify spells it."""
    loc = numeric_id(location_id) if isinstance(location_id, str) and location_id.startswith("gid://") else int(location_id)
    item = (
        numeric_id(inventory_item_id)
        if isinstance(inventory_item_id, str) and inventory_item_id.startswith("gid://")
        else int(inventory_item_id)
    )
    return f"{_gid('InventoryLevel', loc)}?inventory_item_id={item}"


def parse_gid(gid: str, expected_type: str | None = None) -> tuple[str, int]:
    """Split a GID into ``(type, numeric id)``; raise :class:`GidError` if malformed.

    ``expected_type`` (e.g. ``"InventoryItem"``) additionally checks the type, so a
    location GID passed where an item is wanted fails loudly instead of silently.
    """
    if not isinstance(gid, str):
        raise GidError(f"not a GID: {gid!r}")
    m = _GID_RE.match(gid)
    if m is None:
        raise GidError(f"not a Shopify GID: {gid!r}")
    type_name = m.group("type")
    if expected_type is not None and type_name != expected_type:
        raise GidError(f"expected a {expected_type} GID, got {gid!r}")
    return type_name, int(m.group("id"))


def parse_inventory_level_gid(gid: str) -> tuple[int, int]:
    """``gid://shopify/InventoryLevel/<loc>?inventory_item_id=<item>`` -> ``(item, loc)``."""
    m = _GID_RE.match(gid) if isinstance(gid, str) else None
    if m is None or m.group("type") != "InventoryLevel":
        raise GidError(f"not an InventoryLevel GID: {gid!r}")
    query = m.group("query") or ""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "inventory_item_id" and value.isdigit():
            return int(value), int(m.group("id"))
    raise GidError(f"InventoryLevel GID without inventory_item_id: {gid!r}")


def numeric_id(gid: str, expected_type: str | None = None) -> int:
    """The numeric part of a GID (what REST payloads and webhooks carry)."""
    return parse_gid(gid, expected_type)[1]


def is_gid(value: object, expected_type: str | None = None) -> bool:
    """True if ``value`` is a well-formed GID (of ``expected_type`` if given)."""
    try:
        parse_gid(value, expected_type)  # type: ignore[arg-type]
    except GidError:
        return False
    return True
