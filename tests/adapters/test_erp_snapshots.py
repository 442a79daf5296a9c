"""ERP snapshot files: CSV and JSON Lines, streamed, bad rows reported not raised."""

from __future__ import annotations

import io
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from availability.domain.events import StockEvent

from adapters.erp.snapshots import (
    ErpFileError,
    RowError,
    iter_snapshot_csv,
    iter_snapshot_file,
    iter_snapshot_jsonl,
)

AS_OF = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def split(items):
    events = [i for i in items if isinstance(i, StockEvent)]
    errors = [i for i in items if isinstance(i, RowError)]
    assert len(events) + len(errors) == len(items)
    return events, errors


def test_csv_sample(samples):
    events, errors = split(list(iter_snapshot_file(samples / "erp_snapshot.csv")))
    assert errors == []
    assert len(events) == 9
    first = events[0]
    assert (first.type, first.source, first.sku, first.location, first.quantity) == (
        "snapshot", "erp", "TEE-BLK-M", "DC1", 120)
    assert first.occurred_at == AS_OF
    assert first.event_id == "erp:snapshot:DC1:TEE-BLK-M:1795140000000"
    assert [e.quantity for e in events if e.sku == "MUG-CLASSIC"] == [0]  # zero is a count too


def test_jsonl_sample_agrees_with_csv_on_the_same_facts(samples):
    csv_ids = {e.event_id: e for e in iter_snapshot_file(samples / "erp_snapshot.csv")}
    events, errors = split(list(iter_snapshot_file(samples / "erp_snapshot.jsonl")))
    assert errors == []
    # "quantity" is accepted for on_hand, and 03:00+01:00 is the same moment as 02:00Z.
    assert all(csv_ids[e.event_id] == e for e in events)


def test_csv_bad_rows_are_reported_with_line_and_reason_and_the_rest_go_on(samples):
    events, errors = split(list(iter_snapshot_file(samples / "erp_snapshot_bad_rows.csv")))
    assert [(e.sku, e.location) for e in events] == [("TEE-BLK-M", "DC1"), ("TEE-BLK-M", "STORE-12")]
    assert [(err.line_no, err.reason) for err in errors] == [
        (3, "on_hand -3 is negative"),
        (4, "on_hand 'ten' is not a whole number"),
        (5, "as_of '2026-11-20' has no time of day (an as-of moment needs one, e.g. 2026-11-20T02:00:00Z)"),
        (6, "sku is missing"),
        (7, "expected 5 fields, got 4"),
        (8, "sku must be 1..128 printable characters without '{', '}' or '|'"),
        (9, "on_hand '12.5' is not a whole number"),
    ]
    assert errors[0].raw == "TEE-BLK-L,DC1,-3,2026-11-20T02:00:00Z,Dallas"
    # The last row's quoted field spans two lines; a naive timestamp is read as UTC.
    assert events[1].occurred_at == AS_OF


def test_jsonl_bad_rows(samples):
    events, errors = split(list(iter_snapshot_file(samples / "erp_snapshot_bad_rows.jsonl")))
    assert [e.sku for e in events] == ["TEE-BLK-M", "HOODIE-GRY-XL"]
    assert [(err.line_no, err.reason) for err in errors] == [
        (2, "invalid row: Expected `int | null`, got `str` - at `$.on_hand`"),
        (3, "as_of is missing"),
        (4, "not JSON: Input data was truncated"),
        (5, "give on_hand or quantity, not both"),
        (6, "invalid row: Object missing required field `sku`"),
    ]
    assert errors[1].raw == '{"sku": "TEE-WHT-M", "location": "DC1", "on_hand": 64}'


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "snapshot CSV file is empty"),
        ("sku,location,as_of\n", "missing on_hand"),
        ("sku,location,on_hand,quantity,as_of\n", "names 'on_hand' twice"),
        ("sku,on_hand,as_of\nA,1,2026-11-20T02:00:00Z\n", "missing location"),
    ],
)
def test_an_unusable_header_raises(text, message):
    with pytest.raises(ErpFileError, match=message):
        list(iter_snapshot_csv(io.StringIO(text)))


def test_location_map_default_as_of_and_naive_zone():
    text = "SKU,Location,Quantity\nA,WH-1,5\nB,WH-9,5\n"
    default = datetime(2026, 11, 20, 23, 0, tzinfo=timezone.utc)
    events, errors = split(
        list(iter_snapshot_csv(io.StringIO(text), location_map={"WH-1": "DC1"}, default_as_of=default))
    )
    assert [(e.location, e.occurred_at) for e in events] == [("DC1", default)]
    assert [(err.line_no, err.reason) for err in errors] == [(3, "location 'WH-9' is not in the location map")]

    plus_one = timezone(timedelta(hours=1))
    (event,) = iter_snapshot_csv(io.StringIO("sku,location,on_hand,as_of\nA,DC1,1,2026-11-20T03:00:00\n"),
                                 naive_tz=plus_one)
    assert event.occurred_at == AS_OF


def test_ids_are_stable_across_resends_and_new_per_snapshot_moment():
    text = "sku,location,on_hand,as_of\nA,DC1,5,2026-11-20T02:00:00Z\n"
    assert list(iter_snapshot_csv(io.StringIO(text))) == list(iter_snapshot_csv(io.StringIO(text)))
    next_night = text.replace("2026-11-20", "2026-11-21")
    (a,), (b,) = iter_snapshot_csv(io.StringIO(text)), iter_snapshot_csv(io.StringIO(next_night))
    assert a.event_id != b.event_id


class CountingLines:
    """A file-like iterable that counts how many lines the parser has pulled."""

    def __init__(self, lines):
        self._lines = iter(lines)
        self.pulled = 0

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self._lines)
        self.pulled += 1
        return line


def test_rows_are_read_one_at_a_time():
    source = CountingLines(["sku,location,on_hand,as_of\n"] + [f"S{i},DC1,1,2026-11-20T02:00:00Z\n" for i in range(1000)])
    rows = iter_snapshot_csv(source)
    next(rows)
    assert source.pulled == 2  # the header and the first row, nothing more
    jsonl = CountingLines([f'{{"sku":"S{i}","location":"DC1","on_hand":1,"as_of":"2026-11-20T02:00:00Z"}}\n'
                           for i in range(1000)])
    next(iter_snapshot_jsonl(jsonl))
    assert jsonl.pulled == 1


ROWS = 200_000


def _peak_bytes_while_streaming(path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = 0
        for item in iter_snapshot_file(path):
            assert not isinstance(item, RowError)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


def test_a_200k_row_csv_streams_in_constant_memory(tmp_path):
    path = tmp_path / "snapshot.csv"
    with path.open("w") as f:
        f.write("sku,location,on_hand,as_of\n")
        f.writelines(f"SKU-{i:07d},DC{i % 7},{i % 500},2026-11-20T02:00:00Z\n" for i in range(ROWS))
    count, peak = _peak_bytes_while_streaming(path)
    assert count == ROWS
    # The file is ~8 MB and its events would take well over 100 MB; streaming holds a few rows.
    assert peak < 1_000_000, f"peak {peak} bytes"


def test_a_large_jsonl_streams_in_constant_memory(tmp_path):
    # A quarter of the CSV's rows keeps the suite fast; the peak does not grow with rows.
    rows = ROWS // 4
    path = tmp_path / "snapshot.jsonl"
    with path.open("w") as f:
        f.writelines(
            f'{{"sku":"SKU-{i:07d}","location":"DC{i % 7}","on_hand":{i % 500},"as_of":"2026-11-20T02:00:00Z"}}\n'
            for i in range(rows)
        )
    count, peak = _peak_bytes_while_streaming(path)
    assert count == rows
    assert peak < 1_000_000, f"peak {peak} bytes"


def test_unknown_file_kind():
    with pytest.raises(ErpFileError, match="snapshot files are .csv, .jsonl or .ndjson"):
        list(iter_snapshot_file("stock.xlsx"))
