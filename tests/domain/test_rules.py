"""Rule precedence: most specific wins, documented tie-break."""

from __future__ import annotations

import pytest

from availability.domain.errors import InvalidRule
from availability.domain.rules import Rule, check_rule
from tests.factories import Location, book

LOCS = [Location(code="S1", groups=("north", "flagship")), Location(code="S2", groups=("north",))]


def safety(rb, sku="TEE", loc="S1"):
    return rb.terms(sku, loc, "online").safety_units


def test_most_specific_rule_wins():
    rb = book(
        locations=LOCS,
        categories={"TEE": "tops"},
        rules=[
            dict(kind="safety_stock", units=1),
            dict(kind="safety_stock", units=2, location_group="north"),
            dict(kind="safety_stock", units=3, location="S1"),
            dict(kind="safety_stock", units=4, category="tops"),
            dict(kind="safety_stock", units=5, sku="TEE"),
            dict(kind="safety_stock", units=6, sku="TEE", location="S2"),
        ],
    )
    assert safety(rb) == 5  # SKU beats category, location, group and global
    assert safety(rb, loc="S2") == 6  # SKU at location beats SKU anywhere
    assert safety(rb, sku="CAP") == 3  # location beats group and global
    assert safety(rb, sku="CAP", loc="S2") == 2
    assert safety(rb, sku="CAP", loc="NOWHERE") == 1


def test_tie_goes_to_priority_then_newest_version():
    rb = book(
        locations=LOCS,
        rules=[
            Rule(id=1, kind="safety_stock", units=7, location_group="north", version=3),
            Rule(id=2, kind="safety_stock", units=8, location_group="flagship", version=1),
        ],
    )
    assert safety(rb) == 7  # same weight and priority: the newer version wins
    rb = book(
        locations=LOCS,
        rules=[
            Rule(id=1, kind="safety_stock", units=7, location_group="north", version=3),
            Rule(id=2, kind="safety_stock", units=8, location_group="flagship", version=1, priority=5),
        ],
    )
    assert safety(rb) == 8


def test_channel_rules_apply_to_their_channel_only():
    rb = book(locations=LOCS, rules=[dict(kind="buffer", units=3, channel="online")])
    assert rb.terms("TEE", "S1", "online").buffer_units == 3
    assert rb.terms("TEE", "S1", "pos").buffer_units == 0


def test_fresh_install_has_one_online_channel_selling_everywhere():
    rb = book(locations=LOCS)
    assert list(rb.channels) == ["online"]
    assert rb.channel_locations("online") == ("S1", "S2")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(kind="buffer", units=1), "set `channel`"),
        (dict(kind="safety_stock", units=1, channel="online"), "leave `channel` empty"),
        (dict(kind="safety_stock", percent=5), "units only"),
        (dict(kind="protection", units=1, percent=5, channel="pos"), "not both"),
        (dict(kind="buffer", units=-1, channel="pos"), "negative"),
        (dict(kind="buffer", percent=120, channel="pos"), "between 0 and 100"),
    ],
)
def test_meaningless_rules_are_rejected(fields, message):
    with pytest.raises(InvalidRule, match=message):
        check_rule(Rule(id=1, **fields))
