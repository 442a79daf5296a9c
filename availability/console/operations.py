"""The operations page's data and actions, from the areas that own them.

Each section reads what its area already exposes (the ingest pipeline's lag per
partition, the dead-letter stream, the Shopify push's metrics and the stored mappings,
the order flow's exception queue) and says what a person would do about it. A section
whose area is not installed in this build says so instead of failing the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger("availability.console")

DEAD_LETTERS_SHOWN = 20
UNMAPPED_SHOWN = 20
FLOW_EXCEPTIONS_SHOWN = 50


@dataclass
class Section:
    available: bool = True
    note: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


async def consumer_lag(runtime: "Runtime") -> Section:
    try:
        from availability.ingest.pipeline import IngestPipeline  # noqa: PLC0415
        from availability.ingest.reclaim import Reclaimer  # noqa: PLC0415
        from availability.ingest.streams import StreamNames  # noqa: PLC0415
    except ModuleNotFoundError:
        return Section(False, "the ingest area is not installed in this build")
    names = StreamNames.from_settings(runtime.settings)
    reclaimer = Reclaimer(runtime.redis, names, IngestPipeline(runtime.ledger, names), "console")
    observed = await reclaimer.observe()
    rows = []
    for p in range(names.partitions):
        lag, pending = observed.get(p, (0, 0))
        rows.append({"partition": names.partition(p), "lag": lag, "pending": pending, "seen": p in observed})
    return Section(rows=rows, total=sum(r["lag"] for r in rows))


def dead_letter_queue(runtime: "Runtime"):
    from availability.ingest.deadletters import DeadLetters  # noqa: PLC0415
    from availability.ingest.streams import StreamNames  # noqa: PLC0415

    return DeadLetters(runtime.redis, StreamNames.from_settings(runtime.settings))


class DeadLetterSection:
    """The latest dead letters and the counts per reason.

    Counting reasons reads the whole dead-letter stream, which can hold thousands of
    letters: the counts are kept and read again only when the stream has moved (its length,
    last id or last deletion changed), so a visit costs one XINFO STREAM and one short
    XRANGE, not a scan."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._seen: tuple | None = None
        self._reasons: dict[str, int] = {}

    async def section(self) -> Section:
        try:
            dlq = dead_letter_queue(self.runtime)
        except ModuleNotFoundError:
            return Section(False, "the ingest area is not installed in this build")
        letters = await dlq.list(limit=DEAD_LETTERS_SHOWN)
        rows = [
            {
                "id": letter.id,
                "reason": letter.reason,
                "stream": letter.stream,
                "detail": getattr(letter, "detail", "") or "",
                "payload": letter.payload_text()[:300],
                "truncated": letter.truncated,
            }
            for letter in letters
        ]
        try:
            info = await self.runtime.redis.xinfo_stream(dlq.names.dlq)
        except ResponseError:  # no dead letter was ever written
            self._seen, self._reasons = None, {}
            return Section(rows=rows, total=0, extra={"reasons": {}})
        total = int(info.get("length", 0))
        seen = (total, info.get("last-generated-id"), info.get("max-deleted-entry-id"))
        if seen != self._seen:
            self._reasons = await dlq.reasons()
            self._seen = seen
        return Section(rows=rows, total=total, extra={"reasons": dict(self._reasons)})


async def replay_dead_letter(runtime: "Runtime", dead_letter_id: str) -> str:
    """Replay one dead letter; a message for the page (why not, or how many events went back)."""
    from availability.ingest.publisher import EventPublisher  # noqa: PLC0415
    from availability.ingest.replay import ReplayRefused, UnknownDeadLetter, replay  # noqa: PLC0415

    dlq = dead_letter_queue(runtime)
    async with EventPublisher(runtime) as publisher:
        try:
            events = await replay(runtime, dlq, publisher, dead_letter_id)
        except (ReplayRefused, UnknownDeadLetter) as exc:
            return f"not replayed: {exc.detail}"
    return f"replayed {dead_letter_id}: {events} event(s) published"


class ShopifyPush:
    """Push lag from this process's metrics, and the ledger SKUs no Shopify item is mapped to.

    The item mappings (one row per SKU) are re-read only when the store version moves (every
    mapping write moves it), so the page does not read 10,000 rows on every visit. The
    version is the one the rule cache polls in the background (a second behind at most),
    so a visit asks SQL nothing at all.
    """

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._version: int | None = None
        self._mapped: dict[str, str] = {}
        self._locations: list[tuple[str, str, str]] = []

    async def section(self, skus: list[str]) -> Section:
        store = self.runtime.store
        version = self.runtime.rules.version
        if version != self._version:
            self._mapped = await store.mappings.item_mappings()
            self._locations = await store.mappings.location_mappings()
            self._version = version
        mapped, locations = self._mapped, self._locations
        lag = _histogram("availability_shopify_push_lag_seconds")
        if not mapped and not locations:
            return Section(False, "no Shopify mapping is configured: nothing is pushed "
                           "(`availability shopify import-mappings`)", extra={"lag": lag})
        unmapped = [s for s in skus if s not in mapped]
        return Section(
            rows=[{"sku": s} for s in unmapped[:UNMAPPED_SHOWN]],
            total=len(unmapped),
            extra={"lag": lag, "mapped_items": len(mapped), "mapped_locations": len(locations)},
        )


def _histogram(name: str) -> dict[str, Any] | None:
    """count, mean and an upper bound of p99 from a prometheus-client histogram in this process."""
    from prometheus_client import REGISTRY  # noqa: PLC0415

    count = total = 0.0
    buckets: list[tuple[float, float]] = []
    # Only the one collector (collecting the whole registry renders every metric of the
    # process); the registry's name index is private, so fall back to the whole when absent.
    collector = getattr(REGISTRY, "_names_to_collectors", {}).get(name)
    for metric in collector.collect() if collector is not None else REGISTRY.collect():
        if metric.name != name.removesuffix("_seconds") and metric.name != name:
            continue
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels.get("le", "inf")), sample.value))
    if not count:
        return None
    buckets.sort()
    p99 = next((le for le, seen in buckets if seen >= 0.99 * count), float("inf"))
    return {"count": int(count), "mean_s": total / count, "p99_le_s": p99}


class OrderExceptions:
    """The sync flows' exception queue (orders, returns, finance,
    fulfilment: availability/flows/desk.py),
    opened on first use."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._desk: Any = None

    async def _open(self) -> bool:
        if self._desk is not None:
            return True
        try:
            from availability.flows.desk import ExceptionDesk  # noqa: PLC0415
        except ModuleNotFoundError:
            return False
        settings = self.runtime.settings
        self._desk = ExceptionDesk(settings.resolved_database_url(), self.runtime.redis, settings.key_prefix)
        return True

    async def close(self) -> None:
        if self._desk is not None:
            await self._desk.close()
            self._desk = None

    async def section(self) -> Section:
        if not await self._open():
            return Section(False, "the sync flows are not installed in this build")
        # One row more than is shown: the page says "50+" instead of reading every open row.
        rows = await self._desk.list(status="open", limit=FLOW_EXCEPTIONS_SHOWN + 1)
        return Section(rows=rows[:FLOW_EXCEPTIONS_SHOWN], total=min(len(rows), FLOW_EXCEPTIONS_SHOWN),
                       extra={"more": len(rows) > FLOW_EXCEPTIONS_SHOWN})

    async def retry(self, exception_id: int, by: str) -> str:
        if not await self._open():
            return "the sync flows are not installed in this build"
        try:
            row = await self._desk.retry(exception_id, by=by)
        except KeyError:
            return f"no flow exception {exception_id}"
        return f"exception {exception_id} closed; {row['flow']} document {row['reference']} will be settled again"

    async def resolve(self, exception_id: int, by: str, note: str) -> str:
        if not await self._open():
            return "the sync flows are not installed in this build"
        try:
            row = await self._desk.resolve(exception_id, by=by, note=note)
        except KeyError:
            return f"no flow exception {exception_id}"
        return f"exception {exception_id} resolved ({row['flow']} {row['reference']}); nothing is posted"
