"""DLQ replay: put a dead letter's payload (original, or edited by an operator) back on
the partition stream, then remove it from the dead-letter stream.

- A letter from a partition stream (the consumer refused it) is re-published as is: to the
  partition of its SKU when the payload parses, else to the partition it came from
  (`--force`, e.g. to see it fail again after a code fix).
- A letter from an intake (`intake:{format}`) is parsed again with that format (an ERP
  row, a POS transaction, a Shopify webhook body) and its events are published.

The payload is checked before anything is published: a payload that would fail again is
refused (and the letter kept) unless forced. Replaying an event that was in fact already
applied is harmless: the ledger answers `duplicate`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from availability.domain.errors import AvailabilityError, InvalidEvent
from availability.domain.events import StockEvent, decode_event
from availability.ingest.deadletters import DeadLetter, DeadLetters
from availability.ingest.sources import INTAKE_PREFIX, Rejected, iter_items

if TYPE_CHECKING:
    from availability.bootstrap import Runtime
    from availability.ingest.publisher import EventPublisher


class ReplayRefused(AvailabilityError):
    status = 422
    slug = "replay-refused"


class UnknownDeadLetter(AvailabilityError):
    status = 404
    slug = "unknown-dead-letter"


async def events_of(runtime: Runtime, letter: DeadLetter, payload: bytes) -> list[StockEvent]:
    """The canonical events a payload stands for. Raises `InvalidEvent`."""
    if letter.stream.startswith(INTAKE_PREFIX):
        fmt = letter.stream[len(INTAKE_PREFIX):]
        if fmt.startswith("shopify:"):
            from availability.ingest.http import map_shopify_payload

            return await map_shopify_payload(runtime, fmt.split(":", 1)[1], payload)
        events: list[StockEvent] = []
        for item in iter_items(fmt, io.BytesIO(payload)):
            if isinstance(item, Rejected):
                raise InvalidEvent(f"{item.where}: {item.reason}")
            events.append(item)
        return events
    return [decode_event(payload)]


async def replay_letter(
    runtime: Runtime,
    dead_letters: DeadLetters,
    publisher: EventPublisher,
    letter: DeadLetter,
    *,
    payload: bytes | None = None,
    force: bool = False,
) -> int:
    """Re-publish one dead letter; returns the number of events published."""
    if payload is None and letter.truncated:
        # The stored payload is only its first bytes: parsing them could even succeed (a CSV
        # row cut inside its last field) and apply something the source never said.
        raise ReplayRefused(
            f"dead letter {letter.id} was stored truncated ({len(letter.payload)} of {letter.payload_bytes} bytes): "
            "replay it with the full or an edited payload (--payload-file)"
        )
    body = letter.payload if payload is None else payload
    try:
        events = await events_of(runtime, letter, body)
    except InvalidEvent as exc:
        partition = dead_letters.names.partition_number(letter.stream)
        if not force or partition is None:
            raise ReplayRefused(
                f"dead letter {letter.id} would fail again: {exc.detail}"
                + ("" if partition is None else " (use --force to publish it anyway)"),
            ) from None
        await publisher.publish_raw([(partition, body)])
        await dead_letters.delete(letter.id or "")
        return 1
    if events:
        if letter.stream.startswith(INTAKE_PREFIX):
            await publisher.publish(events)
        else:
            # Exactly the bytes given (original or edited), to the SKU's partition.
            await publisher.publish_encoded([(events[0].sku, body)])
    await dead_letters.delete(letter.id or "")
    return len(events)


async def replay(
    runtime: Runtime,
    dead_letters: DeadLetters,
    publisher: EventPublisher,
    dead_letter_id: str,
    *,
    payload: bytes | None = None,
    force: bool = False,
) -> int:
    letter = await dead_letters.get(dead_letter_id)
    if letter is None:
        raise UnknownDeadLetter(f"no dead letter {dead_letter_id!r}")
    return await replay_letter(runtime, dead_letters, publisher, letter, payload=payload, force=force)


async def replay_all(
    runtime: Runtime,
    dead_letters: DeadLetters,
    publisher: EventPublisher,
    *,
    reason: str | None = None,
    force: bool = False,
    progress: Callable[[int], object] | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Replay every dead letter (of one reason kind). Returns (replayed, [(id, why kept)]).
    `progress(1)` is called after each letter, replayed or kept."""
    replayed = 0
    kept: list[tuple[str, str]] = []
    after = "-"
    while True:
        page = await dead_letters.list(limit=500, reason=reason, after=after)
        if not page:
            break
        for letter in page:
            try:
                await replay_letter(runtime, dead_letters, publisher, letter, force=force)
                replayed += 1
            except ReplayRefused as exc:
                kept.append((letter.id or "", exc.detail))
            if progress is not None:
                progress(1)
        after = "(" + (page[-1].id or "")
    return replayed, kept
