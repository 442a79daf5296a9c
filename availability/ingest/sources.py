"""Source formats -> canonical events on the stream: the glue between the adapters'
pure parsers (adapters/wms, erp, pos, oms, shopify) and `EventPublisher`.

Every intake (HTTP upload, `availability ingest file`, the WMS drop folder, DLQ replay)
goes through `load()`: parse with the adapter, publish the events in chunks, and
dead-letter what the adapter rejected, with a payload that can be replayed on its own:

    format          whole-file errors (raise)       per-item rejects (dead letter payload)
    x12             EdiError (file refused whole)   -
    erp-csv, erp-po-csv, erp-transfers-csv
                    ErpFileError (bad header)       header line + the bad row (a 2-line CSV)
    erp-jsonl, erp-po-jsonl, erp-transfers-jsonl
                    -                               the bad line
    pos, oms        body not JSON at all            the rejected document (JSON)
    events          -                               the rejected line (canonical JSON)
    shopify:TOPIC   (webhooks; see http.py)         the webhook body

A dead letter from an intake records `stream = "intake:{format}"`, so `dlq replay`
parses its (possibly edited) payload with the same format again.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, decode_event
from availability.ingest.deadletters import DeadLetter, DeadLetters, reason_of
from availability.ingest.streams import StreamNames

if TYPE_CHECKING:
    from availability.bootstrap import Runtime
    from availability.ingest.publisher import EventPublisher

INTAKE_PREFIX = "intake:"
#: events per publish round trip (and per yield to the event loop while parsing)
CHUNK = 2000


class Rejected(msgspec.Struct):
    """One item an adapter refused: where it was, why, and a payload that replays alone."""

    where: str
    reason: str
    payload: bytes
    kind: str = "invalid"


class UnknownFormat(InvalidEvent):
    slug = "unknown-format"


Item = StockEvent | Rejected


# --- per-format item iterators (sync: they read a binary file object) ----------------------


class _HeaderTap:
    """Passes lines through and remembers the first non-blank one (the CSV header)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.header: str | None = None

    def __iter__(self) -> _HeaderTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if self.header is None and line.strip():
            self.header = line.rstrip("\r\n").lstrip("\ufeff")
        return line


def _text(source: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(source, encoding="utf-8-sig", newline="", errors="strict")


def _csv_items(parse: Callable[..., Iterator[Any]], source: IO[bytes], options: dict) -> Iterator[Item]:
    from adapters.erp.snapshots import RowError

    tap = _HeaderTap(_text(source))
    try:
        for item in parse(tap, **options):
            if isinstance(item, RowError):
                payload = f"{tap.header or ''}\n{item.raw}\n".encode()
                yield Rejected(f"line {item.line_no}", item.reason, payload, "row_error")
            else:
                yield item
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"file is not UTF-8 text: {exc}") from None


def _jsonl_items(parse: Callable[..., Iterator[Any]], source: IO[bytes], options: dict) -> Iterator[Item]:
    from adapters.erp.snapshots import RowError

    for item in parse(source, **options):
        if isinstance(item, RowError):
            yield Rejected(f"line {item.line_no}", item.reason, item.raw.encode(), "row_error")
        else:
            yield item


def _x12_items(source: IO[bytes], options: dict) -> Iterator[Item]:
    from adapters.wms.x12 import X12Options, parse_x12

    yield from parse_x12(source.read(), options=X12Options(**options))


def _batch_items(parse_batch: Callable[..., Any], source: IO[bytes], options: dict, what: str) -> Iterator[Item]:
    data = source.read()
    try:
        batch = parse_batch(data, **options)
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidEvent(f"{what} body is neither a JSON object, a JSON array nor JSON Lines: {exc}") from None
    yield from batch.events
    for rejected in batch.rejected:
        document = rejected.document
        payload = document if isinstance(document, bytes) else (
            document.encode() if isinstance(document, str) else msgspec.json.encode(document)
        )
        yield Rejected(f"document {rejected.index}", rejected.reason, payload)


def _pos_items(source: IO[bytes], options: dict) -> Iterator[Item]:
    from adapters.pos.sales import parse_pos_batch

    yield from _batch_items(parse_pos_batch, source, options, "POS")


def _oms_items(source: IO[bytes], options: dict) -> Iterator[Item]:
    from adapters.oms.orders import parse_oms_batch

    yield from _batch_items(parse_oms_batch, source, options, "OMS")


def _event_items(source: IO[bytes], options: dict) -> Iterator[Item]:
    """Canonical events: a JSON array, or one JSON object per line."""
    data = source.read()
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        try:
            docs = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"unparseable event list: {exc}") from None
        lines = [(f"item {i}", msgspec.json.encode(doc)) for i, doc in enumerate(docs)]
    else:
        lines = [(f"line {n}", line) for n, line in enumerate(data.splitlines(), start=1) if line.strip()]
    for where, line in lines:
        try:
            yield decode_event(line)
        except InvalidEvent as exc:
            yield Rejected(where, exc.detail, line, reason_of(exc))


def _erp(module: str, name: str, csv: bool) -> Callable[[IO[bytes], dict], Iterator[Item]]:
    def items(source: IO[bytes], options: dict) -> Iterator[Item]:
        import importlib

        parse = getattr(importlib.import_module(module), name)
        return _csv_items(parse, source, options) if csv else _jsonl_items(parse, source, options)

    return items


FORMATS: dict[str, Callable[[IO[bytes], dict], Iterator[Item]]] = {
    "x12": _x12_items,
    "erp-csv": _erp("adapters.erp.snapshots", "iter_snapshot_csv", True),
    "erp-jsonl": _erp("adapters.erp.snapshots", "iter_snapshot_jsonl", False),
    "erp-po-csv": _erp("adapters.erp.supply", "iter_purchase_orders_csv", True),
    "erp-po-jsonl": _erp("adapters.erp.supply", "iter_purchase_orders_jsonl", False),
    "erp-transfers-csv": _erp("adapters.erp.supply", "iter_transfers_csv", True),
    "erp-transfers-jsonl": _erp("adapters.erp.supply", "iter_transfers_jsonl", False),
    "pos": _pos_items,
    "oms": _oms_items,
    "events": _event_items,
}

#: options each format's adapter accepts (from the CLI / HTTP query): name -> adapter keyword
FORMAT_OPTIONS = {
    "x12": ("location_map", "default_location", "accept_test"),
    "pos": ("location_map",),
    "oms": ("location_map", "default_location"),
}


def iter_items(fmt: str, source: IO[bytes], options: dict | None = None) -> Iterator[Item]:
    """Events and rejects of one input. Raises `InvalidEvent` when the input as a whole is refused."""
    try:
        items = FORMATS[fmt]
    except KeyError:
        raise UnknownFormat(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}") from None
    allowed = FORMAT_OPTIONS.get(fmt, ("location_map",))
    return items(source, {k: v for k, v in (options or {}).items() if k in allowed and v is not None})


# --- the async driver ------------------------------------------------------------------------


@dataclass
class LoadReport:
    format: str
    events: int = 0
    rejected: int = 0
    #: the first few rejects (where, reason), for an HTTP answer or the CLI
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "events": self.events,
            "rejected": self.rejected,
            "rejects": [{"where": w, "reason": r} for w, r in self.rejects],
        }


async def load(
    fmt: str,
    source: IO[bytes],
    publisher: EventPublisher,
    dead_letters: DeadLetters,
    *,
    label: str | None = None,
    options: dict | None = None,
    chunk: int = CHUNK,
) -> LoadReport:
    """Parse `source` as `fmt`, publish its events, dead-letter its rejects.

    Raises `InvalidEvent` (nothing published) when the input as a whole is refused, e.g. a
    malformed X12 envelope or a CSV without the required header. Parsing runs in slices
    of `chunk` items so a large file does not hold the event loop.
    """
    report = LoadReport(fmt)
    items = iter_items(fmt, source, options)
    while True:
        batch = list(itertools.islice(items, chunk))
        if not batch:
            break
        events = [item for item in batch if isinstance(item, StockEvent)]
        rejects = [item for item in batch if isinstance(item, Rejected)]
        if events:
            await publisher.publish(events)
            report.events += len(events)
        if rejects:
            await dead_letters.add(
                DeadLetter(
                    reason=r.kind,
                    detail=r.reason,
                    payload=r.payload,
                    stream=f"{INTAKE_PREFIX}{fmt}",
                    entry_id=f"{label or fmt}:{r.where}",
                )
                for r in rejects
            )
            report.rejected += len(rejects)
            room = 20 - len(report.rejects)
            report.rejects.extend((r.where, r.reason) for r in rejects[: max(room, 0)])
        await asyncio.sleep(0)
    return report


def parse_intake_payload(fmt: str, payload: bytes, options: dict | None = None) -> list[StockEvent]:
    """Re-parse a dead letter's payload (DLQ replay). Raises `InvalidEvent` if it still fails."""
    if fmt.startswith("shopify:"):
        raise InvalidEvent("Shopify webhook dead letters are replayed by Shopify (resend) or as edited canonical events")
    events: list[StockEvent] = []
    for item in iter_items(fmt, io.BytesIO(payload), options):
        if isinstance(item, Rejected):
            raise InvalidEvent(f"{item.where}: {item.reason}")
        events.append(item)
    return events


def stream_names(runtime: Runtime) -> StreamNames:
    return StreamNames.from_settings(runtime.settings)
