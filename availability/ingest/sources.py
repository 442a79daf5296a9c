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
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, decode_event, encode_event
from availability.domain.jsonlimits import MAX_DEPTH, check_depth
from availability.ingest import metrics
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


class NothingReadable(InvalidEvent):
    """Every row or document of an upload was refused: the body is not the format at all
    (or is wholly wrong), so it is the sender's to fix and nothing is dead-lettered."""

    slug = "invalid-event"


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


def _x12_items(source: IO[bytes], options: dict, max_depth: int = MAX_DEPTH) -> Iterator[Item]:
    from adapters.wms.x12 import X12Options, parse_x12

    yield from parse_x12(source.read(), options=X12Options(**options))


def _json_documents(data: bytes, what: str, max_depth: int) -> list[bytes]:
    """The documents of a JSON body (an array, one object, or JSON Lines), each as its own
    bytes: split without building Python objects, so each document is then decoded (and,
    if refused, dead-lettered) exactly as it came. Raises `InvalidEvent` for a body that is
    none of these."""
    check_depth(data, max_depth, what=f"the {what} body")
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        try:
            return [bytes(raw) for raw in msgspec.json.decode(stripped, type=list[msgspec.Raw])]
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"{what} body is not a JSON array: {exc}") from None
    if stripped.startswith(b"{"):
        try:  # one document, possibly pretty-printed over several lines
            return [bytes(msgspec.json.decode(stripped, type=msgspec.Raw))]
        except msgspec.DecodeError:
            pass  # JSON Lines (or garbage, which its lines will show)
    return [line for line in stripped.splitlines() if line.strip()]


def _batch_items(
    parse_batch: Callable[..., Any], source: IO[bytes], options: dict, what: str, max_depth: int
) -> Iterator[Item]:
    documents = _json_documents(source.read(), what, max_depth)
    # In slices, so the caller (load) gets items (and the event loop a turn) as they come.
    for start in range(0, len(documents), CHUNK):
        batch = parse_batch(documents[start : start + CHUNK], **options)
        yield from batch.events
        for rejected in batch.rejected:
            document = rejected.document
            payload = document if isinstance(document, bytes) else (
                document.encode() if isinstance(document, str) else msgspec.json.encode(document)
            )
            yield Rejected(f"document {start + rejected.index}", rejected.reason, payload)


def _pos_items(source: IO[bytes], options: dict, max_depth: int = MAX_DEPTH) -> Iterator[Item]:
    from adapters.pos.sales import parse_pos_batch

    yield from _batch_items(parse_pos_batch, source, options, "POS", max_depth)


def _oms_items(source: IO[bytes], options: dict, max_depth: int = MAX_DEPTH) -> Iterator[Item]:
    from adapters.oms.orders import parse_oms_batch

    yield from _batch_items(parse_oms_batch, source, options, "OMS", max_depth)


def _event_items(source: IO[bytes], options: dict, max_depth: int = MAX_DEPTH) -> Iterator[Item]:
    """Canonical events: a JSON array, or one JSON object per line."""
    data = source.read()
    check_depth(data, max_depth, what="the event list")
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        try:
            docs = msgspec.json.decode(data, type=list[msgspec.Raw])
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"unparseable event list: {exc}") from None
        lines = [(f"item {i}", bytes(doc)) for i, doc in enumerate(docs)]
    else:
        lines = [(f"line {n}", line) for n, line in enumerate(data.splitlines(), start=1) if line.strip()]
    for where, line in lines:
        try:
            yield decode_event(line)
        except InvalidEvent as exc:
            yield Rejected(where, exc.detail, line, reason_of(exc))


def _erp(module: str, name: str, csv: bool) -> Callable[[IO[bytes], dict, int], Iterator[Item]]:
    # JSON Lines rows are depth-checked one by one by the adapter (adapters/erp/_rows.py),
    # and a row nested too deep is refused alone like any unreadable row.
    def items(source: IO[bytes], options: dict, max_depth: int = MAX_DEPTH) -> Iterator[Item]:
        import importlib

        parse = getattr(importlib.import_module(module), name)
        return _csv_items(parse, source, options) if csv else _jsonl_items(parse, source, options)

    return items


FORMATS: dict[str, Callable[[IO[bytes], dict, int], Iterator[Item]]] = {
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


def iter_items(
    fmt: str, source: IO[bytes], options: dict | None = None, *, max_depth: int = MAX_DEPTH
) -> Iterator[Item]:
    """Events and rejects of one input. Raises `InvalidEvent` when the input as a whole is
    refused (`NestingTooDeep` for JSON nested beyond `max_depth`)."""
    try:
        items = FORMATS[fmt]
    except KeyError:
        raise UnknownFormat(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}") from None
    allowed = FORMAT_OPTIONS.get(fmt, ("location_map",))
    return items(source, {k: v for k, v in (options or {}).items() if k in allowed and v is not None}, max_depth)


# --- the async driver ------------------------------------------------------------------------


@dataclass
class LoadReport:
    format: str
    events: int = 0
    rejected: int = 0
    #: rejects written to the dead-letter stream, and those refused beyond the per-request
    #: cap (counted and reported, not stored: the sender fixes the file and sends it again)
    dead_lettered: int = 0
    not_kept: int = 0
    #: the per-request cap, when it was hit
    dead_letter_cap: int | None = None
    #: the first few rejects (where, reason), for an HTTP answer or the CLI
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "events": self.events,
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
            "not_kept": self.not_kept,
            "rejects": [{"where": w, "reason": r} for w, r in self.rejects],
        }
        if self.dead_letter_cap is not None:
            out["dead_letter_cap"] = self.dead_letter_cap
        return out


#: rejects named in a report or a refusal
REPORTED_REJECTS = 20


#: events per publish round trip and letters per dead-letter write: small enough that
#: building one pipeline holds the event loop for a few milliseconds at most
PUBLISH_SLICE = 250


class _Chunk(NamedTuple):
    """One slice of parsed input, prepared in the worker thread: events already encoded."""

    size: int
    encoded: list[tuple[str, bytes]]
    sources: Tally
    rejects: list[Rejected]


def _take(items: Iterator[Item], chunk: int) -> _Chunk:
    batch = list(itertools.islice(items, chunk))
    events = [item for item in batch if isinstance(item, StockEvent)]
    return _Chunk(
        len(batch),
        [(event.sku, encode_event(event)) for event in events],
        Tally(event.source for event in events),
        [item for item in batch if isinstance(item, Rejected)],
    )


async def load(
    fmt: str,
    source: IO[bytes],
    publisher: EventPublisher,
    dead_letters: DeadLetters,
    *,
    label: str | None = None,
    options: dict | None = None,
    chunk: int = CHUNK,
    max_dead_letters: int | None = None,
    refuse_if_nothing_readable: bool = False,
    max_depth: int = MAX_DEPTH,
    offload: bool = True,
) -> LoadReport:
    """Parse `source` as `fmt`, publish its events, dead-letter its rejects.

    Raises `InvalidEvent` when the input as a whole is refused, e.g. a malformed X12
    envelope, a CSV without the required header, JSON nested deeper than `max_depth`
    (nothing published: these are found before the first event), or (with
    `refuse_if_nothing_readable`) input of which not one row or document could be read:
    `NothingReadable`, nothing published and nothing dead-lettered.

    At most `max_dead_letters` rejects are written; the rest are counted in the report's
    `not_kept` (and the metric), never silently dropped.

    Parsing runs in a worker thread, `chunk` items at a time, so a large upload neither
    holds the event loop (the lookups it serves) nor waits on it; the loop publishes each
    chunk while the next is parsed. `offload=False` parses inline, yielding between chunks
    (in a worker process, where there is nothing else to serve: workers.py).
    """
    report = LoadReport(fmt)
    items = iter_items(fmt, source, options, max_depth=max_depth)
    #: rejects not yet written: held until an event shows the input is the format at all
    held: list[Rejected] = []

    async def write(rejects: list[Rejected]) -> None:
        for start in range(0, len(rejects), PUBLISH_SLICE):
            await dead_letters.add(
                DeadLetter(
                    reason=r.kind,
                    detail=r.reason,
                    payload=r.payload,
                    stream=f"{INTAKE_PREFIX}{fmt}",
                    entry_id=f"{label or fmt}:{r.where}",
                )
                for r in rejects[start : start + PUBLISH_SLICE]
            )
        report.dead_lettered += len(rejects)

    loop = asyncio.get_running_loop()

    def next_chunk() -> asyncio.Future:
        if offload:
            return loop.run_in_executor(None, _take, items, chunk)
        done = loop.create_future()
        try:
            done.set_result(_take(items, chunk))
        except Exception as exc:  # noqa: BLE001 - raised where it is awaited, as the thread's would be
            done.set_exception(exc)
        return done

    pending = next_chunk()
    while True:
        batch = await pending
        if not batch.size:
            break
        if not offload:
            await asyncio.sleep(0)
        pending = next_chunk()
        try:
            for start in range(0, len(batch.encoded), PUBLISH_SLICE):
                await publisher.publish_encoded(batch.encoded[start : start + PUBLISH_SLICE])
            report.events += len(batch.encoded)
            for source, n in batch.sources.items():
                metrics.PUBLISHED.labels(source).inc(n)
            rejects = batch.rejects
            if rejects:
                report.rejected += len(rejects)
                room = REPORTED_REJECTS - len(report.rejects)
                report.rejects.extend((r.where, r.reason) for r in rejects[: max(room, 0)])
                if max_dead_letters is not None:
                    room = max(max_dead_letters - report.dead_lettered - len(held), 0)
                    report.not_kept += max(len(rejects) - room, 0)
                    rejects = rejects[:room]
                held.extend(rejects)
            if held and (report.events or not refuse_if_nothing_readable):
                await write(held)
                held = []
        except BaseException:
            await _drain(pending)
            raise
    if refuse_if_nothing_readable and report.rejected and not report.events:
        first = report.rejects[0]
        detail = (
            f"{first[0]}: {first[1]}"
            if report.rejected == 1
            else f"none of the {report.rejected} rows or documents could be read as {fmt}; {first[0]}: {first[1]}"
        )
        raise NothingReadable(detail, rejects=[{"where": w, "reason": r} for w, r in report.rejects])
    if report.not_kept:
        report.dead_letter_cap = max_dead_letters
        metrics.DEAD_LETTERS_NOT_KEPT.labels("request_cap").inc(report.not_kept)
        metrics.DEAD_LETTER_CAP_HITS.labels("request").inc()
    return report


async def _drain(pending: asyncio.Future) -> None:
    """Wait out a parse still running in the worker (it owns the source file)."""
    try:
        await asyncio.shield(pending)
    except BaseException:  # noqa: BLE001 - its outcome no longer matters
        pass


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
