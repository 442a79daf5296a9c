"""OMS order messages: reserve / release / allocate / fulfil / return."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from availability.domain.errors import InvalidEvent

from adapters.oms.orders import parse_oms_batch, parse_oms_message


@pytest.mark.parametrize(
    "name, action",
    [("oms_reserve.json", "reserve"), ("oms_allocate.json", "allocate"), ("oms_fulfil.json", "fulfil"),
     ("oms_release.json", "release"), ("oms_return.json", "return")],
)
def test_each_action_sample(samples, name, action):
    events = parse_oms_message((samples / name).read_bytes())
    assert events and {e.type for e in events} == {action}
    assert {e.source for e in events} == {"oms"}
    assert all(e.reference and e.reference.startswith("ORD-") for e in events)


def test_reserve_fields(samples):
    events = parse_oms_message((samples / "oms_reserve.json").read_bytes())
    assert [(e.event_id, e.sku, e.quantity, e.location) for e in events] == [
        ("oms:oms-msg-50001:1", "TEE-BLK-M", 2, "DC1"),
        ("oms:oms-msg-50001:2", "CAP-RED", 1, "DC1"),
    ]
    first = events[0]
    assert (first.reference, first.channel, first.correlation_id) == ("ORD-1001", "online", "checkout-7f3a9c")
    assert first.occurred_at == datetime(2026, 11, 20, 10, 15, tzinfo=timezone.utc)


def test_ids_without_a_message_id_are_one_per_order_action_and_line(samples):
    data = (samples / "oms_release.json").read_bytes()
    (event,) = parse_oms_message(data)
    assert event.event_id == "oms:ORD-1002:release:1"
    assert parse_oms_message(data) == [event]


def test_bad_messages(samples):
    batch = parse_oms_batch((samples / "oms_bad.json").read_bytes())
    assert [(e.event_id, e.type) for e in batch.events] == [("oms:ORD-2005:fulfil:1", "fulfil")]  # "fulfill" accepted
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (0, "OMS teleport for order ORD-2001: action 'teleport' is not one of reserve, release, allocate, fulfil, return"),
        (1, "OMS reserve for order ORD-2002: line 1: no location (and no default location)"),
        (2, "OMS message for order ORD-2003: Expected `int`, got `float` - at `$.lines[0].quantity`"),
        (3, "OMS release for order ?: order_id is blank"),
    ]


def test_default_location_location_map_and_numeric_order_ids():
    doc = {"action": "reserve", "order_id": 1001, "occurred_at": "2026-11-20T10:00:00Z",
           "lines": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2, "location": "W1"},
                     {"sku": "C", "quantity": 0, "location": "W1"}]}
    events = parse_oms_message(doc, default_location="DC1", location_map={"W1": "STORE-1"})
    assert [(e.sku, e.location, e.reference) for e in events] == [("A", "DC1", "1001"), ("B", "STORE-1", "1001")]
    with pytest.raises(InvalidEvent, match="line 2: location 'W1' is not in the location map"):
        parse_oms_message(doc, default_location="DC1", location_map={})
    with pytest.raises(InvalidEvent, match="line 1: quantity -1 is negative"):
        parse_oms_message({**doc, "lines": [{"sku": "A", "quantity": -1, "location": "DC1"}]})


def test_jsonl_batch():
    lines = "\n".join(
        f'{{"action": "reserve", "order_id": "O{i}", "occurred_at": "2026-11-20T10:00:00Z", '
        f'"lines": [{{"sku": "A", "quantity": 1, "location": "DC1"}}]}}' for i in range(3)
    )
    batch = parse_oms_batch(lines)
    assert [e.reference for e in batch.events] == ["O0", "O1", "O2"] and batch.rejected == []
