"""ANSI X12 EDI from a WMS / 3PL, turned into canonical stock events.

Format
------
One file holds one or more interchanges::

    ISA ... GS ... ST ... SE  [ST ... SE]*  GE  [GS ... GE]*  IEA

The ISA header is fixed-width (106 characters including the segment terminator). Its
4th character is the element separator, ISA-16 is the component separator and the
character right after ISA-16 is the segment terminator (a newline after it is
tolerated). The envelope is checked before anything is mapped: ISA element widths,
ISA-13 = IEA-02 and IEA-01 = number of groups, GS-06 = GE-02 and GE-01 = number of
sets, ST-02 = SE-02 and SE-01 = number of segments from ST to SE inclusive, GS-01
matching the set (944 RE, 945 SW, 947 AW, 846 IB). Test interchanges (ISA-15 = T)
are refused unless `accept_test` is set.

Any problem raises `EdiError` (an `InvalidEvent`) naming the segment, its position in
the file (ISA is segment #1) and the element, e.g.
``W07 segment #14 (944 set 0001), element W07-01: quantity received 'ABC' is not a number``.
A file is all or nothing: one bad transaction set rejects the whole interchange, so a
corrected re-send is applied once, whole.

Mapping (source = "wms")
------------------------
=====  ============================  ================  ==========================  ==========================================
set    lines                         canonical type    reference                   event_id
=====  ============================  ================  ==========================  ==========================================
944    W07 (W07-01 qty received)     receipt           W17-04 depositor order      wms:944:{ISA-06}:{W17-03 receipt}:{line}
                                                       (the PO / transfer
                                                       received against), or
                                                       None
945    W12 (W12-03 units shipped)    ship              W06-02 depositor order      wms:945:{ISA-06}:{W06-04 shipment}:{line}
947    W19 (W19-02 +/- quantity)     adjustment        W15-02 (or W15-03)          wms:947:{ISA-06}:{W15-02|W15-03}:{line}
846    LIN + QTY (17 on hand,        cycle_count       BIA-03                      wms:846:{ISA-06}:{BIA-03}:{location}:{sku}
       else 33 available)            (absolute)
=====  ============================  ================  ==========================  ==========================================

``{line}`` is the LX-01 assigned number (``LX.n`` when one LX loop holds several items),
or the item's ordinal in the set when there is no LX. Ids are built only from
the partner's business identifiers (never from the ISA/ST control numbers, which a
partner regenerates on a re-send), so a re-sent document yields the same ids and is
deduplicated by the ledger. ``correlation_id`` is ``x12:{ISA-06}:{ISA-13}:{ST-02}``: it
names the file and set an event came from, for audit.

- SKU: the first item id whose qualifier is in `item_qualifiers` (default SK, VN, BP,
  IN: our SKU, the vendor's item number, the buyer's part / item number). Items given
  only by UPC/GTIN (W07-03 etc., or qualifiers UP/UK/UA/EN) need `upc_map`.
- Location: N1-04 of the warehouse party (944: WH, ST; 945: SF, WH; 947: WH; 846: WH,
  RL, and an N1 inside a LIN loop overrides it), through `location_map` (identity when
  None; a code missing from a given map is an error), else `default_location`.
- Units: quantities must be in eaches (EA, UN, PC); anything else (e.g. CA cases) is
  refused rather than guessed.
- 947 reasons (X12 element 181): put on hold / into quality inspection (05, 08) and
  product recall (AW) -> quality_hold; taken off hold / out of inspection (55, 88) and
  recoup of damaged product (52) -> quality_release; damaged in facility / in transit
  (AU, AV) -> damaged; dumped or destroyed (07) -> write_off; book decrease (06),
  unauthorized destruction (UD), shipment greater / receipt less than reported (03, 04)
  -> lost; book increase (56), unable-to-locate product located (51), shipment less /
  receipt greater than reported (53, 54) -> found. Every other code (AA physical count,
  AB accounting error, AH other, ...) takes its direction from the quantity's sign:
  positive -> found, negative -> lost. A sign that contradicts a directional code is an
  error. Quantities are always emitted as non-negative numbers.
- Time: dates carry no zone; they are read in `tz` (UTC by default) unless a G62/DTM
  time code says otherwise (UT, GM, ES/ED, CS/CD, MS/MD, PS/PD, ET/CT/MT/PT). The time of
  day comes from the document (W17-07, a header G62 on the document date, BIA-05, a
  header DTM 007/194); if it has none, from the GS creation time when the group was
  created that same day, else 00:00. Partners should send times: a same-day cycle count
  can only be ordered against a receipt or shipment that carries one.
- Lines with a zero quantity produce no delta event (a 846 count of zero does).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from availability.domain.errors import InvalidEvent
from availability.domain.events import MAX_QUANTITY, StockEvent, validate_event

SOURCE = "wms"

#: X12 functional identifier code (GS-01) of each supported transaction set.
FUNCTIONAL_IDS = {"944": "RE", "945": "SW", "947": "AW", "846": "IB"}

#: Widths of ISA-01 .. ISA-16: the interchange header is fixed-width.
_ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
ISA_LENGTH = 3 + len(_ISA_WIDTHS) + sum(_ISA_WIDTHS) + 1  # 106 with the terminator

DEFAULT_ITEM_QUALIFIERS = ("SK", "VN", "BP", "IN")
UPC_QUALIFIERS = ("UP", "UK", "UA", "EN")
DEFAULT_UNIT_CODES = frozenset({"EA", "UN", "PC"})
#: QTY-01 qualifiers of an 846 in order of preference: 17 on hand, 33 available for sale.
DEFAULT_ON_HAND_QUALIFIERS = ("17", "33")
#: DTM-01 qualifiers that give an 846's as-of moment: 007 effective, 194 period end.
AS_OF_DTM_QUALIFIERS = ("007", "194")

#: X12 element 181 (W19-01) -> (canonical adjustment reason, direction). Direction +1 or
#: -1 is implied by the code (an opposite sign on the quantity is an error); 0 means a
#: status change whose quantity may be sent with either sign. Codes not listed take their
#: direction from the quantity's sign (found / lost).
ADJUSTMENT_REASON_CODES: dict[str, tuple[str, int]] = {
    "05": ("quality_hold", 0),  # product put on hold
    "08": ("quality_hold", 0),  # product put in quality inspection inventory
    "AW": ("quality_hold", 0),  # product recall
    "55": ("quality_release", 0),  # product taken off hold
    "88": ("quality_release", 0),  # product removed from quality inspection inventory
    "52": ("quality_release", 0),  # recoup / rework of damaged product
    "AU": ("damaged", 0),  # damaged in facility
    "AV": ("damaged", 0),  # damaged in transit
    "07": ("write_off", -1),  # product dumped or destroyed
    "06": ("lost", -1),  # book adjustment decrease
    "UD": ("lost", -1),  # unauthorized destruction
    "03": ("lost", -1),  # shipment greater than previously reported
    "04": ("lost", -1),  # receipt less than previously reported
    "56": ("found", +1),  # book adjustment increase
    "51": ("found", +1),  # unable-to-locate product located
    "53": ("found", +1),  # shipment less than previously reported
    "54": ("found", +1),  # receipt greater than previously reported
}

#: X12 time codes (element 623) we can place on the clock; LT (local time) means `tz`.
_TIME_CODES: dict[str, tzinfo] = {
    "UT": timezone.utc,
    "GM": timezone.utc,
    **{
        code: timezone(timedelta(hours=offset))
        for code, offset in {"ES": -5, "ED": -4, "CS": -6, "CD": -5, "MS": -7, "MD": -6, "PS": -8, "PD": -7}.items()
    },
    **{
        code: ZoneInfo(name)
        for code, name in {
            "ET": "America/New_York",
            "CT": "America/Chicago",
            "MT": "America/Denver",
            "PT": "America/Los_Angeles",
        }.items()
    },
}

_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)")
_TAG = re.compile(r"[A-Z][A-Z0-9]{1,2}")


class EdiError(InvalidEvent):
    """A malformed or unmappable X12 document. `reason` is the bare problem; the message
    (`detail`, `str()`) also says where: segment id, its position in the file, element."""

    slug = "invalid-edi"

    def __init__(
        self,
        reason: str,
        *,
        segment_id: str | None = None,
        position: int | None = None,
        element: str | None = None,
        transaction: str | None = None,
    ) -> None:
        where = ""
        if segment_id:
            where = f"{segment_id} segment" + (f" #{position}" if position else "")
        elif position:
            where = f"segment #{position}"
        if transaction:
            where += f" ({transaction})" if where else transaction
        if element:
            where += f", element {element}" if where else f"element {element}"
        super().__init__(
            f"{where}: {reason}" if where else reason,
            segment=segment_id,
            position=position,
            element=element,
            transaction=transaction,
        )
        self.reason = reason
        self.segment_id = segment_id
        self.position = position
        self.element = element
        self.transaction = transaction


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Delimiters:
    element: str
    component: str
    segment: str


class Segment:
    """One segment: `tag` plus elements addressed 1-based as in the standard (W07-01 is
    `get(1)`). `position` is the segment's ordinal in the file, ISA being #1."""

    __slots__ = ("tag", "elements", "position", "transaction", "_component")

    def __init__(self, elements: list[str], position: int, component: str) -> None:
        self.tag = elements[0]
        self.elements = elements
        self.position = position
        self.transaction: str | None = None
        self._component = component

    def __repr__(self) -> str:
        return f"Segment(#{self.position} {'*'.join(self.elements)})"

    def ref(self, n: int) -> str:
        return f"{self.tag}-{n:02d}"

    def get(self, n: int) -> str:
        return self.elements[n].strip() if n < len(self.elements) else ""

    def component(self, n: int, k: int = 1) -> str:
        parts = self.get(n).split(self._component)
        return parts[k - 1].strip() if k <= len(parts) else ""

    def require(self, n: int, what: str) -> str:
        value = self.get(n)
        if not value:
            raise self.error(f"{what} is required", n)
        return value

    def error(self, reason: str, n: int | None = None) -> EdiError:
        return EdiError(
            reason,
            segment_id=self.tag,
            position=self.position,
            element=self.ref(n) if n is not None else None,
            transaction=self.transaction,
        )


@dataclass(slots=True)
class TransactionSet:
    code: str  # ST-01, e.g. "944"
    control_number: str  # ST-02
    st: Segment
    #: segments between ST and SE
    segments: list[Segment]
    group: FunctionalGroup = field(repr=False)

    @property
    def interchange(self) -> Interchange:
        return self.group.interchange

    @property
    def label(self) -> str:
        return f"{self.code} set {self.control_number}"


@dataclass(slots=True)
class FunctionalGroup:
    functional_id: str  # GS-01
    sender: str  # GS-02
    receiver: str  # GS-03
    created_date: date  # GS-04
    created_time: time  # GS-05
    control_number: str  # GS-06
    version: str  # GS-08
    gs: Segment
    interchange: Interchange = field(repr=False)
    transaction_sets: list[TransactionSet] = field(default_factory=list)


@dataclass(slots=True)
class Interchange:
    sender_qualifier: str  # ISA-05
    sender_id: str  # ISA-06, stripped
    receiver_qualifier: str  # ISA-07
    receiver_id: str  # ISA-08, stripped
    created_date: date  # ISA-09
    created_time: time  # ISA-10
    version: str  # ISA-12
    control_number: str  # ISA-13
    usage: str  # ISA-15: P production, T test
    delimiters: Delimiters
    isa: Segment
    groups: list[FunctionalGroup] = field(default_factory=list)

    def transaction_sets(self) -> Iterator[TransactionSet]:
        for group in self.groups:
            yield from group.transaction_sets


def _decode(data: str | bytes) -> str:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # X12's extended character set predates UTF-8; Latin-1 never fails and keeps
            # the delimiters where they are.
            text = data.decode("latin-1")
    else:
        text = data
    return text.lstrip("\ufeff")


def parse_interchanges(data: str | bytes) -> list[Interchange]:
    """Split a file into interchanges and check every envelope. Raises `EdiError`."""
    text = _decode(data)
    interchanges: list[Interchange] = []
    pos = 0
    seg_no = 0
    length = len(text)
    while True:
        while pos < length and text[pos].isspace():
            pos += 1
        if pos >= length:
            break
        seg_no += 1
        isa_fields, delims, pos = _read_isa(text, pos, seg_no)
        isa = Segment(isa_fields, seg_no, delims.component)
        segments = [isa]
        while True:
            end = text.find(delims.segment, pos)
            if end < 0:
                tail = text[pos:].strip()
                if tail:
                    raise EdiError(
                        f"segment {tail[:40]!r} is not ended by the segment terminator {delims.segment!r}",
                        position=seg_no + 1,
                    )
                raise EdiError(
                    f"interchange {isa.get(13)} is not closed by IEA (the file ends after segment #{seg_no})",
                    segment_id="ISA",
                    position=isa.position,
                )
            raw = text[pos:end].strip("\r\n\t ")
            pos = end + 1
            if not raw:
                continue
            seg_no += 1
            elements = raw.split(delims.element)
            if not _TAG.fullmatch(elements[0]):
                raise EdiError(f"{elements[0][:20]!r} is not a segment identifier", position=seg_no)
            segment = Segment(elements, seg_no, delims.component)
            segments.append(segment)
            if segment.tag == "IEA":
                break
        interchanges.append(_build_interchange(segments, delims))
    if not interchanges:
        raise EdiError("empty file: no ISA interchange header")
    return interchanges


def _read_isa(text: str, pos: int, seg_no: int) -> tuple[list[str], Delimiters, int]:
    def fail(reason: str, element: str | None = None) -> EdiError:
        return EdiError(reason, segment_id="ISA", position=seg_no, element=element)

    if not text.startswith("ISA", pos):
        raise EdiError(f"expected an ISA interchange header, found {text[pos:pos + 20]!r}", position=seg_no)
    if pos + 4 > len(text):
        raise fail("the ISA segment is truncated")
    sep = text[pos + 3]
    if sep.isalnum() or sep.isspace():
        raise fail(f"element separator {sep!r} (4th character of ISA) must not be a letter, digit or space")
    # Find the 16 element separators; ISA-16 is the single character after the last one.
    seps: list[int] = []
    idx = pos + 3
    while len(seps) < 16:
        idx = text.find(sep, idx)
        if idx < 0:
            raise fail(f"the ISA segment has {len(seps)} elements, expected 16")
        seps.append(idx)
        idx += 1
    last = seps[-1]
    fields = text[pos : last + 2].split(sep)
    for n, (value, width) in enumerate(zip(fields[1:], _ISA_WIDTHS), start=1):
        if len(value) != width:
            raise fail(
                f"ISA-{n:02d} is {len(value)} characters, expected {width}: the ISA segment is fixed-width "
                f"({ISA_LENGTH} characters including the segment terminator)",
                f"ISA-{n:02d}",
            )
    if last + 2 >= len(text):
        raise fail("the ISA segment has no segment terminator after ISA-16")
    component = fields[16]
    terminator = text[last + 2]
    if component.isalnum() or component.isspace() or component == sep:
        raise fail(f"component separator {component!r} must be a special character other than {sep!r}", "ISA-16")
    if terminator.isalnum() or terminator in (sep, component) or terminator == " ":
        raise fail(
            f"segment terminator {terminator!r} (the character after ISA-16) must differ from the separators",
        )
    return fields, Delimiters(element=sep, component=component, segment=terminator), last + 3


def _build_interchange(segments: list[Segment], delims: Delimiters) -> Interchange:
    isa, iea = segments[0], segments[-1]
    interchange = Interchange(
        sender_qualifier=isa.get(5),
        sender_id=isa.get(6),
        receiver_qualifier=isa.get(7),
        receiver_id=isa.get(8),
        created_date=_yymmdd(isa, 9),
        created_time=_hhmm(isa, 10),
        version=isa.get(12),
        control_number=isa.get(13),
        usage=isa.get(15),
        delimiters=delims,
        isa=isa,
    )
    if not interchange.control_number.isdigit():
        raise isa.error(f"interchange control number {isa.get(13)!r} must be 9 digits", 13)
    if interchange.usage not in ("P", "T", "I"):
        raise isa.error(f"usage indicator {interchange.usage!r} must be P (production) or T (test)", 15)
    if not interchange.sender_id:
        raise isa.error("interchange sender id is blank", 6)

    i, end = 1, len(segments) - 1
    while i < end:
        gs = segments[i]
        if gs.tag != "GS":
            raise gs.error(f"expected GS (functional group header), found {gs.tag}")
        group = FunctionalGroup(
            functional_id=gs.require(1, "functional identifier code"),
            sender=gs.get(2),
            receiver=gs.get(3),
            created_date=_date(gs, 4, "group date"),
            created_time=_time(gs, 5) or time(0),
            control_number=gs.require(6, "group control number"),
            version=gs.get(8),
            gs=gs,
            interchange=interchange,
        )
        i += 1
        while True:
            if i >= end:
                raise gs.error(f"functional group {group.control_number} is not closed by GE")
            st = segments[i]
            if st.tag == "GE":
                break
            if st.tag != "ST":
                raise st.error(f"expected ST (transaction set header) or GE, found {st.tag}: segment outside a transaction set")
            code = st.require(1, "transaction set identifier code")
            control = st.require(2, "transaction set control number")
            label = f"{code} set {control}"
            st.transaction = label
            body: list[Segment] = []
            i += 1
            while True:
                if i >= end:
                    raise st.error(f"transaction set {control} is not closed by SE")
                seg = segments[i]
                if seg.tag in ("ST", "GE", "GS", "IEA"):
                    raise seg.error(f"transaction set {control} ({code}) is not closed by SE before this {seg.tag}")
                seg.transaction = label
                if seg.tag == "SE":
                    break
                body.append(seg)
                i += 1
            se = segments[i]
            i += 1
            counted = _int(se, 1, "number of included segments")
            if counted != len(body) + 2:
                raise se.error(
                    f"SE-01 says {counted} segments but transaction set {control} has {len(body) + 2} (ST to SE inclusive)",
                    1,
                )
            if se.get(2) != control:
                raise se.error(f"SE-02 control number {se.get(2)!r} does not match ST-02 {control!r}", 2)
            group.transaction_sets.append(TransactionSet(code, control, st, body, group))
        ge = segments[i]
        i += 1
        counted = _int(ge, 1, "number of transaction sets included")
        if counted != len(group.transaction_sets):
            raise ge.error(
                f"GE-01 says {counted} transaction sets but group {group.control_number} has "
                f"{len(group.transaction_sets)}",
                1,
            )
        if ge.get(2) != group.control_number:
            raise ge.error(
                f"GE-02 control number {ge.get(2)!r} does not match GS-06 {group.control_number!r}", 2
            )
        interchange.groups.append(group)

    counted = _int(iea, 1, "number of included functional groups")
    if counted != len(interchange.groups):
        raise iea.error(f"IEA-01 says {counted} functional groups but the interchange has {len(interchange.groups)}", 1)
    if iea.get(2) != interchange.control_number:
        raise iea.error(
            f"IEA-02 control number {iea.get(2)!r} does not match ISA-13 {interchange.control_number!r}", 2
        )
    return interchange


# --------------------------------------------------------------------------- element readers


def _int(seg: Segment, n: int, what: str) -> int:
    raw = seg.get(n)
    if not raw.isdigit():
        raise seg.error(f"{what} {raw!r} is not a whole number", n)
    return int(raw)


def _quantity(seg: Segment, n: int, what: str, *, signed: bool = False) -> int:
    """A decimal (X12 type R) quantity that must be a whole number of units."""
    raw = seg.get(n)
    if not raw:
        raise seg.error(f"{what} is required", n)
    if not _NUMBER.fullmatch(raw):
        raise seg.error(f"{what} {raw!r} is not a number", n)
    value = Decimal(raw)
    if value != value.to_integral_value():
        raise seg.error(f"{what} {raw} is not a whole number of units", n)
    quantity = int(value)
    if quantity < 0 and not signed:
        raise seg.error(f"{what} {raw} is negative", n)
    if abs(quantity) > MAX_QUANTITY:
        raise seg.error(f"{what} {raw} exceeds {MAX_QUANTITY}", n)
    return quantity


def _date(seg: Segment, n: int, what: str) -> date:
    raw = seg.get(n)
    if not raw:
        raise seg.error(f"{what} is required", n)
    try:
        if len(raw) == 8 and raw.isdigit():
            return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        if len(raw) == 6 and raw.isdigit():  # YYMMDD (X12 before 4010)
            return date(2000 + int(raw[:2]), int(raw[2:4]), int(raw[4:]))
    except ValueError:
        pass
    raise seg.error(f"{what} {raw!r} is not a date (CCYYMMDD)", n)


def _yymmdd(seg: Segment, n: int) -> date:
    raw = seg.get(n)
    try:
        return date(2000 + int(raw[:2]), int(raw[2:4]), int(raw[4:6]))
    except ValueError:
        raise seg.error(f"interchange date {raw!r} is not YYMMDD", n) from None


def _hhmm(seg: Segment, n: int) -> time:
    moment = _time(seg, n)
    if moment is None:
        raise seg.error("interchange time is required", n)
    return moment


def _time(seg: Segment, n: int) -> time | None:
    """HHMM, HHMMSS, HHMMSSD or HHMMSSDD; None when absent."""
    raw = seg.get(n)
    if not raw:
        return None
    try:
        if raw.isdigit() and len(raw) in (4, 6, 7, 8):
            hour, minute = int(raw[:2]), int(raw[2:4])
            second = int(raw[4:6]) if len(raw) >= 6 else 0
            fraction = raw[6:]
            micro = int(fraction.ljust(6, "0")) if fraction else 0
            return time(hour, minute, second, micro)
    except ValueError:
        pass
    raise seg.error(f"time {raw!r} is not HHMM[SS[D[D]]]", n)


def _zone(seg: Segment, n: int, default: tzinfo) -> tzinfo:
    code = seg.get(n)
    if not code or code == "LT":
        return default
    try:
        return _TIME_CODES[code]
    except KeyError:
        raise seg.error(f"time code {code!r} is not one we can place ({', '.join(sorted(_TIME_CODES))}, LT)", n) from None


def _stable_id(*parts: str) -> str:
    event_id = ":".join(parts)
    if len(event_id) <= 200:
        return event_id
    # Over-long source identifiers still give a deterministic id within the 200-char limit.
    return f"{parts[0]}:{parts[1]}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"


# --------------------------------------------------------------------------- options and context


@dataclass(frozen=True, slots=True)
class X12Options:
    """How to read one partner's files. All fields optional."""

    #: partner warehouse code (N1-04) -> our location code; None means identity
    location_map: Mapping[str, str] | None = None
    #: location for documents that name no warehouse party
    default_location: str | None = None
    #: item id qualifiers that carry our SKU, in order of preference
    item_qualifiers: tuple[str, ...] = DEFAULT_ITEM_QUALIFIERS
    #: UPC / GTIN -> SKU, for lines identified only by UPC
    upc_map: Mapping[str, str] | None = None
    #: units of measure accepted as eaches
    unit_codes: frozenset[str] = DEFAULT_UNIT_CODES
    #: 846 QTY-01 qualifiers taken as the on-hand count, in order of preference
    on_hand_qualifiers: tuple[str, ...] = DEFAULT_ON_HAND_QUALIFIERS
    #: zone of dates and times that carry no time code
    tz: tzinfo = timezone.utc
    #: accept test interchanges (ISA-15 = T)
    accept_test: bool = False
    #: per-partner overrides of ADJUSTMENT_REASON_CODES
    reason_codes: Mapping[str, tuple[str, int]] | None = None


DEFAULT_OPTIONS = X12Options()

_ITEM_START = {"944": ("W07",), "945": ("W12",), "947": ("W19",), "846": ("LIN",)}


class _Context:
    """What every line of one transaction set shares."""

    def __init__(self, ts: TransactionSet, options: X12Options) -> None:
        self.ts = ts
        self.options = options
        interchange = ts.interchange
        self.sender = interchange.sender_id
        self.correlation_id = f"x12:{interchange.sender_id}:{interchange.control_number}:{ts.control_number}"
        if not ts.segments:
            raise ts.st.error(f"transaction set {ts.control_number} is empty")
        # Header: everything before the first line item (or LX) of the set.
        starts = (*_ITEM_START[ts.code], "LX")
        self.header: list[Segment] = []
        for seg in ts.segments:
            if seg.tag in starts:
                break
            self.header.append(seg)

    def first(self, tag: str, what: str) -> Segment:
        seg = self.ts.segments[0]
        if seg.tag != tag:
            raise seg.error(f"a {self.ts.code} must begin with {tag} ({what}), found {seg.tag}")
        return seg

    def header_location(self, entity_codes: tuple[str, ...]) -> str | None:
        n1s = [s for s in self.header if s.tag == "N1"]
        for code in entity_codes:
            for seg in n1s:
                if seg.get(1) == code:
                    return self.map_location(seg)
        return self.options.default_location

    def location(self, entity_codes: tuple[str, ...]) -> str:
        location = self.header_location(entity_codes)
        if location:
            return location
        raise self.ts.st.error(
            f"no N1 party with entity code {'/'.join(entity_codes)} names the warehouse, and no default_location is set"
        )

    def map_location(self, n1: Segment) -> str:
        code = n1.get(4)
        if not code:
            raise n1.error(f"N1*{n1.get(1)} has no identification code to name the location", 4)
        mapping = self.options.location_map
        if mapping is None:
            return code
        try:
            return mapping[code]
        except KeyError:
            raise n1.error(f"warehouse code {code!r} is not in the location map", 4) from None

    def moment(self, doc_date: date, doc_time: time | None, zone: tzinfo | None = None) -> datetime:
        zone = zone or self.options.tz
        if doc_time is None:
            # The header may carry the time in a G62 on the document date.
            for seg in self.header:
                if seg.tag == "G62" and seg.get(4) and _date(seg, 2, "date") == doc_date:
                    doc_time = _time(seg, 4)
                    zone = _zone(seg, 5, zone)
                    break
        if doc_time is None:
            group = self.ts.group
            doc_time = group.created_time if group.created_date == doc_date else time(0)
            zone = self.options.tz
        return datetime.combine(doc_date, doc_time, zone).astimezone(timezone.utc)

    def sku(self, seg: Segment, pairs: tuple[tuple[int, int], ...], upc_element: int | None) -> str:
        found: dict[str, str] = {}
        for q, v in pairs:
            qualifier, value = seg.get(q), seg.get(v)
            if qualifier or value:
                if not (qualifier and value):
                    missing = v if qualifier else q
                    raise seg.error(
                        f"{seg.ref(q)} qualifier and {seg.ref(v)} item id must be given together", missing
                    )
                found.setdefault(qualifier, value)
        for qualifier in self.options.item_qualifiers:
            if qualifier in found:
                return found[qualifier]
        upcs = [found[q] for q in UPC_QUALIFIERS if q in found]
        if upc_element is not None and seg.get(upc_element):
            upcs.append(seg.get(upc_element))
        if upcs and self.options.upc_map:
            for upc in upcs:
                if upc in self.options.upc_map:
                    return self.options.upc_map[upc]
        given = ", ".join(f"{q} {v}" for q, v in found.items()) or "none"
        hint = f"; UPC {upcs[0]} is not in upc_map" if upcs and self.options.upc_map else ""
        hint = hint or ("; items given only by UPC need a upc_map" if upcs else "")
        raise seg.error(
            f"no item id with a qualifier we map to a SKU ({'/'.join(self.options.item_qualifiers)}); "
            f"item ids given: {given}{hint}",
            pairs[0][0],
        )

    def check_unit(self, seg: Segment, n: int, *, component: bool = False) -> None:
        unit = seg.component(n) if component else seg.get(n)
        if unit and unit not in self.options.unit_codes:
            raise seg.error(
                f"unit of measure {unit!r} is not supported: quantities must be in eaches "
                f"({', '.join(sorted(self.options.unit_codes))})",
                n,
            )

    def event(
        self,
        seg: Segment,
        *,
        key: tuple[str, ...],
        type: str,
        sku: str,
        location: str,
        quantity: int,
        occurred_at: datetime,
        reference: str | None,
        reason: str | None = None,
    ) -> StockEvent:
        event = StockEvent(
            event_id=_stable_id(SOURCE, self.ts.code, self.sender, *key),
            type=type,  # type: ignore[arg-type]
            source=SOURCE,
            occurred_at=occurred_at,
            sku=sku,
            location=location,
            quantity=quantity,
            reference=reference,
            reason=reason,
            correlation_id=self.correlation_id,
        )
        try:
            return validate_event(event)
        except InvalidEvent as exc:
            raise seg.error(exc.detail) from None


def _lines(segments: list[Segment], item_tag: str) -> list[tuple[str, Segment, list[Segment]]]:
    """(line key, item segment, the segments of its loop) for each item segment.

    The key is the LX-01 assigned number when the item sits alone in its LX loop,
    ``LX.n`` when an LX loop holds several items, and the item's ordinal in the set when
    there is no LX at all.
    """
    items: list[tuple[str | None, Segment, list[Segment]]] = []
    lx: str | None = None
    for seg in segments:
        if seg.tag == "LX":
            lx = seg.require(1, "assigned number")
        elif seg.tag == item_tag:
            items.append((lx, seg, []))
        elif items:
            items[-1][2].append(seg)
    per_lx: dict[str, int] = {}
    for lx_number, _seg, _loop in items:
        if lx_number is not None:
            per_lx[lx_number] = per_lx.get(lx_number, 0) + 1
    keyed: list[tuple[str, Segment, list[Segment]]] = []
    nth: dict[str, int] = {}
    for ordinal, (lx_number, seg, loop) in enumerate(items, start=1):
        if lx_number is None:
            key = str(ordinal)
        elif per_lx[lx_number] == 1:
            key = lx_number
        else:
            nth[lx_number] = nth.get(lx_number, 0) + 1
            key = f"{lx_number}.{nth[lx_number]}"
        keyed.append((key, seg, loop))
    return keyed


# --------------------------------------------------------------------------- transaction sets


class _LineItems(NamedTuple):
    """Where a line-itemised advice (944, 945) keeps its quantities, items and control total."""

    tag: str
    quantity_element: int
    quantity_label: str
    unit_element: int
    sku_elements: tuple[tuple[int, int], ...]
    upc_element: int
    total_tag: str
    total_label: str
    document_label: str


def _line_item_events(
    ctx: "_Context", ts: TransactionSet, spec: _LineItems, *, document: str, type: str, location: str,
    occurred_at: datetime, reference: str | None,
) -> list[StockEvent]:
    """One event per non-zero line item; the control total segment must match their sum."""
    events: list[StockEvent] = []
    total = 0
    lines = 0
    for key, item, _loop in _lines(ts.segments, spec.tag):
        lines += 1
        quantity = _quantity(item, spec.quantity_element, spec.quantity_label)
        ctx.check_unit(item, spec.unit_element)
        sku = ctx.sku(item, spec.sku_elements, upc_element=spec.upc_element)
        total += quantity
        if quantity:
            events.append(
                ctx.event(item, key=(document, key), type=type, sku=sku, location=location, quantity=quantity,
                          occurred_at=occurred_at, reference=reference)
            )
    if not lines:
        raise ts.st.error(f"{spec.document_label} {document} has no {spec.tag} line items")
    for seg in ts.segments:
        if seg.tag == spec.total_tag:
            expected = _quantity(seg, 1, spec.total_label)
            if expected != total:
                raise seg.error(
                    f"{spec.total_label} {expected} does not match the sum of "
                    f"{spec.tag}-{spec.quantity_element:02d} quantities ({total})",
                    1,
                )
    return events



def parse_944(ts: TransactionSet, options: X12Options = DEFAULT_OPTIONS) -> list[StockEvent]:
    """944 Warehouse Stock Transfer Receipt Advice -> `receipt` events."""
    ctx = _Context(ts, options)
    w17 = ctx.first("W17", "warehouse receipt identification")
    receipt_date = _date(w17, 2, "receipt date")
    receipt_number = w17.require(3, "warehouse receipt number")
    # The ledger draws a referenced receipt down from `incoming`: only a PO / transfer
    # number belongs here, never the warehouse's own receipt number.
    reference = w17.get(4) or None
    occurred_at = ctx.moment(receipt_date, _time(w17, 7))
    location = ctx.location(("WH", "ST"))

    return _line_item_events(
        ctx, ts, _LineItems("W07", 1, "quantity received", 2, ((4, 5), (6, 7), (10, 11)), 3, "W14",
                            "total quantity received", "receipt"),
        document=receipt_number, type="receipt", location=location, occurred_at=occurred_at, reference=reference,
    )


def parse_945(ts: TransactionSet, options: X12Options = DEFAULT_OPTIONS) -> list[StockEvent]:
    """945 Warehouse Shipping Advice -> `ship` events."""
    ctx = _Context(ts, options)
    w06 = ctx.first("W06", "warehouse shipment identification")
    order = w06.require(2, "depositor order number")
    ship_date = _date(w06, 3, "shipment date")
    # One order can leave in several shipments: the shipment id keeps their ids apart.
    shipment = w06.require(4, "shipment identification number")
    occurred_at = ctx.moment(ship_date, None)
    location = ctx.location(("SF", "WH"))

    return _line_item_events(
        ctx, ts, _LineItems("W12", 3, "number of units shipped", 5, ((7, 8),), 6, "W03", "total units shipped",
                            "shipment"),
        document=shipment, type="ship", location=location, occurred_at=occurred_at, reference=order,
    )


def parse_947(ts: TransactionSet, options: X12Options = DEFAULT_OPTIONS) -> list[StockEvent]:
    """947 Warehouse Inventory Adjustment Advice -> `adjustment` events."""
    ctx = _Context(ts, options)
    w15 = ctx.first("W15", "warehouse adjustment identification")
    adjustment_date = _date(w15, 1, "adjustment date")
    adjustment = w15.get(2) or w15.get(3)
    if not adjustment:
        raise w15.error("an adjustment number (W15-02 warehouse or W15-03 depositor) is required", 2)
    occurred_at = ctx.moment(adjustment_date, None)
    location = ctx.location(("WH",))
    codes = {**ADJUSTMENT_REASON_CODES, **(options.reason_codes or {})}

    events: list[StockEvent] = []
    lines = 0
    for key, w19, _loop in _lines(ts.segments, "W19"):
        lines += 1
        code = w19.require(1, "adjustment reason code")
        signed = _quantity(w19, 2, "credit/debit quantity", signed=True)
        ctx.check_unit(w19, 3)
        sku = ctx.sku(w19, ((5, 6), (7, 8), (17, 18)), upc_element=4)
        if not signed:
            continue
        if code in codes:
            reason, direction = codes[code]
            # Decreases are often sent unsigned; an increase sent negative is a contradiction.
            if direction > 0 and signed < 0:
                raise w19.error(
                    f"reason code {code} ({reason}, an increase) cannot carry the negative quantity {signed}", 2
                )
        else:
            reason = "found" if signed > 0 else "lost"
        events.append(
            ctx.event(
                w19,
                key=(adjustment, key),
                type="adjustment",
                sku=sku,
                location=location,
                quantity=abs(signed),
                occurred_at=occurred_at,
                reference=adjustment,
                reason=reason,
            )
        )
    if not lines:
        raise ts.st.error(f"adjustment {adjustment} has no W19 line items")
    return events


def parse_846(ts: TransactionSet, options: X12Options = DEFAULT_OPTIONS) -> list[StockEvent]:
    """846 Inventory Inquiry/Advice -> `cycle_count` events (absolute on-hand per item)."""
    ctx = _Context(ts, options)
    bia = ctx.first("BIA", "beginning segment for inventory inquiry/advice")
    report = bia.require(3, "inventory advice reference")
    as_of_date, as_of_time, zone = _date(bia, 4, "advice date"), _time(bia, 5), options.tz
    for seg in ctx.header:
        if seg.tag == "DTM" and seg.get(1) in AS_OF_DTM_QUALIFIERS:
            as_of_date, as_of_time, zone = _date(seg, 2, "as-of date"), _time(seg, 3), _zone(seg, 4, options.tz)
            break
    as_of = ctx.moment(as_of_date, as_of_time, zone)
    # Without a header warehouse every LIN loop must name its own location in an N1.
    header_location = ctx.header_location(("WH", "RL"))

    events: list[StockEvent] = []
    seen: dict[tuple[str, str], int] = {}
    lin_count = 0
    for _key, lin, loop in _lines(ts.segments, "LIN"):
        lin_count += 1
        pairs = tuple((n, n + 1) for n in range(2, 31, 2))
        sku = ctx.sku(lin, pairs, upc_element=None)
        location = header_location
        n1s = [s for s in loop if s.tag == "N1"]
        if n1s:
            location = ctx.map_location(n1s[0])
        if location is None:
            raise lin.error(
                f"item {sku}: no N1 party names the warehouse (WH/RL in the header or N1 in the LIN loop), "
                "and no default_location is set"
            )
        quantities: dict[str, tuple[int, Segment]] = {}
        for qty in (s for s in loop if s.tag == "QTY"):
            qualifier = qty.require(1, "quantity qualifier")
            if qualifier not in options.on_hand_qualifiers:
                continue
            if qualifier in quantities:
                raise qty.error(f"item {sku} has more than one QTY*{qualifier}", 1)
            ctx.check_unit(qty, 3, component=True)
            quantities[qualifier] = (_quantity(qty, 2, f"QTY*{qualifier} quantity"), qty)
        chosen = next((quantities[q] for q in options.on_hand_qualifiers if q in quantities), None)
        if chosen is None:
            raise lin.error(
                f"item {sku} has no QTY with qualifier {'/'.join(options.on_hand_qualifiers)} "
                "(17 on hand, 33 available for sale)"
            )
        quantity, qty_seg = chosen
        if (sku, location) in seen:
            raise lin.error(f"item {sku} at {location} is reported twice (also in segment #{seen[(sku, location)]})")
        seen[(sku, location)] = lin.position
        events.append(
            ctx.event(
                qty_seg,
                key=(report, location, sku),
                type="cycle_count",
                sku=sku,
                location=location,
                quantity=quantity,
                occurred_at=as_of,
                reference=report,
            )
        )
    if not lin_count:
        raise ts.st.error(f"inventory advice {report} has no LIN items")
    for seg in ts.segments:
        if seg.tag == "CTT":
            expected = _int(seg, 1, "number of line items")
            if expected != lin_count:
                raise seg.error(f"CTT-01 says {expected} line items but the advice has {lin_count} LIN segments", 1)
    return events


TRANSACTION_PARSERS: dict[str, Callable[[TransactionSet, X12Options], list[StockEvent]]] = {
    "944": parse_944,
    "945": parse_945,
    "947": parse_947,
    "846": parse_846,
}


def parse_transaction_set(ts: TransactionSet, options: X12Options = DEFAULT_OPTIONS) -> list[StockEvent]:
    """Map one enveloped transaction set by its ST-01 code."""
    parser = TRANSACTION_PARSERS.get(ts.code)
    if parser is None:
        raise ts.st.error(
            f"transaction set {ts.code} is not supported (supported: {', '.join(sorted(TRANSACTION_PARSERS))})", 1
        )
    expected = FUNCTIONAL_IDS[ts.code]
    if ts.group.functional_id != expected:
        raise ts.group.gs.error(
            f"functional identifier {ts.group.functional_id!r} does not match transaction set {ts.code} "
            f"(expected {expected})",
            1,
        )
    return parser(ts, options)


def parse_x12(
    data: str | bytes,
    location_map: Mapping[str, str] | None = None,
    *,
    options: X12Options | None = None,
    **option_fields: object,
) -> list[StockEvent]:
    """Parse a whole X12 file into canonical events (all or nothing). Raises `EdiError`.

    `location_map` and any `X12Options` field may be given as keywords, or a prepared
    `options` object (then `location_map` overrides its map when given).
    """
    if options is None:
        options = X12Options(location_map=location_map, **option_fields)  # type: ignore[arg-type]
    elif location_map is not None or option_fields:
        fields = dict(option_fields)
        if location_map is not None:
            fields["location_map"] = location_map
        options = replace(options, **fields)  # type: ignore[arg-type]
    events: list[StockEvent] = []
    first_seen: dict[str, int] = {}
    for interchange in parse_interchanges(data):
        if interchange.usage != "P" and not options.accept_test:
            raise interchange.isa.error(
                f"test interchange (ISA-15 = {interchange.usage}) refused: only production data is applied "
                "(set accept_test to override)",
                15,
            )
        for ts in interchange.transaction_sets():
            for event in parse_transaction_set(ts, options):
                if event.event_id in first_seen:
                    raise ts.st.error(
                        f"event id {event.event_id} is produced twice in this file (also by segment "
                        f"#{first_seen[event.event_id]}): the document numbers are not unique"
                    )
                first_seen[event.event_id] = ts.st.position
                events.append(event)
    return events
