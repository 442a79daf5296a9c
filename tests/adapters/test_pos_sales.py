"""POS till transactions: sale / return / void, offline replays deduplicated by id."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from availability.domain.errors import InvalidEvent

from adapters.pos.sales import parse_pos_batch, parse_pos_transaction


def test_sale(samples):
    events = parse_pos_transaction((samples / "pos_sale.json").read_bytes())
    assert [(e.event_id, e.type, e.sku, e.quantity) for e in events] == [
        ("pos:STORE-12:T03:T03-000123:1", "pos_sale", "TEE-BLK-M", 1),
        ("pos:STORE-12:T03:T03-000123:2", "pos_sale", "CAP-RED", 2),
    ]
    sale = events[0]
    assert (sale.source, sale.location, sale.reference, sale.till_id, sale.channel, sale.correlation_id) == (
        "pos", "STORE-12", "T03-000123", "T03", "pos", "T03-000123")
    assert sale.occurred_at == datetime(2026, 11, 20, 10, 15, 2, tzinfo=timezone.utc)


def test_return_and_void(samples):
    (ret,) = parse_pos_transaction((samples / "pos_return.json").read_text())
    assert (ret.type, ret.reference, ret.quantity) == ("pos_return", "T01-004410", 1)
    (void,) = parse_pos_transaction(json.loads((samples / "pos_void.json").read_text()))
    # A void points at the sale it cancels; its own id comes from its own transaction.
    assert (void.type, void.reference, void.event_id, void.correlation_id) == (
        "pos_void", "T03-000123", "pos:STORE-12:T03:T03-000124:1", "T03-000124")


def test_an_offline_till_replaying_its_journal_is_deduplicated(samples):
    data = (samples / "pos_offline_batch.jsonl").read_bytes()
    first, replay = parse_pos_batch(data), parse_pos_batch(data)
    assert first.rejected == [] and len(first.events) == 5
    assert [e.event_id for e in replay.events] == [e.event_id for e in first.events]
    # occurred_at is the till's clock, not the upload time.
    assert first.events[0].occurred_at == datetime(2026, 11, 20, 7, 41, 10, tzinfo=timezone.utc)


def test_bad_transactions_are_rejected_with_reasons_and_the_rest_kept(samples):
    batch = parse_pos_batch((samples / "pos_bad.json").read_bytes())
    assert [e.event_id for e in batch.events] == ["pos:STORE-12:T03:T03-000135:1"]
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (0, "POS transaction T03-000130: Expected `int`, got `str` - at `$.lines[0].quantity`"),
        (1, "POS transaction T03-000131: a void must name the transaction it voids (voids_transaction_id)"),
        (2, "POS transaction T03-000132: line 1: quantity -1 is negative: the kind (return) gives the direction"),
        (3, "POS transaction T03-000133: Invalid enum value 'exchange' - at `$.kind`"),
        (4, "POS transaction T03-000134: Invalid RFC3339 encoded datetime - at `$.recorded_at`"),
    ]
    assert batch.rejected[0].document["transaction_id"] == "T03-000130"


def doc(**changes):
    base = {"till_id": "T1", "store": "S1", "transaction_id": "X1", "kind": "sale",
            "recorded_at": "2026-11-20T10:00:00+01:00", "lines": [{"sku": "A", "quantity": 1}]}
    return {**base, **changes}


def test_times_locations_and_quantities():
    (event,) = parse_pos_transaction(doc(), location_map={"S1": "STORE-1"})
    assert event.location == "STORE-1"
    assert event.occurred_at == datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    (naive,) = parse_pos_transaction(doc(recorded_at="2026-11-20T10:00:00"))
    assert naive.occurred_at == datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    assert parse_pos_transaction(doc(lines=[{"sku": "A", "quantity": 0}])) == []


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lines": []}, "X1: no lines"),
        ({"voids_transaction_id": "X0"}, "only a void names voids_transaction_id"),
        ({"till_id": " "}, "till_id is blank"),
        ({"lines": [{"sku": "A{1}", "quantity": 1}]}, "line 1: sku must be"),
        ({"store": "S9"}, "store 'S9' is not in the location map"),
    ],
)
def test_refused_transactions(changes, message):
    with pytest.raises(InvalidEvent, match=message):
        parse_pos_transaction(doc(**changes), location_map={"S1": "STORE-1", " ": "X"})


def test_not_json():
    with pytest.raises(InvalidEvent, match="POS transaction: JSON is malformed"):
        parse_pos_transaction(b"{nope")
    with pytest.raises(InvalidEvent, match="POS batch is not a JSON array"):
        parse_pos_batch(b"[{nope")
