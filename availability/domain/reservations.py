"""Reservation requests and answers (checkout holds), shared by the ledger and the API."""

from __future__ import annotations

from typing import Literal

import msgspec

from availability.domain.errors import InvalidReservation

MAX_LINES = 100
MAX_TTL_SECONDS = 7 * 24 * 3600
#: ttl_seconds that asks for a hold that never expires (kept until committed or released);
#: None asks for the ledger's default TTL
NO_EXPIRY = 0

#: characters a SKU may not contain (key delimiters and the hold record's separator)
_SKU_FORBIDDEN = frozenset("{}|")

ReservationStatus = Literal["held", "committed", "released", "expired", "mixed", "pending"]

#: hold state letters in the ledger -> status words
HOLD_STATES: dict[str, str] = {"H": "held", "C": "committed", "R": "released", "X": "expired", "F": "fulfilled"}


class ReservationLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sku: str
    quantity: int
    #: reserve at this location only; without it the channel's locations are tried by priority
    location: str | None = None


class ReservationRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reservation_id: str
    channel: str
    lines: list[ReservationLine]
    #: None = the ledger's default TTL, NO_EXPIRY (0) = never expires, else seconds
    ttl_seconds: int | None = None


class Allocation(msgspec.Struct, frozen=True):
    location: str
    quantity: int


class ReservedLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    allocations: list[Allocation]


class Reservation(msgspec.Struct, frozen=True):
    reservation_id: str
    channel: str
    status: str
    lines: list[ReservedLine]
    expires_at_ms: int | None = None
    created_at_ms: int | None = None


class ShortLine(msgspec.Struct, frozen=True):
    sku: str
    requested: int
    available: int
    location: str | None = None


def check_request(request: ReservationRequest) -> ReservationRequest:
    """Reject requests that cannot be right. Raises `InvalidReservation`."""
    if not request.reservation_id or len(request.reservation_id) > 200 or "|" in request.reservation_id:
        raise InvalidReservation("reservation_id must be 1..200 characters without '|'")
    if not request.lines:
        raise InvalidReservation("a reservation needs at least one line")
    if len(request.lines) > MAX_LINES:
        raise InvalidReservation(f"a reservation has at most {MAX_LINES} lines")
    for index, line in enumerate(request.lines):
        if line.quantity < 1 or line.quantity > 1_000_000:
            raise InvalidReservation(f"line {index}: quantity must be between 1 and 1000000")
        if not line.sku or len(line.sku) > 128 or not _SKU_FORBIDDEN.isdisjoint(line.sku):
            raise InvalidReservation(f"line {index}: sku must be 1..128 characters without '{{', '}}' or '|'")
    if request.ttl_seconds is not None and not 0 <= request.ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidReservation(f"ttl_seconds must be between 1 and {MAX_TTL_SECONDS} (0: never expires)")
    return request
