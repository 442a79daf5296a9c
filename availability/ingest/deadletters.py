"""The dead-letter stream: entries that could not be applied, with why, and the tools to
look at them and put them back.

One stream, `{prefix}:dlq`. Each entry holds:

    reason    a short kind (the metric label): unparseable, invalid, impossible_quantity,
              apply_error, too_many_deliveries, row_error, unmapped
    detail    the human-readable reason (the validation error, the exception)
    payload   the original bytes, exactly as they arrived
    stream    where it came from: a partition stream, a NATS subject, a Kafka topic, or
              an intake name such as `file:erp-csv` / `http:erp-snapshot`
    entry_id  its id there (stream entry id, JetStream sequence, Kafka partition/offset,
              file line number)
    at        when it was dead-lettered (epoch ms)
    source, event_id   when the payload was readable enough to tell
    payload_bytes      only on a letter whose payload was longer than the per-letter cap
                       (Settings.dlq_max_payload_bytes): its original size; `payload`
                       then holds the first cap bytes and cannot be replayed as it is

Bounded: the stream is capped (XADD MAXLEN ~ Settings.dlq_stream_maxlen, oldest trimmed
first; every letter a `DeadLetters.add` trims is counted in
`availability_ingest_dead_letters_not_kept_total{cause="stream_maxlen"}`; trims by
`queue_dead_letters` in a caller's own pipeline, the consumer's, are not counted), and
uploads keep at most Settings.dlq_max_per_request letters each (sources.py `load`).

See docs/runbooks/dead-letters.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis

from availability.domain.errors import InvalidEvent
from availability.ingest import metrics
from availability.ingest.streams import StreamNames

log = logging.getLogger(__name__)

#: defaults of Settings.dlq_stream_maxlen and Settings.dlq_max_payload_bytes, for writers
#: that are not given the settings
STREAM_MAXLEN = 100_000
MAX_PAYLOAD_BYTES = 64 * 1024

REASONS = (
    "unparseable",
    "invalid",
    "impossible_quantity",
    "apply_error",
    "too_many_deliveries",
    "row_error",
    "unmapped",
)


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    reason: str
    detail: str
    payload: bytes
    stream: str
    entry_id: str
    at: int = 0
    source: str | None = None
    event_id: str | None = None
    #: the id of this entry in the dead-letter stream (set when read back)
    id: str | None = None
    #: the payload's original size when it was stored truncated (None: stored whole)
    payload_bytes: int | None = None

    @property
    def truncated(self) -> bool:
        return self.payload_bytes is not None

    def fields(self, max_payload: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
        payload = self.payload
        out: dict[str, Any] = {
            "reason": self.reason,
            "detail": self.detail[:2000],
            "payload": payload,
            "stream": self.stream,
            "entry_id": self.entry_id[:500],
            "at": self.at or int(time.time() * 1000),
        }
        if len(payload) > max_payload:
            out["payload"] = payload[:max_payload]
            out["payload_bytes"] = len(payload)
            metrics.DEAD_LETTERS_TRUNCATED.inc()
        if self.source:
            out["source"] = self.source[:200]
        if self.event_id:
            out["event_id"] = self.event_id[:200]
        return out

    def payload_text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


def reason_of(exc: InvalidEvent) -> str:
    """The reason kind of a decoding/validation failure (messages from domain/events.py)."""
    detail = exc.detail
    if detail.startswith("unparseable"):
        return "unparseable"
    if detail.startswith("quantity"):
        return "impossible_quantity"
    return "invalid"


def queue_dead_letters(
    pipe,
    names: StreamNames,
    letters: Iterable[DeadLetter],
    *,
    maxlen: int = STREAM_MAXLEN,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> int:
    """Queue the XADDs of `letters` on `pipe` (capped stream, payloads truncated to `max_payload`)."""
    count = 0
    for letter in letters:
        pipe.xadd(names.dlq, letter.fields(max_payload), maxlen=maxlen, approximate=True)
        metrics.DEAD_LETTERS.labels(letter.reason).inc()
        count += 1
    return count


def _s(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _from_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    get = fields.get
    return DeadLetter(
        id=_s(entry_id),
        reason=_s(get(b"reason", b"")),
        detail=_s(get(b"detail", b"")),
        payload=get(b"payload", b""),
        stream=_s(get(b"stream", b"")),
        entry_id=_s(get(b"entry_id", b"")),
        at=int(get(b"at", b"0") or 0),
        source=_s(get(b"source")) if get(b"source") else None,
        event_id=_s(get(b"event_id")) if get(b"event_id") else None,
        payload_bytes=int(get(b"payload_bytes")) if get(b"payload_bytes") else None,
    )


class DeadLetters:
    def __init__(
        self,
        redis: Redis,
        names: StreamNames,
        *,
        maxlen: int = STREAM_MAXLEN,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.redis = redis
        self.names = names
        self.maxlen = maxlen
        self.max_payload = max_payload

    @classmethod
    def from_settings(cls, redis: Redis, settings) -> DeadLetters:
        return cls(
            redis,
            StreamNames.from_settings(settings),
            maxlen=settings.dlq_stream_maxlen,
            max_payload=settings.dlq_max_payload_bytes,
        )

    async def add(self, letters: Iterable[DeadLetter]) -> int:
        """Write `letters`; letters the stream cap trims to make room are counted (metric, log).

        One MULTI/EXEC with the stream's length before and after, so the count of trimmed
        letters is exact even beside other writers.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.xlen(self.names.dlq)
        count = queue_dead_letters(pipe, self.names, letters, maxlen=self.maxlen, max_payload=self.max_payload)
        if not count:
            return 0
        pipe.xlen(self.names.dlq)
        replies = await pipe.execute()
        trimmed = replies[0] + count - replies[-1]
        if trimmed > 0:
            metrics.DEAD_LETTERS_NOT_KEPT.labels("stream_maxlen").inc(trimmed)
            metrics.DEAD_LETTER_CAP_HITS.labels("stream").inc()
            log.warning(
                "dead-letter stream %s is at its cap (~%d): %d oldest letters trimmed to make room",
                self.names.dlq,
                self.maxlen,
                trimmed,
            )
        return count

    async def count(self) -> int:
        return await self.redis.xlen(self.names.dlq)

    async def list(self, *, limit: int = 50, reason: str | None = None, after: str = "-") -> list[DeadLetter]:
        """Oldest first. With `reason`, only that kind (scans at most 100 x limit entries)."""
        out: list[DeadLetter] = []
        start = after
        scanned = 0
        while len(out) < limit and scanned < limit * 100:
            page = await self.redis.xrange(self.names.dlq, min=start, max="+", count=max(limit, 100))
            if not page:
                break
            for entry_id, fields in page:
                scanned += 1
                letter = _from_entry(entry_id, fields)
                if reason is None or letter.reason == reason:
                    out.append(letter)
                    if len(out) >= limit:
                        break
            start = "(" + _s(page[-1][0])
        return out

    async def get(self, dead_letter_id: str) -> DeadLetter | None:
        page = await self.redis.xrange(self.names.dlq, min=dead_letter_id, max=dead_letter_id, count=1)
        if not page:
            return None
        return _from_entry(*page[0])

    async def delete(self, dead_letter_id: str) -> bool:
        return bool(await self.redis.xdel(self.names.dlq, dead_letter_id))

    async def reasons(self) -> dict[str, int]:
        """Count per reason kind over the whole stream (for `dlq list` summaries)."""
        counts: dict[str, int] = {}
        start = "-"
        while True:
            page = await self.redis.xrange(self.names.dlq, min=start, max="+", count=1000)
            if not page:
                return counts
            for _, fields in page:
                kind = _s(fields.get(b"reason", b""))
                counts[kind] = counts.get(kind, 0) + 1
            start = "(" + _s(page[-1][0])
