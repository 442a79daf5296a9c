"""Named domain errors. The API maps them to problem+json in one place (availability/api)."""

from __future__ import annotations


class AvailabilityError(Exception):
    """Base of every error the domain raises on purpose."""

    #: HTTP status the API answers with
    status = 400
    #: short stable problem type slug, used in problem+json `type`
    slug = "availability-error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = {k: v for k, v in extra.items() if v is not None}


class InvalidEvent(AvailabilityError):
    """An event that fails validation: it goes to the dead-letter stream with this reason."""

    status = 422
    slug = "invalid-event"


class InvalidRule(AvailabilityError):
    status = 422
    slug = "invalid-rule"


class StaleRuleVersion(AvailabilityError):
    """An update named a rule version that is no longer the current one."""

    status = 409
    slug = "stale-rule-version"


class UnknownRule(AvailabilityError):
    status = 404
    slug = "unknown-rule"


class UnknownChannel(AvailabilityError):
    status = 404
    slug = "unknown-channel"


class UnknownLocation(AvailabilityError):
    status = 404
    slug = "unknown-location"


class UnknownReservation(AvailabilityError):
    status = 404
    slug = "unknown-reservation"


class InvalidReservation(AvailabilityError):
    status = 422
    slug = "invalid-reservation"


class ReservationConflict(AvailabilityError):
    """The reservation id exists with other lines, or is already released / committed."""

    status = 409
    slug = "reservation-conflict"


class ReservationInProgress(AvailabilityError):
    """Another attempt under this reservation id is still placing (or rolling back) its holds."""

    status = 409
    slug = "reservation-in-progress"

    def __init__(self, detail: str, *, retry_after: int, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": str(retry_after)}


class ReservationTimeout(AvailabilityError):
    """The attempt outlived its lease (the ledger was too slow); nothing is held, retry."""

    status = 503
    slug = "reservation-timeout"
    headers = {"Retry-After": "1"}


class InsufficientStock(AvailabilityError):
    """Not every line of a reservation could be held; nothing was held."""

    status = 409
    slug = "insufficient-stock"

    def __init__(self, detail: str, short_lines: list[dict]) -> None:
        super().__init__(detail)
        self.short_lines = short_lines
        self.extra = {"short_lines": short_lines}
