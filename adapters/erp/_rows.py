"""Streaming row readers shared by the ERP file parsers (CSV and JSON Lines).

Rows are read from the file object one line at a time and never collected, so a file of
millions of rows runs in constant memory. A row that cannot be read becomes a `RowError`
(line number, reason, the raw text) for the caller to dead-letter; only a file that
cannot be read at all (no usable header) raises `ErpFileError`.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone, tzinfo
from functools import lru_cache

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import MAX_QUANTITY
from availability.domain.jsonlimits import check_depth


class RowError(msgspec.Struct, frozen=True):
    """One unreadable row: where it was, why, and its text (for the dead-letter stream)."""

    line_no: int
    reason: str
    raw: str


class ErpFileError(InvalidEvent):
    """The file as a whole is unusable (e.g. a CSV header without the required columns)."""

    slug = "invalid-erp-file"


class RowProblem(Exception):
    """Raised inside row mapping; turned into a `RowError` by the iterator."""


class _TrackedLines:
    """Iterates a text file's lines for `csv.reader`, remembering which lines the current
    record came from (a quoted field may span several)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.line_no = 0
        self._pending: list[str] = []

    def __iter__(self) -> _TrackedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.line_no += 1
        self._pending.append(line)
        return line

    def take(self) -> tuple[int, str]:
        first = self.line_no - len(self._pending) + 1
        raw = "".join(self._pending).rstrip("\r\n")
        self._pending.clear()
        return first, raw


class CsvTable:
    """A CSV file with a header row. `columns` maps each canonical column name to its index;
    iterating yields ``(line_no, raw, fields)`` or a `RowError` for a row of the wrong width."""

    def __init__(
        self,
        lines: Iterable[str],
        *,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
        aliases: Mapping[str, str] | None = None,
        what: str = "CSV",
    ) -> None:
        self._lines = _TrackedLines(lines)
        self._reader = csv.reader(self._lines)
        aliases = aliases or {}
        header: list[str] | None = None
        for row in self._reader:
            self._lines.take()
            if any(cell.strip() for cell in row):
                header = row
                break
        if header is None:
            raise ErpFileError(f"{what} file is empty: expected a header row ({', '.join(required)})")
        self.header = [cell.strip().lstrip("\ufeff").strip().lower() for cell in header]
        self.width = len(self.header)
        self.columns: dict[str, int] = {}
        for index, name in enumerate(self.header):
            canonical = aliases.get(name, name)
            if canonical in self.columns:
                raise ErpFileError(f"{what} header names {canonical!r} twice (directly or through an alias)")
            if canonical in required or canonical in optional:
                self.columns[canonical] = index
        missing = [name for name in required if name not in self.columns]
        if missing:
            alias_note = "".join(f"; {a!r} is accepted for {c!r}" for a, c in aliases.items())
            raise ErpFileError(
                f"{what} header must name {', '.join(required)}; missing {', '.join(missing)} "
                f"(header: {','.join(self.header)}){alias_note}"
            )

    def __iter__(self) -> Iterator[tuple[int, str, list[str]] | RowError]:
        reader, lines = self._reader, self._lines
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line_no, raw = lines.take()
                yield RowError(line_no, f"unreadable CSV: {exc}", raw)
                continue
            line_no, raw = lines.take()
            if len(row) != self.width:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                yield RowError(line_no, f"expected {self.width} fields, got {len(row)}", raw)
                continue
            yield line_no, raw, row

    def get(self, row: list[str], name: str) -> str:
        index = self.columns.get(name)
        return row[index].strip() if index is not None else ""


def jsonl_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | bytes]]:
    """(line number, text) of each non-blank line."""
    for line_no, line in enumerate(lines, start=1):
        if line.strip():
            yield line_no, line


def decode_json_row(decoder: msgspec.json.Decoder, line: str | bytes, what: str = "row") -> object:
    """Decode one JSON Lines row with `decoder`; every failure is a `RowProblem` naming it.
    The row's nesting is checked first: a decoder recurses once per level, so a row of a few
    thousand `[` would otherwise end in a RecursionError instead of a dead letter."""
    try:
        check_depth(line, what=what)
        return decoder.decode(line)
    except InvalidEvent as exc:
        raise RowProblem(exc.detail) from None
    except msgspec.ValidationError as exc:
        raise RowProblem(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RowProblem(f"not JSON: {exc}") from None


def raw_text(line: str | bytes) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text.rstrip("\r\n")


_WHOLE = re.compile(r"\d+(\.0*)?")


def parse_count(value: str | int | None, what: str, *, allow_zero: bool = True) -> int:
    """A non-negative whole number of units, from CSV text or a JSON integer."""
    if value is None or value == "":
        raise RowProblem(f"{what} is missing")
    if isinstance(value, bool):
        raise RowProblem(f"{what} {value!r} is not a whole number")
    if isinstance(value, int):
        quantity = value
    elif value.isdigit():  # the common case, kept cheap for files of millions of rows
        quantity = int(value)
    else:
        text = value.strip()
        if text.startswith("-") and _WHOLE.fullmatch(text[1:]):
            raise RowProblem(f"{what} {text} is negative")
        if not _WHOLE.fullmatch(text):
            raise RowProblem(f"{what} {text!r} is not a whole number")
        quantity = int(text.split(".")[0])
    if quantity < 0:
        raise RowProblem(f"{what} {quantity} is negative")
    if quantity > MAX_QUANTITY:
        raise RowProblem(f"{what} {quantity} exceeds {MAX_QUANTITY}")
    if not allow_zero and quantity == 0:
        raise RowProblem(f"{what} is 0")
    return quantity


@lru_cache(maxsize=4096)
def _parse_time_cached(text: str, naive_tz: tzinfo) -> datetime | str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return f"{text!r} is not an ISO 8601 / RFC 3339 timestamp"
    if len(text) <= 10:
        return f"{text!r} has no time of day (an as-of moment needs one, e.g. {text}T02:00:00Z)"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive_tz)
    return moment.astimezone(timezone.utc)


def parse_time(value: str | None, what: str, naive_tz: tzinfo = timezone.utc) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; naive ones are read in `naive_tz`.
    Snapshot files repeat one as-of value on every row, hence the cache."""
    if not value or not value.strip():
        raise RowProblem(f"{what} is missing")
    parsed = _parse_time_cached(value.strip(), naive_tz)
    if isinstance(parsed, str):
        raise RowProblem(f"{what} {parsed}")
    return parsed


def optional_time(value: str | None, what: str, naive_tz: tzinfo = timezone.utc) -> datetime | None:
    if value is None or not value.strip():
        return None
    return parse_time(value, what, naive_tz)


def required_text(value: str | None, what: str) -> str:
    if value and not value[0].isspace() and not value[-1].isspace():
        return value
    if value is None or not str(value).strip():
        raise RowProblem(f"{what} is missing")
    return str(value).strip()


def map_location(code: str, location_map: Mapping[str, str] | None, what: str = "location") -> str:
    if location_map is None:
        return code
    try:
        return location_map[code]
    except KeyError:
        raise RowProblem(f"{what} {code!r} is not in the location map") from None


def stable_id(*parts: str) -> str:
    event_id = ":".join(parts)
    if len(event_id) <= 200:
        return event_id
    return f"{parts[0]}:{parts[1]}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"
