"""ERP purchase orders and transfers: incoming supply with ETA, transfer lifecycle, bad rows."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

from availability.domain.events import StockEvent

from adapters.erp.supply import (
    ErpFileError,
    RowError,
    iter_purchase_orders_csv,
    iter_purchase_orders_jsonl,
    iter_supply_file,
    iter_transfers_csv,
    iter_transfers_jsonl,
)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc)


def split(items):
    return [i for i in items if isinstance(i, StockEvent)], [i for i in items if isinstance(i, RowError)]


def test_purchase_orders_csv(samples):
    events, errors = split(list(iter_supply_file(samples / "erp_purchase_orders.csv", "purchase_orders")))
    assert errors == []
    first = events[0]
    assert (first.event_id, first.type, first.source, first.location, first.quantity, first.reference) == (
        "erp:po:PO-4500012345:1", "purchase_order", "erp", "DC1", 48, "PO-4500012345")
    assert (first.occurred_at, first.eta) == (at(10, 15, 30), at(20, 9))
    assert len(events) == 4


def test_purchase_orders_jsonl_with_line_overrides_agrees_with_csv(samples):
    csv_events = {e.event_id: e for e in iter_supply_file(samples / "erp_purchase_orders.csv", "purchase_orders")}
    events, errors = split(list(iter_supply_file(samples / "erp_purchase_orders.jsonl", "purchase_orders")))
    assert errors == []
    for event in events:
        if event.event_id in csv_events:
            assert event == csv_events[event.event_id]
    mug = events[-1]
    assert (mug.sku, mug.location, mug.eta) == ("MUG-CLASSIC", "STORE-12", at(25, 9))  # line-level overrides


def test_transfer_lifecycle_by_status(samples):
    events, errors = split(list(iter_supply_file(samples / "erp_transfers.csv", "transfers")))
    assert errors == []
    table = [(e.event_id, e.type, e.location, e.quantity) for e in events]
    assert table == [
        ("erp:transfer:TR-2001:1:incoming", "purchase_order", "STORE-12", 12),
        ("erp:transfer:TR-2001:1:out", "transfer_out", "DC1", 12),
        ("erp:transfer:TR-2001:1:in", "transfer_in", "STORE-12", 12),
        ("erp:transfer:TR-2001:2:incoming", "purchase_order", "STORE-12", 6),
        ("erp:transfer:TR-2001:2:out", "transfer_out", "DC1", 6),
        ("erp:transfer:TR-2001:2:in", "transfer_in", "STORE-12", 5),  # short receipt
        ("erp:transfer:TR-2002:1:incoming", "purchase_order", "STORE-7", 8),
        ("erp:transfer:TR-2002:1:out", "transfer_out", "DC1", 8),
        ("erp:transfer:TR-2003:1:incoming", "purchase_order", "STORE-12", 4),  # planned: announced only
    ]  # TR-2004 was cancelled: nothing
    assert {e.reference for e in events if "TR-2001" in e.event_id} == {"TR-2001"}
    incoming, out, received = events[0], events[1], events[2]
    assert (incoming.reason, incoming.eta, incoming.occurred_at) == ("transfer", at(19, 12), at(18, 8))
    assert (out.occurred_at, out.eta) == (at(18, 16), at(19, 12))
    assert received.occurred_at == at(19, 10, 30)


def test_a_transfer_exported_again_as_it_progresses_only_adds_the_new_steps():
    header = "transfer_id,line,sku,from_location,to_location,quantity,status,created_at,shipped_at,received_at,eta\n"
    planned = header + "TR-9,1,A,DC1,STORE-12,4,planned,2026-11-20T08:00:00Z,,,2026-11-22T08:00:00Z\n"
    shipped = header + "TR-9,1,A,DC1,STORE-12,4,shipped,2026-11-20T08:00:00Z,2026-11-21T08:00:00Z,,2026-11-22T08:00:00Z\n"
    first = list(iter_transfers_csv(io.StringIO(planned)))
    later = list(iter_transfers_csv(io.StringIO(shipped)))
    assert later[0] == first[0]  # the incoming announcement is the same event
    assert [e.type for e in later[1:]] == ["transfer_out"]


def test_transfers_jsonl_matches_csv(samples):
    csv_events = list(iter_supply_file(samples / "erp_transfers.csv", "transfers"))
    events, errors = split(list(iter_supply_file(samples / "erp_transfers.jsonl", "transfers")))
    assert errors == []
    assert events == csv_events[: len(events)]


def test_bad_transfer_rows_are_reported(samples):
    events, errors = split(list(iter_supply_file(samples / "erp_supply_bad_rows.csv", "transfers")))
    assert [e.event_id for e in events] == ["erp:transfer:TR-3001:1:incoming", "erp:transfer:TR-3001:1:out"]
    assert [(err.line_no, err.reason) for err in errors] == [
        (3, "a shipped transfer needs shipped_at"),
        (4, "from_location and to_location are both 'DC1'"),
        (5, "status 'lost_in_space' is not one of planned, open, released, shipped, in_transit, received, cancelled"),
        (6, "a received transfer needs received_at"),
        (7, "quantity -5 is negative"),
        (8, "created_at 'tomorrow' is not an ISO 8601 / RFC 3339 timestamp"),
    ]
    assert errors[0].raw.startswith("TR-3002,1,")


def test_a_bad_line_in_a_json_document_does_not_lose_the_good_lines():
    doc = ('{"po_number": "PO-1", "location": "DC1", "ordered_at": "2026-11-20T08:00:00Z", "lines": ['
           '{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": -1}, {"sku": "C", "quantity": 2, "line": 7}]}\n')
    events, errors = split(list(iter_purchase_orders_jsonl(io.StringIO(doc))))
    assert [e.event_id for e in events] == ["erp:po:PO-1:1", "erp:po:PO-1:7"]
    assert [(err.line_no, err.reason) for err in errors] == [(1, "lines[1]: quantity -1 is negative")]


def test_json_documents_that_do_not_fit_are_reported():
    lines = [
        '{"po_number": "PO-1", "ordered_at": "2026-11-20T08:00:00Z", "lines": []}\n',
        '{"po_number": "PO-2", "lines": [{"sku": "A", "quantity": 1}]}\n',
        '{"po_number": "PO-3", "ordered_at": "2026-11-20T08:00:00Z", "lines": [{"sku": "A", "quantity": 1}]}\n',
        "{not json\n",
    ]
    _, errors = split(list(iter_purchase_orders_jsonl(lines)))
    assert [(err.line_no, err.reason) for err in errors] == [
        (1, "purchase order PO-1 has no lines"),
        (2, "invalid document: Object missing required field `ordered_at`"),
        (3, "lines[0]: location is missing"),
        (4, "not JSON: JSON is malformed: object keys must be strings (byte 1)"),
    ]
    transfers = ['{"transfer_id": "T", "from_location": "DC1", "to_location": "S1", "status": "shipped", '
                 '"created_at": "2026-11-20T08:00:00Z", "lines": [{"sku": "A", "quantity": 1}]}']
    _, errors = split(list(iter_transfers_jsonl(transfers)))
    assert [err.reason for err in errors] == ["lines[0]: a shipped transfer needs shipped_at"]


def test_location_map_applies_to_both_ends_of_a_transfer():
    text = ("transfer_id,line,sku,from_location,to_location,quantity,status,created_at\n"
            "T1,1,A,W1,W2,3,planned,2026-11-20T08:00:00Z\nT2,1,A,W1,W9,3,planned,2026-11-20T08:00:00Z\n")
    events, errors = split(list(iter_transfers_csv(io.StringIO(text), location_map={"W1": "DC1", "W2": "STORE-12"})))
    assert [e.location for e in events] == ["STORE-12"]
    assert [err.reason for err in errors] == ["to_location 'W9' is not in the location map"]


def test_missing_columns_and_unknown_kinds():
    with pytest.raises(ErpFileError, match="purchase order CSV header must name .* missing ordered_at"):
        list(iter_purchase_orders_csv(io.StringIO("po_number,line,sku,location,quantity\n")))
    with pytest.raises(ErpFileError, match="transfer CSV header .* missing status"):
        list(iter_transfers_csv(io.StringIO("transfer_id,line,sku,from_location,to_location,quantity\n")))
    with pytest.raises(ValueError, match="kind must be"):
        list(iter_supply_file("po.csv", "invoices"))  # type: ignore[arg-type]
    with pytest.raises(ErpFileError, match="supply files are"):
        list(iter_supply_file("po.xml", "purchase_orders"))
