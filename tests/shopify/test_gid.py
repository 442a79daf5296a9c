from __future__ import annotations

import pytest

from adapters.shopify.gid import (
    GidError,
    inventory_level_gid,
    is_gid,
    item_gid,
    location_gid,
    numeric_id,
    parse_gid,
    parse_inventory_level_gid,
)


def test_round_trip():
    assert item_gid(123) == "gid://shopify/InventoryItem/123"
    assert location_gid("456") == "gid://shopify/Location/456"
    assert parse_gid(item_gid(123)) == ("InventoryItem", 123)
    assert numeric_id(location_gid(9), "Location") == 9
    level = inventory_level_gid(location_gid(456), 123)
    assert level == "gid://shopify/InventoryLevel/456?inventory_item_id=123"
    assert parse_inventory_level_gid(level) == (123, 456)


@pytest.mark.parametrize("bad", ["", "123", "gid://shopify/InventoryItem/", "gid://other/InventoryItem/1", "gid://shopify/InventoryItem/x", None])
def test_malformed(bad):
    assert not is_gid(bad)
    with pytest.raises(GidError):
        parse_gid(bad)


def test_type_checked():
    with pytest.raises(GidError):
        parse_gid(location_gid(1), "InventoryItem")
    assert is_gid(item_gid(1), "InventoryItem") and not is_gid(item_gid(1), "Location")
    for bad in (0, -1, True, "x"):
        with pytest.raises(GidError):
            item_gid(bad)
    with pytest.raises(GidError):
        parse_inventory_level_gid("gid://shopify/InventoryLevel/1")
