"""Store till (POS) transactions, JSON, turned into canonical events.

Format
------
One transaction per document::

    {"till_id": "T03", "store": "STORE-12", "transaction_id": "T03-000123",
     "kind": "sale" | "return" | "void",
     "recorded_at": "2026-11-20T10:15:02Z",      # the till's own clock
     "voids_transaction_id": "T03-000122",       # a void only: the transaction it cancels
     "lines": [{"sku": "TEE-BLK-M", "quantity": 1}, ...]}

A batch (an offline till replaying its journal) is a JSON array of these, or JSON Lines.

Mapping (source = "pos")
------------------------
======  =============  ===============================  ===========================================
kind    type           reference                        event_id
======  =============  ===============================  ===========================================
sale    pos_sale       transaction_id                   pos:{store}:{till_id}:{transaction_id}:{n}
return  pos_return     transaction_id                   pos:{store}:{till_id}:{transaction_id}:{n}
void    pos_void       voids_transaction_id (required)  pos:{store}:{till_id}:{transaction_id}:{n}
======  =============  ===============================  ===========================================

``{n}`` is the 1-based line number. ``location`` = store (through `location_map`, identity
when None), ``occurred_at`` = recorded_at in UTC (a till that was offline sends it hours
late; the ledger orders it by this time, not by arrival; a timestamp without offset is
UTC), ``till_id`` = till_id, ``channel`` = "pos", ``correlation_id`` = transaction_id.
A void lists the lines it reverses; the ledger puts them back on hand. Ids come only from
the till's own identifiers, so a till that replays after being offline is deduplicated.
Lines with quantity 0 produce nothing; a negative quantity is refused (the kind gives the
direction).

Errors: `parse_pos_transaction` raises `InvalidEvent` with the reason (e.g.
``POS transaction T03-000123: Expected `int`, got `str` - at `$.lines[0].quantity```);
`parse_pos_batch` collects them per transaction and keeps the good ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

import msgspec

from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, validate_event

SOURCE = "pos"
KIND_TO_TYPE = {"sale": "pos_sale", "return": "pos_return", "void": "pos_void"}


class PosLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


class PosTransaction(msgspec.Struct, frozen=True, kw_only=True):
    till_id: str
    store: str
    transaction_id: str
    kind: Literal["sale", "return", "void"]
    recorded_at: datetime
    lines: list[PosLine]
    voids_transaction_id: str | None = None


class RejectedTransaction(NamedTuple):
    #: position in the batch (0-based)
    index: int
    reason: str
    #: the document as received (decoded JSON where it was JSON)
    document: Any


class PosBatch(NamedTuple):
    events: list[StockEvent]
    rejected: list[RejectedTransaction]


_decoder = msgspec.json.Decoder(PosTransaction)


def decode_pos_transaction(doc: bytes | str | Mapping[str, Any]) -> PosTransaction:
    try:
        if isinstance(doc, (bytes, str)):
            return _decoder.decode(doc)
        return msgspec.convert(doc, PosTransaction)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidEvent(f"POS transaction{_txn_hint(doc)}: {exc}") from None


def pos_transaction_events(
    txn: PosTransaction, *, location_map: Mapping[str, str] | None = None
) -> list[StockEvent]:
    """The canonical events of one decoded transaction. Raises `InvalidEvent`."""

    def fail(reason: str) -> InvalidEvent:
        return InvalidEvent(f"POS transaction {txn.transaction_id}: {reason}")

    for name in ("till_id", "store", "transaction_id"):
        if not getattr(txn, name).strip():
            raise fail(f"{name} is blank")
    if txn.kind == "void":
        if not txn.voids_transaction_id:
            raise fail("a void must name the transaction it voids (voids_transaction_id)")
        reference = txn.voids_transaction_id
    else:
        if txn.voids_transaction_id:
            raise fail(f"only a void names voids_transaction_id, this is a {txn.kind}")
        reference = txn.transaction_id
    if not txn.lines:
        raise fail("no lines")
    location = txn.store
    if location_map is not None:
        try:
            location = location_map[txn.store]
        except KeyError:
            raise fail(f"store {txn.store!r} is not in the location map") from None
    occurred_at = _utc(txn.recorded_at)
    events: list[StockEvent] = []
    for n, line in enumerate(txn.lines, start=1):
        if line.quantity < 0:
            raise fail(f"line {n}: quantity {line.quantity} is negative: the kind ({txn.kind}) gives the direction")
        if line.quantity == 0:
            continue
        event = StockEvent(
            event_id=_stable_id(SOURCE, txn.store, txn.till_id, txn.transaction_id, str(n)),
            type=KIND_TO_TYPE[txn.kind],  # type: ignore[arg-type]
            source=SOURCE,
            occurred_at=occurred_at,
            sku=line.sku,
            location=location,
            quantity=line.quantity,
            reference=reference,
            correlation_id=txn.transaction_id,
            channel="pos",
            till_id=txn.till_id,
        )
        try:
            events.append(validate_event(event))
        except InvalidEvent as exc:
            raise fail(f"line {n}: {exc.detail}") from None
    return events


def parse_pos_transaction(
    doc: bytes | str | Mapping[str, Any], *, location_map: Mapping[str, str] | None = None
) -> list[StockEvent]:
    """One till transaction (JSON text or decoded dict) -> events. Raises `InvalidEvent`."""
    return pos_transaction_events(decode_pos_transaction(doc), location_map=location_map)


def parse_pos_batch(
    data: bytes | str | list[Any], *, location_map: Mapping[str, str] | None = None
) -> PosBatch:
    """A JSON array or JSON Lines of transactions (or a list of dicts). Bad transactions are
    returned in `rejected` with their reason; the others' events in `events`."""
    events: list[StockEvent] = []
    rejected: list[RejectedTransaction] = []
    for index, doc in enumerate(_documents(data)):
        try:
            events.extend(parse_pos_transaction(doc, location_map=location_map))
        except InvalidEvent as exc:
            rejected.append(RejectedTransaction(index, exc.detail, doc))
    return PosBatch(events, rejected)


def _documents(data: bytes | str | list[Any]) -> list[Any]:
    if isinstance(data, list):
        return data
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if text.lstrip().startswith("["):
        try:
            documents = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"POS batch is not a JSON array: {exc}") from None
        return documents
    return [line for line in text.splitlines() if line.strip()]


def _txn_hint(doc: object) -> str:
    if isinstance(doc, Mapping):
        txn = doc.get("transaction_id")
    else:
        try:
            decoded = msgspec.json.decode(doc)  # type: ignore[arg-type]
        except (msgspec.DecodeError, TypeError):
            return ""
        txn = decoded.get("transaction_id") if isinstance(decoded, dict) else None
    return f" {txn}" if isinstance(txn, str) and txn else ""


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _stable_id(*parts: str) -> str:
    event_id = ":".join(parts)
    if len(event_id) <= 200:
        return event_id
    return f"{parts[0]}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"
