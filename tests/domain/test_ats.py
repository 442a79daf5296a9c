"""The ATS arithmetic and its explanation, on the worked examples of docs/ats-model.md."""

from __future__ import annotations

from availability.domain.ats import Buckets, channel_availability, explain
from tests.factories import Channel, Location, book

POS_FIRST = [Channel(name="pos", priority=1), Channel(name="online", priority=2)]


def test_location_ats_subtracts_every_bucket_and_safety_stock():
    rb = book(locations=("DC1",), rules=[dict(kind="safety_stock", units=2)])
    answer = channel_availability(rb, "TEE", "online", {"DC1": Buckets(on_hand=12, reserved=3)})
    line = answer.locations[0]
    assert (line.location_ats, line.ats, answer.ats) == (7, 7, 7)


def test_product_md_example_with_a_buffer():
    # on_hand 12 - reserved 3 - safety 2 = 7; online: pool 7 + protected 0 - buffer 1 = 6
    rb = book(locations=("DC1",), rules=[dict(kind="safety_stock", units=2), dict(kind="buffer", units=1, channel="online")])
    assert channel_availability(rb, "TEE", "online", {"DC1": Buckets(on_hand=12, reserved=3)}).ats == 6


def test_scarce_stock_with_two_ring_fencing_channels_favours_priority():
    # 5 units, POS protects 4 (priority 1), online protects 3 (priority 2): POS keeps 4,
    # online gets the 1 left, nothing is shared, and together they promise exactly 5.
    rb = book(
        locations=("STORE-1",),
        channels=POS_FIRST,
        rules=[dict(kind="protection", units=4, channel="pos"), dict(kind="protection", units=3, channel="online")],
    )
    stock = {"STORE-1": Buckets(on_hand=5)}
    pos = channel_availability(rb, "TEE", "pos", stock).locations[0]
    online = channel_availability(rb, "TEE", "online", stock).locations[0]
    assert (pos.protected, pos.shared_pool, pos.ats) == (4, 0, 4)
    assert (online.protected, online.shared_pool, online.ats) == (1, 0, 1)


def test_plenty_of_stock_each_channel_sees_its_fence_plus_the_pool():
    rb = book(
        locations=("STORE-1",),
        channels=POS_FIRST,
        rules=[dict(kind="protection", units=4, channel="pos"), dict(kind="protection", percent=10, channel="online")],
    )
    stock = {"STORE-1": Buckets(on_hand=50)}
    assert channel_availability(rb, "TEE", "pos", stock).ats == 4 + 41
    assert channel_availability(rb, "TEE", "online", stock).ats == 5 + 41


def test_percent_buffer_rounds_up_so_it_never_exposes_more():
    rb = book(locations=("DC1",), rules=[dict(kind="buffer", percent=10, channel="online")])
    # 10% of 15 = 1.5 -> buffer 2
    assert channel_availability(rb, "TEE", "online", {"DC1": Buckets(on_hand=15)}).ats == 13


def test_threshold_hides_the_last_units():
    rb = book(locations=("DC1",), rules=[dict(kind="threshold", units=3, channel="online")])
    assert channel_availability(rb, "TEE", "online", {"DC1": Buckets(on_hand=2)}).ats == 0
    assert channel_availability(rb, "TEE", "online", {"DC1": Buckets(on_hand=3)}).ats == 3


def test_negative_on_hand_floors_location_ats_at_zero():
    rb = book(locations=("DC1",))
    assert channel_availability(rb, "TEE", "online", {"DC1": Buckets(on_hand=-4)}).ats == 0


def test_channel_total_is_ordered_by_location_priority_and_skips_locations_it_does_not_sell_from():
    rb = book(
        locations=[Location(code="DC1", priority=5), Location(code="STORE-1", priority=1), Location(code="STORE-9", priority=2)],
        channels=[Channel(name="online", locations=("DC1", "STORE-1"))],
    )
    stock = {"DC1": Buckets(on_hand=10), "STORE-1": Buckets(on_hand=2), "STORE-9": Buckets(on_hand=99)}
    answer = channel_availability(rb, "TEE", "online", stock)
    assert [line.location for line in answer.locations] == ["STORE-1", "DC1"]
    assert answer.ats == 12


def test_pos_sees_its_store_group():
    rb = book(
        locations=[Location(code="S1", groups=("north",)), Location(code="S2", groups=("north",)), Location(code="S3")],
    )
    stock = {code: Buckets(on_hand=1) for code in ("S1", "S2", "S3")}
    answer = channel_availability(rb, "TEE", "online", stock, rb.locations_in_group("north"))
    assert answer.ats == 2


def test_explain_names_every_term_and_the_rule_behind_it():
    rb = book(
        locations=("DC1",),
        rules=[dict(kind="safety_stock", units=2, note="x"), dict(kind="buffer", units=1, channel="online")],
        version=7,
    )
    result = explain(rb, "TEE", "online", {"DC1": Buckets(on_hand=12, reserved=3)})
    assert result.ats == 6
    text = result.locations[0].text
    assert "on_hand 12 - reserved 3 - safety 2 [rule 1 v1: global] = 7" in text
    assert "online: shared pool 7 + protected 0 - buffer 1 [rule 2 v1: channel=online] = 6" in text
    terms = {t.name: t for t in result.locations[0].terms}
    assert terms["safety_stock"].rule.id == 1 and terms["buffer"].rule.id == 2
    assert result.rules_version == 7
