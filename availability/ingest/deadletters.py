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

See docs/runbooks/dead-letters.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis

from availability.domain.errors import InvalidEvent
from availability.ingest import metrics
from availability.ingest.streams import StreamNames

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

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reason": self.reason,
            "detail": self.detail[:2000],
            "payload": self.payload,
            "stream": self.stream,
            "entry_id": self.entry_id,
            "at": self.at or int(time.time() * 1000),
        }
        if self.source:
            out["source"] = self.source
        if self.event_id:
            out["event_id"] = self.event_id
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


def queue_dead_letters(pipe, names: StreamNames, letters: Iterable[DeadLetter]) -> int:
    count = 0
    for letter in letters:
        pipe.xadd(names.dlq, letter.fields())
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
    )


class DeadLetters:
    def __init__(self, redis: Redis, names: StreamNames) -> None:
        self.redis = redis
        self.names = names

    async def add(self, letters: Iterable[DeadLetter]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        count = queue_dead_letters(pipe, self.names, letters)
        if count:
            await pipe.execute()
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
