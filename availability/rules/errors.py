"""Errors specific to master data that `availability.domain.errors` has no name for.

They subclass `AvailabilityError` so the API's single problem+json mapping (status
and slug attributes) handles them without knowing about this package. If other
packages come to need them they belong in `availability.domain.errors`.
"""

from __future__ import annotations

from availability.domain.errors import AvailabilityError


class InvalidMasterData(AvailabilityError):
    """A location, channel, category, mapping or import document that cannot mean anything."""

    status = 422
    slug = "invalid-master-data"


class MasterDataInUse(AvailabilityError):
    """A location or channel cannot be deleted while rules or channels still refer to it."""

    status = 409
    slug = "master-data-in-use"
