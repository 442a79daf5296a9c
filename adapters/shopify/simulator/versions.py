"""What differs between Admin API versions, as Shopify's reference and changelog say.

Documented (shopify.dev changelog "Concurrency protection features", Dec 2025, and the
per-version enum pages):

* ``@idempotent(key:)`` exists from 2026-01 (optional) and is mandatory at runtime for
  inventory mutations from 2026-04 (the schema still shows it optional).
* ``changeFromQuantity`` exists from 2026-01 and must be present (number or null) from
  2026-04; ``compareQuantity`` / ``ignoreCompareQuantity`` are deprecated in 2026-01 and
  removed in 2026-07.
* ``InventorySetQuantitiesUserErrorCode`` in 2026-01 lists ``INVALID_QUANTITY_TOO_LOW``
  and the idempotency codes ``IDEMPOTENCY_CONCURRENT_REQUEST`` and
  ``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``; ``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED`` is
  listed on the 2026-10 page and not on the 2026-01 one (shopify.md lists it with the
  2026-04 rules).
* Bulk operations: up to five at once per shop from 2026-01 (one query and one mutation
  before); ``bulkOperation(id:)`` query from 2026-01; ``groupObjects`` removed from
  ``bulkOperationRunMutation`` in 2026-01.

The simulator's own choices (not documented by Shopify):

* ``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED`` from 2026-04, with mandatory idempotency (the
  2026-04 and 2026-07 enum pages were not seen; 2026-01 lacks it, 2026-10 has it). On versions without it, a key whose earlier attempt failed before doing
  anything is simply claimed again and the request runs.
* ``CHANGE_FROM_QUANTITY_REQUIRED`` (2026-04 and later) names the error Shopify returns
  when ``changeFromQuantity`` is omitted without naming its code; it is added to the
  enum of those versions.
* The same 2026-04 rule is applied to ``inventoryAdjustQuantities``.
* ``unstable`` is treated as newer than every dated version.
"""

from __future__ import annotations

IDEMPOTENT_SINCE = "2026-01"
IDEMPOTENCY_REQUIRED_SINCE = "2026-04"
CHANGE_FROM_SINCE = "2026-01"
CHANGE_FROM_REQUIRED_SINCE = "2026-04"
COMPARE_REMOVED_IN = "2026-07"
PREVIOUS_ATTEMPT_FAILED_SINCE = "2026-04"  # sim choice of boundary, see above
CONCURRENT_BULK_SINCE = "2026-01"


def version_key(version: str) -> tuple[int, int]:
    if version == "unstable":
        return (9999, 99)
    year, month = version.split("-")
    return (int(year), int(month))


def at_least(version: str, since: str) -> bool:
    return version_key(version) >= version_key(since)


class Features:
    """The switches of one API version."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.idempotent_directive = at_least(version, IDEMPOTENT_SINCE)
        self.idempotency_required = at_least(version, IDEMPOTENCY_REQUIRED_SINCE)
        self.change_from = at_least(version, CHANGE_FROM_SINCE)
        self.change_from_required = at_least(version, CHANGE_FROM_REQUIRED_SINCE)
        self.compare_quantity = not at_least(version, COMPARE_REMOVED_IN)
        self.previous_attempt_failed = at_least(version, PREVIOUS_ATTEMPT_FAILED_SINCE)
        self.concurrent_bulk = at_least(version, CONCURRENT_BULK_SINCE)
        self.max_bulk_operations = 5 if self.concurrent_bulk else 1

    def key(self) -> tuple[bool, ...]:
        """Versions with the same switches share one schema."""
        return (
            self.idempotent_directive,
            self.change_from,
            self.change_from_required,
            self.compare_quantity,
            self.previous_attempt_failed,
            self.concurrent_bulk,
        )
