"""ERP stock snapshot files, turned into canonical `snapshot` events, streamed row by row.

Formats
-------
CSV with a header row (column order free, names case-insensitive, extra columns ignored;
``quantity`` is accepted for ``on_hand``)::

    sku,location,on_hand,as_of
    TEE-BLK-M,DC1,120,2026-11-20T02:00:00Z

JSON Lines, one object per line (``quantity`` accepted for ``on_hand``)::

    {"sku": "TEE-BLK-M", "location": "DC1", "on_hand": 120, "as_of": "2026-11-20T02:00:00Z"}

`as_of` is RFC 3339 with a time of day (a bare date is refused: the ledger orders a
snapshot against deltas by that moment); a timestamp without offset is read in
`naive_tz` (UTC by default). A file may omit `as_of` when the caller passes
`default_as_of` (e.g. taken from the export's file name).

Mapping (source = "erp")
------------------------
One row -> one ``snapshot`` event: ``quantity`` = on_hand (absolute: it replaces on_hand
as of ``occurred_at`` = as_of), ``location`` through `location_map` (identity when None),
``reference`` = None, ``event_id`` = ``erp:snapshot:{location}:{sku}:{as_of epoch ms}``.
The id depends only on what the row says, so a re-sent file is deduplicated downstream
and the next night's snapshot (a new as_of) is a new event.

Errors
------
The iterators yield `StockEvent`s and, for rows that cannot be mapped, `RowError(line_no,
reason, raw)` instead of raising, so the caller can dead-letter the row and carry on. A
file without the required header columns raises `ErpFileError`. Duplicate (sku,
location) rows within one file are not detected (that would need memory proportional to
the file): the ledger applies the first and deduplicates the rest by id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from pathlib import Path

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, to_epoch_ms, validate_event

from adapters.erp._rows import (
    CsvTable,
    ErpFileError,
    RowError,
    RowProblem,
    decode_json_row,
    jsonl_lines,
    map_location,
    parse_count,
    parse_time,
    raw_text,
    required_text,
    stable_id,
)

__all__ = [
    "ErpFileError",
    "RowError",
    "iter_snapshot_csv",
    "iter_snapshot_file",
    "iter_snapshot_jsonl",
    "snapshot_event",
]

SOURCE = "erp"
CSV_ALIASES = {"quantity": "on_hand"}


def snapshot_event(
    sku: str,
    location: str,
    on_hand: int,
    as_of: datetime,
    *,
    location_map: Mapping[str, str] | None = None,
) -> StockEvent:
    """The canonical event of one snapshot row. Raises `RowProblem` / `InvalidEvent`."""
    location = map_location(location, location_map)
    event = StockEvent(
        event_id=stable_id(SOURCE, "snapshot", location, sku, _epoch_ms_text(as_of)),
        type="snapshot",
        source=SOURCE,
        occurred_at=as_of,
        sku=sku,
        location=location,
        quantity=on_hand,
    )
    return validate_event(event)


def iter_snapshot_csv(
    lines: Iterable[str],
    *,
    location_map: Mapping[str, str] | None = None,
    default_as_of: datetime | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    """Stream a snapshot CSV (an open text file or any iterable of lines)."""
    required = ("sku", "location", "on_hand") + (() if default_as_of else ("as_of",))
    table = CsvTable(lines, required=required, optional=("as_of",), aliases=CSV_ALIASES, what="snapshot CSV")
    sku_at, location_at, on_hand_at = table.columns["sku"], table.columns["location"], table.columns["on_hand"]
    as_of_at = table.columns.get("as_of")
    for item in table:
        if isinstance(item, RowError):
            yield item
            continue
        line_no, raw, row = item
        try:
            as_of_text = row[as_of_at].strip() if as_of_at is not None else ""
            if as_of_text:
                as_of = parse_time(as_of_text, "as_of", naive_tz)
            elif default_as_of is not None:
                as_of = default_as_of
            else:
                raise RowProblem("as_of is missing")
            yield snapshot_event(
                required_text(row[sku_at], "sku"),
                required_text(row[location_at], "location"),
                parse_count(row[on_hand_at], "on_hand"),
                as_of,
                location_map=location_map,
            )
        except (RowProblem, InvalidEvent) as exc:
            yield RowError(line_no, _reason(exc), raw)


class _JsonRow(msgspec.Struct):
    sku: str
    location: str
    on_hand: int | None = None
    quantity: int | None = None
    as_of: str | None = None


_json_row = msgspec.json.Decoder(_JsonRow)


def iter_snapshot_jsonl(
    lines: Iterable[str | bytes],
    *,
    location_map: Mapping[str, str] | None = None,
    default_as_of: datetime | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    """Stream a snapshot JSON Lines file (text or binary file object, or lines)."""
    for line_no, line in jsonl_lines(lines):
        try:
            row: _JsonRow = decode_json_row(_json_row, line)  # type: ignore[assignment]
            if row.on_hand is not None and row.quantity is not None:
                raise RowProblem("give on_hand or quantity, not both")
            on_hand = row.on_hand if row.on_hand is not None else row.quantity
            if row.as_of:
                as_of = parse_time(row.as_of, "as_of", naive_tz)
            elif default_as_of is not None:
                as_of = default_as_of
            else:
                raise RowProblem("as_of is missing")
            yield snapshot_event(
                required_text(row.sku, "sku"),
                required_text(row.location, "location"),
                parse_count(on_hand, "on_hand"),
                as_of,
                location_map=location_map,
            )
        except (RowProblem, InvalidEvent) as exc:
            yield RowError(line_no, _reason(exc), raw_text(line))


def iter_snapshot_file(
    path: str | os.PathLike[str],
    *,
    location_map: Mapping[str, str] | None = None,
    default_as_of: datetime | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    """Open a ``.csv`` or ``.jsonl`` / ``.ndjson`` snapshot file and stream it."""
    path = Path(path)
    suffix = path.suffix.lower()
    kwargs = {"location_map": location_map, "default_as_of": default_as_of, "naive_tz": naive_tz}
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            yield from iter_snapshot_csv(f, **kwargs)  # type: ignore[arg-type]
    elif suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as f:
            yield from iter_snapshot_jsonl(f, **kwargs)  # type: ignore[arg-type]
    else:
        raise ErpFileError(f"{path.name}: snapshot files are .csv, .jsonl or .ndjson")


@lru_cache(maxsize=1024)
def _epoch_ms_text(as_of: datetime) -> str:
    return str(to_epoch_ms(as_of))


def _reason(exc: Exception) -> str:
    return exc.detail if isinstance(exc, InvalidEvent) else str(exc)
