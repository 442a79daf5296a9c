"""ERP incoming supply: purchase orders and stock transfers, as canonical events.

Both come as CSV (one row per document line) or JSON Lines (one document per line, with
its lines nested), streamed like the snapshot files: iterators yield `StockEvent`s and a
`RowError(line_no, reason, raw)` for anything that cannot be mapped; a CSV without the
required header columns raises `ErpFileError`. Timestamps are RFC 3339 (naive ones read
in `naive_tz`, UTC by default); `location_map` maps ERP location codes (identity when None).

Purchase orders
---------------
CSV header ``po_number,line,sku,location,quantity,ordered_at[,eta]``; JSON Lines::

    {"po_number": "PO-4500012345", "location": "DC1", "ordered_at": "...", "eta": "...",
     "lines": [{"line": 1, "sku": "TEE-BLK-M", "quantity": 48, "eta": null, "location": null}]}

(a line's own ``location`` / ``eta`` override the document's; ``line`` defaults to the
1-based position). Each line -> one ``purchase_order`` event: incoming supply at
``location``, ``quantity``, ``eta``, ``occurred_at`` = ordered_at, ``reference`` = PO number,
``event_id`` = ``erp:po:{po_number}:{line}``. A PO line is announced once: a later change
to the same line has the same id and is deduplicated (amendments are not modelled).

Transfers
---------
CSV header ``transfer_id,line,sku,from_location,to_location,quantity,status`` plus
optional ``created_at,shipped_at,received_at,eta,received_quantity``; JSON Lines::

    {"transfer_id": "TR-2001", "from_location": "DC1", "to_location": "STORE-12",
     "status": "shipped", "created_at": "...", "shipped_at": "...", "received_at": null,
     "eta": "...", "lines": [{"line": 1, "sku": "TEE-BLK-M", "quantity": 12, "received_quantity": null}]}

Every line is mapped to the events its status implies so far; each has its own fixed id,
so an ERP that exports the same transfer again as it progresses (planned, then shipped,
then received) adds only the new steps:

====================  ================  =============  ======================================
status                event             location       event_id / occurred_at
====================  ================  =============  ======================================
planned, open,        purchase_order    to_location    erp:transfer:{id}:{line}:incoming,
released (and every   (incoming, with                  created_at (else shipped_at)
later status)         eta, reason
                      "transfer")
shipped, in_transit,  transfer_out      from_location  erp:transfer:{id}:{line}:out,
received                                               shipped_at
received              transfer_in       to_location    erp:transfer:{id}:{line}:in,
                      (received_quantity, else                      received_at
                      quantity)
cancelled             none
====================  ================  =============  ======================================

All three carry ``reference`` = transfer id, so the ledger can settle the destination's
incoming when the ``transfer_in`` with the same reference arrives. ``transfer_out`` also
carries the ``eta``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Literal

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, validate_event

from adapters.erp._rows import (
    CsvTable,
    ErpFileError,
    RowError,
    RowProblem,
    decode_json_row,
    jsonl_lines,
    map_location,
    optional_time,
    parse_count,
    parse_time,
    raw_text,
    required_text,
    stable_id,
)

__all__ = [
    "ErpFileError",
    "RowError",
    "TRANSFER_STAGES",
    "iter_purchase_orders_csv",
    "iter_purchase_orders_jsonl",
    "iter_supply_file",
    "iter_transfers_csv",
    "iter_transfers_jsonl",
    "purchase_order_events",
    "transfer_events",
]

SOURCE = "erp"

#: transfer status -> how far it has got: 0 announced, 1 shipped, 2 received; None: cancelled
TRANSFER_STAGES: dict[str, int | None] = {
    "planned": 0,
    "open": 0,
    "released": 0,
    "shipped": 1,
    "in_transit": 1,
    "received": 2,
    "cancelled": None,
}


def _event(**fields: object) -> StockEvent:
    return validate_event(StockEvent(source=SOURCE, **fields))  # type: ignore[arg-type]


def purchase_order_events(
    *,
    po_number: str,
    line: str,
    sku: str,
    location: str,
    quantity: int,
    ordered_at: datetime,
    eta: datetime | None,
    location_map: Mapping[str, str] | None = None,
) -> list[StockEvent]:
    """The events of one PO line (none for a zero quantity)."""
    if not quantity:
        return []
    location = map_location(location, location_map)
    return [
        _event(
            event_id=stable_id(SOURCE, "po", po_number, line),
            type="purchase_order",
            occurred_at=ordered_at,
            sku=sku,
            location=location,
            quantity=quantity,
            reference=po_number,
            eta=eta,
        )
    ]


def transfer_events(
    *,
    transfer_id: str,
    line: str,
    sku: str,
    from_location: str,
    to_location: str,
    quantity: int,
    status: str,
    created_at: datetime | None,
    shipped_at: datetime | None,
    received_at: datetime | None,
    eta: datetime | None,
    received_quantity: int | None = None,
    location_map: Mapping[str, str] | None = None,
) -> list[StockEvent]:
    """The events one transfer line has produced so far (see the module table)."""
    status = status.strip().lower()
    if status not in TRANSFER_STAGES:
        raise RowProblem(f"status {status!r} is not one of {', '.join(TRANSFER_STAGES)}")
    stage = TRANSFER_STAGES[status]
    if stage is None:
        return []
    source_location = map_location(from_location, location_map, "from_location")
    destination = map_location(to_location, location_map, "to_location")
    if source_location == destination:
        raise RowProblem(f"from_location and to_location are both {destination!r}")
    if stage >= 1 and shipped_at is None:
        raise RowProblem(f"a {status} transfer needs shipped_at")
    if stage >= 2 and received_at is None:
        raise RowProblem("a received transfer needs received_at")
    announced_at = created_at or shipped_at
    if announced_at is None:
        raise RowProblem("created_at is missing")
    base = (SOURCE, "transfer", transfer_id, line)
    events: list[StockEvent] = []
    if quantity:
        events.append(
            _event(
                event_id=stable_id(*base, "incoming"),
                type="purchase_order",
                occurred_at=announced_at,
                sku=sku,
                location=destination,
                quantity=quantity,
                reference=transfer_id,
                reason="transfer",
                eta=eta,
            )
        )
        if stage >= 1:
            events.append(
                _event(
                    event_id=stable_id(*base, "out"),
                    type="transfer_out",
                    occurred_at=shipped_at,
                    sku=sku,
                    location=source_location,
                    quantity=quantity,
                    reference=transfer_id,
                    eta=eta,
                )
            )
    received = quantity if received_quantity is None else received_quantity
    if stage >= 2 and received:
        events.append(
            _event(
                event_id=stable_id(*base, "in"),
                type="transfer_in",
                occurred_at=received_at,
                sku=sku,
                location=destination,
                quantity=received,
                reference=transfer_id,
            )
        )
    return events


# --------------------------------------------------------------------------- CSV


def iter_purchase_orders_csv(
    lines: Iterable[str],
    *,
    location_map: Mapping[str, str] | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    table = CsvTable(
        lines,
        required=("po_number", "line", "sku", "location", "quantity", "ordered_at"),
        optional=("eta",),
        aliases={"line_no": "line"},
        what="purchase order CSV",
    )
    for item in table:
        if isinstance(item, RowError):
            yield item
            continue
        line_no, raw, row = item
        get = table.get
        try:
            yield from purchase_order_events(
                po_number=required_text(get(row, "po_number"), "po_number"),
                line=required_text(get(row, "line"), "line"),
                sku=required_text(get(row, "sku"), "sku"),
                location=required_text(get(row, "location"), "location"),
                quantity=parse_count(get(row, "quantity"), "quantity"),
                ordered_at=parse_time(get(row, "ordered_at"), "ordered_at", naive_tz),
                eta=optional_time(get(row, "eta"), "eta", naive_tz),
                location_map=location_map,
            )
        except (RowProblem, InvalidEvent) as exc:
            yield RowError(line_no, _reason(exc), raw)


def iter_transfers_csv(
    lines: Iterable[str],
    *,
    location_map: Mapping[str, str] | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    table = CsvTable(
        lines,
        required=("transfer_id", "line", "sku", "from_location", "to_location", "quantity", "status"),
        optional=("created_at", "shipped_at", "received_at", "eta", "received_quantity"),
        aliases={"line_no": "line"},
        what="transfer CSV",
    )
    for item in table:
        if isinstance(item, RowError):
            yield item
            continue
        line_no, raw, row = item
        get = table.get
        try:
            received_quantity = get(row, "received_quantity")
            events = transfer_events(
                transfer_id=required_text(get(row, "transfer_id"), "transfer_id"),
                line=required_text(get(row, "line"), "line"),
                sku=required_text(get(row, "sku"), "sku"),
                from_location=required_text(get(row, "from_location"), "from_location"),
                to_location=required_text(get(row, "to_location"), "to_location"),
                quantity=parse_count(get(row, "quantity"), "quantity"),
                status=required_text(get(row, "status"), "status"),
                created_at=optional_time(get(row, "created_at"), "created_at", naive_tz),
                shipped_at=optional_time(get(row, "shipped_at"), "shipped_at", naive_tz),
                received_at=optional_time(get(row, "received_at"), "received_at", naive_tz),
                eta=optional_time(get(row, "eta"), "eta", naive_tz),
                received_quantity=parse_count(received_quantity, "received_quantity") if received_quantity else None,
                location_map=location_map,
            )
        except (RowProblem, InvalidEvent) as exc:
            yield RowError(line_no, _reason(exc), raw)
            continue
        yield from events


# --------------------------------------------------------------------------- JSON Lines


class _PoLine(msgspec.Struct):
    sku: str
    quantity: int
    line: int | str | None = None
    location: str | None = None
    eta: str | None = None


class _PurchaseOrder(msgspec.Struct):
    po_number: str
    ordered_at: str
    lines: list[_PoLine]
    location: str | None = None
    eta: str | None = None


class _TransferLine(msgspec.Struct):
    sku: str
    quantity: int
    line: int | str | None = None
    received_quantity: int | None = None


class _Transfer(msgspec.Struct):
    transfer_id: str
    from_location: str
    to_location: str
    status: str
    lines: list[_TransferLine]
    created_at: str | None = None
    shipped_at: str | None = None
    received_at: str | None = None
    eta: str | None = None


_po_decoder = msgspec.json.Decoder(_PurchaseOrder)
_transfer_decoder = msgspec.json.Decoder(_Transfer)


def _decode_document(decoder: msgspec.json.Decoder, line: str | bytes) -> object:
    return decode_json_row(decoder, line, "document")


def iter_purchase_orders_jsonl(
    lines: Iterable[str | bytes],
    *,
    location_map: Mapping[str, str] | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    """One PO document per line; a bad PO line yields a `RowError` naming ``lines[i]``
    while the document's good lines still yield their events."""
    for line_no, text in jsonl_lines(lines):
        try:
            po: _PurchaseOrder = _decode_document(_po_decoder, text)  # type: ignore[assignment]
            po_number = required_text(po.po_number, "po_number")
            ordered_at = parse_time(po.ordered_at, "ordered_at", naive_tz)
            document_eta = optional_time(po.eta, "eta", naive_tz)
            if not po.lines:
                raise RowProblem(f"purchase order {po_number} has no lines")
        except (RowProblem, InvalidEvent) as exc:
            yield RowError(line_no, _reason(exc), raw_text(text))
            continue
        for index, po_line in enumerate(po.lines):
            try:
                location = po_line.location or po.location
                yield from purchase_order_events(
                    po_number=po_number,
                    line=str(po_line.line if po_line.line is not None else index + 1),
                    sku=required_text(po_line.sku, "sku"),
                    location=required_text(location, "location"),
                    quantity=parse_count(po_line.quantity, "quantity"),
                    ordered_at=ordered_at,
                    eta=optional_time(po_line.eta, "eta", naive_tz) or document_eta,
                    location_map=location_map,
                )
            except (RowProblem, InvalidEvent) as exc:
                yield RowError(line_no, f"lines[{index}]: {_reason(exc)}", raw_text(text))


def iter_transfers_jsonl(
    lines: Iterable[str | bytes],
    *,
    location_map: Mapping[str, str] | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    """One transfer document per line; bad lines are reported like purchase orders'."""
    for line_no, text in jsonl_lines(lines):
        try:
            transfer: _Transfer = _decode_document(_transfer_decoder, text)  # type: ignore[assignment]
            transfer_id = required_text(transfer.transfer_id, "transfer_id")
            times = {
                name: optional_time(getattr(transfer, name), name, naive_tz)
                for name in ("created_at", "shipped_at", "received_at", "eta")
            }
            if not transfer.lines:
                raise RowProblem(f"transfer {transfer_id} has no lines")
        except (RowProblem, InvalidEvent) as exc:
            yield RowError(line_no, _reason(exc), raw_text(text))
            continue
        for index, transfer_line in enumerate(transfer.lines):
            try:
                received = transfer_line.received_quantity
                yield from transfer_events(
                    transfer_id=transfer_id,
                    line=str(transfer_line.line if transfer_line.line is not None else index + 1),
                    sku=required_text(transfer_line.sku, "sku"),
                    from_location=required_text(transfer.from_location, "from_location"),
                    to_location=required_text(transfer.to_location, "to_location"),
                    quantity=parse_count(transfer_line.quantity, "quantity"),
                    status=transfer.status,
                    received_quantity=parse_count(received, "received_quantity") if received is not None else None,
                    location_map=location_map,
                    **times,  # type: ignore[arg-type]
                )
            except (RowProblem, InvalidEvent) as exc:
                yield RowError(line_no, f"lines[{index}]: {_reason(exc)}", raw_text(text))


def iter_supply_file(
    path: str | os.PathLike[str],
    kind: Literal["purchase_orders", "transfers"],
    *,
    location_map: Mapping[str, str] | None = None,
    naive_tz: tzinfo = timezone.utc,
) -> Iterator[StockEvent | RowError]:
    """Open a ``.csv`` or ``.jsonl`` / ``.ndjson`` purchase-order or transfer file and stream it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if kind not in ("purchase_orders", "transfers"):
        raise ValueError(f"kind must be 'purchase_orders' or 'transfers', not {kind!r}")
    kwargs = {"location_map": location_map, "naive_tz": naive_tz}
    if suffix == ".csv":
        parse_csv = iter_purchase_orders_csv if kind == "purchase_orders" else iter_transfers_csv
        with path.open(newline="", encoding="utf-8-sig") as f:
            yield from parse_csv(f, **kwargs)  # type: ignore[arg-type]
    elif suffix in (".jsonl", ".ndjson"):
        parse_jsonl = iter_purchase_orders_jsonl if kind == "purchase_orders" else iter_transfers_jsonl
        with path.open("rb") as f:
            yield from parse_jsonl(f, **kwargs)  # type: ignore[arg-type]
    else:
        raise ErpFileError(f"{path.name}: supply files are .csv, .jsonl or .ndjson")


def _reason(exc: Exception) -> str:
    return exc.detail if isinstance(exc, InvalidEvent) else str(exc)
