"""The consumer's one use case: take a batch of raw stream entries, apply what can be
applied, dead-letter what cannot, then acknowledge. Broker-agnostic: the Redis, NATS
and Kafka subscribers (consumer.py) and the reclaimer (reclaim.py) all end here.

Order of effects, and why it is crash safe:
1. decode every entry (msgspec); undecodable or invalid ones become dead letters;
2. apply the valid events in stream order, one Redis pipeline for the batch
   (`Ledger.apply_batch`); each event is atomic and idempotent by itself. An event the
   script refuses (status "error": a corrupt stored value) wrote nothing, not even its
   idempotency record, so it is dead-lettered with the script's reason and a replay after
   the repair applies it;
3. one more pipeline: the dead letters (XADD to the DLQ) and, on Redis Streams, the XACK.
   With `redis_wait_replicas` > 0, the dead letters first, then WAIT until the replicas have
   the batch's writes (ledger and dead letters), then the XACK: an acknowledged entry
   survives its primary's death (docs/scaling.md).
A crash before 3 leaves the whole batch pending; whoever reclaims it applies it again and
the ledger answers `duplicate` for what was already in. A crash between 2 and 3 can at
worst dead-letter an entry twice (the runbook says to replay once); it can never lose or
double-count an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from availability.clusterclient import ReplicationLag, wait_for_replicas
from availability.correlation import current_correlation_id, new_correlation_id
from availability.domain.errors import InvalidEvent
from availability.domain.events import StockEvent, decode_event
from availability.ingest import metrics
from availability.ingest.deadletters import DeadLetter, queue_dead_letters, reason_of
from availability.ingest.streams import StreamNames
from availability.ledger.ledger import TRANSIENT_REPLY_PREFIXES, ApplyResult, Ledger

if TYPE_CHECKING:
    from availability.rules.cache import RuleCache

log = logging.getLogger(__name__)

#: failures of the infrastructure, not of one event: the batch stays pending and is retried
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError, ReplicationLag)

def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(TRANSIENT_REPLY_PREFIXES)


LATE_STATUSES = frozenset({"stale_count", "count_too_old", "inside_count", "released_before"})
CHANGED_STATUSES = frozenset({"applied", "recorded"})


class Entry(msgspec.Struct, array_like=True):
    """One raw message: its id where it came from, its bytes, and where it came from."""

    entry_id: str
    payload: bytes
    stream: str


@dataclass
class BatchReport:
    received: int = 0
    statuses: Tally = field(default_factory=Tally)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    results: list[ApplyResult] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return self.statuses["applied"] + self.statuses["recorded"]


class _Peek(msgspec.Struct):
    """What can still be read from an invalid event, for the dead letter."""

    event_id: str | None = None
    source: str | None = None


_peek = msgspec.json.Decoder(_Peek)


def _peek_ids(payload: bytes) -> tuple[str | None, str | None]:
    try:
        peek = _peek.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # only a hint: deep junk has none
        return None, None
    return (peek.event_id if isinstance(peek.event_id, str) else None), (
        peek.source if isinstance(peek.source, str) else None
    )


class IngestPipeline:
    def __init__(
        self,
        ledger: Ledger,
        names: StreamNames,
        *,
        redis: Redis | None = None,
        rules: RuleCache | None = None,
        applier=None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.ledger = ledger
        #: WAIT for this many replicas before acknowledging (0 = acknowledge at once)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        #: what applies a whole batch: the ledger, or the consumer's FastApplier (same semantics)
        self.applier = applier or ledger
        self.redis = redis or ledger.redis
        self.names = names
        self.rules = rules

    async def process(
        self,
        entries: Sequence[Entry],
        *,
        ack: tuple[str, Sequence[bytes | str]] | None = None,
        dead: Sequence[DeadLetter] = (),
    ) -> BatchReport:
        """Apply a batch; `ack=(stream, ids)` acknowledges them (Redis Streams) once done.

        Raises only for transient failures (Redis unreachable): then nothing is
        acknowledged and the batch is retried by redelivery or reclaim.
        """
        started = time.perf_counter()
        report = BatchReport(received=len(entries))
        report.dead_letters.extend(dead)
        events: list[StockEvent] = []
        origins: list[Entry] = []
        for entry in entries:
            try:
                event = decode_event(entry.payload)
            except InvalidEvent as exc:
                event_id, source = _peek_ids(entry.payload)
                report.dead_letters.append(
                    DeadLetter(
                        reason=reason_of(exc),
                        detail=exc.detail,
                        payload=entry.payload,
                        stream=entry.stream,
                        entry_id=entry.entry_id,
                        source=source,
                        event_id=event_id,
                    )
                )
                continue
            events.append(event)
            origins.append(entry)

        if events:
            token = current_correlation_id.set(_batch_correlation_id(events))
            try:
                report.results = await self._apply(events, origins, report.dead_letters)
            finally:
                current_correlation_id.reset(token)
            self._count(events, report)

        letters = report.dead_letters
        if self.wait_replicas and (events or letters):
            if letters:  # written (and replicated) before the ack that lets go of their entries
                pipe = self.redis.pipeline(transaction=False)
                queue_dead_letters(pipe, self.names, letters)
                await pipe.execute()
                letters = []
            await wait_for_replicas(self.redis, self.wait_replicas, self.wait_timeout_ms, prefix=self.names.prefix)
        if letters or ack:
            pipe = self.redis.pipeline(transaction=False)
            queue_dead_letters(pipe, self.names, letters)
            if ack and ack[1]:
                pipe.xack(ack[0], self.names.group, *ack[1])
            await pipe.execute()
        if entries:
            metrics.BATCH_SIZE.observe(len(entries))
            metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        return report

    async def _apply(
        self, events: list[StockEvent], origins: list[Entry], dead: list[DeadLetter]
    ) -> list[ApplyResult]:
        try:
            results = await self.applier.apply_batch(events)
        except Exception as exc:
            if is_transient(exc):
                raise
            # Something other than a refused event broke the batch (a client-side bug, an
            # impossible value): apply one by one so that the rest still goes in.
            log.warning("batch of %d failed as a whole; applying one by one", len(events), exc_info=True)
            results = []
            for event in events:
                try:
                    results.extend(await self.ledger.apply_batch([event]))
                except Exception as one:
                    if is_transient(one):
                        raise
                    results.append(ApplyResult(event.event_id, "error", None, error=f"{type(one).__name__}: {one}"))
        for event, origin, result in zip(events, origins, results):
            if result.status == "error":
                dead.append(
                    DeadLetter(
                        reason="apply_error",
                        detail=result.error or "refused by the ledger",
                        payload=origin.payload,
                        stream=origin.stream,
                        entry_id=origin.entry_id,
                        source=event.source,
                        event_id=event.event_id,
                    )
                )
        return results

    def _count(self, events: list[StockEvent], report: BatchReport) -> None:
        # Tally per batch, then touch each metric child once: the hot path stays cheap.
        statuses = report.statuses
        changed: Tally = Tally()
        duplicates: Tally = Tally()
        late: Tally = Tally()
        for event, result in zip(events, report.results):
            status = result.status
            statuses[status] += 1
            if status in CHANGED_STATUSES:
                changed[(event.type, event.source)] += 1
            elif status == "duplicate":
                duplicates[event.source] += 1
            elif status in LATE_STATUSES:
                late[(status, event.source)] += 1
        for status, n in statuses.items():
            metrics.EVENTS_BY_STATUS.labels(status).inc(n)
        for (etype, source), n in changed.items():
            metrics.EVENTS_APPLIED.labels(etype, source).inc(n)
        for source, n in duplicates.items():
            metrics.DUPLICATES.labels(source).inc(n)
        for (status, source), n in late.items():
            metrics.LATE_EVENTS.labels(status, source).inc(n)
        self._count_unknown(events)

    def _count_unknown(self, events: list[StockEvent]) -> None:
        if self.rules is None:
            return
        try:
            book = self.rules.book
        except RuntimeError:
            return
        locations = book.locations
        skus = book.sku_categories
        if not locations and not skus:
            return  # a fresh install lists nothing yet: every code would be "unknown"
        unknown_loc: Tally = Tally()
        unknown_sku: Tally = Tally()
        for event in events:
            if locations and event.location not in locations:
                unknown_loc[event.source] += 1
            if skus and event.sku not in skus:
                unknown_sku[event.source] += 1
        for source, n in unknown_loc.items():
            metrics.UNKNOWN_LOCATIONS.labels(source).inc(n)
        for source, n in unknown_sku.items():
            metrics.UNKNOWN_SKUS.labels(source).inc(n)


def _batch_correlation_id(events: Sequence[StockEvent]) -> str:
    """The id the batch's log lines carry: the events' own when they all share one (a
    producer's unit of work), else the consumer's id for this batch, else a new one."""
    first = events[0].correlation_id
    if first is not None and all(e.correlation_id == first for e in events):
        return first
    return current_correlation_id.get() or new_correlation_id()
