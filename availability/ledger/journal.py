"""Reading the ledger's journal: the one place that knows where it lives and how an entry
is spelt. Everything else (backtests, tools, benchmarks) reads it through here, so when
the journal's layout changes (one stream per partition, for Redis Cluster) only this
module changes.

The journal is one capped stream per ledger partition (`{prefix}:{pN}:journal`, keys.py),
written by the scripts beside the partition's SKUs' keys. It has one entry per bucket
change the Lua scripts made, plus a `refuse` entry per reservation line that was refused:

    e   event id ("reserve:ID", "release:ID", ... for reservations; "refuse:ID" for a refusal)
    t   type (receipt, pos_sale, reserve, release, commit, expire, rollback, refuse, ...)
    s   SKU             l   location ('' on a refusal whose line could go to several)
    q   quantity        st  status (applied, held, released, short, settled_elsewhere, ...)
    b   buckets before  a   buckets after: "on_hand,reserved,allocated,unsellable,incoming"
                            (absent on a refusal: nothing changed)
    c   channel         r   order reference (only when the event names them)

An entry's stream id starts with the Redis time (ms) it was written at, which is what a
time window selects on. The partitions are read one after another: a SKU's entries all sit
in its partition's stream, so each SKU's entries come in the order the ledger applied them
(the backtest replays per SKU and location); across SKUs of different partitions there is
no order.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence

import msgspec
from redis.asyncio import Redis

from availability.ledger.keys import KeyLayout

#: entries per XRANGE page: big enough that a round trip is a small share of a page's cost
PAGE = 5000

#: the reservation actions whose event id is "action:RESERVATION_ID"
RESERVATION_ACTIONS = frozenset({"reserve", "release", "commit", "expire", "rollback", "refuse"})

ZERO = (0, 0, 0, 0, 0)


class JournalEntry(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One journal entry, decoded. `before`/`after` are (on_hand, reserved, allocated,
    unsellable, incoming); equal on a refusal or an event that changed nothing."""

    at_ms: int
    event_id: str
    type: str
    sku: str
    location: str
    quantity: int
    status: str
    before: tuple[int, int, int, int, int]
    after: tuple[int, int, int, int, int]
    #: the channel whose order or sale it was ('' when the event did not say)
    channel: str
    #: the order (reservation id or order reference) it belongs to ('' when none)
    order: str


def _buckets(raw: bytes | None) -> tuple[int, int, int, int, int]:
    if not raw:
        return ZERO
    oh, rs, al, un, inc = raw.split(b",")
    return (int(oh), int(rs), int(al), int(un), int(inc))


def decode_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> JournalEntry:
    """One XRANGE item as a `JournalEntry` (see the module docstring for the fields)."""
    event_id = fields.get(b"e", b"").decode()
    etype = fields.get(b"t", b"").decode()
    before = _buckets(fields.get(b"b"))
    after_raw = fields.get(b"a")
    order = fields.get(b"r")
    if order is not None:
        order_id = order.decode()
    elif etype in RESERVATION_ACTIONS and ":" in event_id:
        order_id = event_id.split(":", 1)[1]
    else:
        order_id = ""
    return JournalEntry(
        int(entry_id.split(b"-", 1)[0]),
        event_id,
        etype,
        fields.get(b"s", b"").decode(),
        fields.get(b"l", b"").decode(),
        int(fields.get(b"q", b"0")),
        fields.get(b"st", b"").decode(),
        before,
        _buckets(after_raw) if after_raw else before,
        fields.get(b"c", b"").decode(),
        order_id,
    )


def decode_page(
    items: Sequence[tuple[bytes, dict[bytes, bytes]]], shard: tuple[int, int] | None = None
) -> list[JournalEntry]:
    """A page decoded; with `shard` (index, count) only the entries of that shard's SKUs
    (`sku_shard`), which are then all of each of those SKUs' entries."""
    if shard is None:
        return [decode_entry(entry_id, fields) for entry_id, fields in items]
    index, count = shard
    return [
        decode_entry(entry_id, fields)
        for entry_id, fields in items
        if zlib.crc32(fields.get(b"s", b"")) % count == index
    ]


def sku_shard(sku: str, count: int) -> int:
    """Which of `count` shards a SKU's entries go to (a backtest's worker processes)."""
    return zlib.crc32(sku.encode()) % count


async def raw_pages(
    redis: Redis, keys: KeyLayout, *, since_ms: int, until_ms: int, page: int = PAGE
) -> AsyncIterator[list[tuple[bytes, dict[bytes, bytes]]]]:
    """The journal's entries written in [since_ms, until_ms], partition by partition, each
    partition's oldest first, as XRANGE pages (undecoded: the benchmark's read ceiling uses
    this too)."""
    end = f"{until_ms}-18446744073709551615"
    for stream in keys.all_journals():
        start: str = f"{max(0, since_ms)}-0"
        while True:
            items = await redis.xrange(stream, start, end, count=page)
            if not items:
                break
            yield items
            if len(items) < page:
                break
            last = items[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


async def read_journal(
    redis: Redis, keys: KeyLayout, *, since_ms: int, until_ms: int, page: int = PAGE,
    shard: tuple[int, int] | None = None,
) -> AsyncIterator[tuple[int, list[JournalEntry]]]:
    """The journal's entries written in [since_ms, until_ms], oldest first, decoded, a page
    at a time, each with how many entries the page read (a shard keeps only its SKUs').
    Within one SKU the order is the order the ledger applied them in."""
    async for items in raw_pages(redis, keys, since_ms=since_ms, until_ms=until_ms, page=page):
        yield len(items), decode_page(items, shard)


async def estimate_entries(redis: Redis, keys: KeyLayout, *, since_ms: int, until_ms: int) -> int:
    """About how many entries [since_ms, until_ms] holds, without reading them (Redis cannot
    count a range): per partition, the whole stream when the window reaches back past its
    oldest entry, else the window's share of its time span. A progress total, not a count."""
    total = 0
    for stream in keys.all_journals():
        length = await redis.xlen(stream)
        if not length:
            continue
        oldest = await redis.xrange(stream, "-", "+", count=1)
        newest = await redis.xrevrange(stream, "+", "-", count=1)
        first = int(oldest[0][0].split(b"-", 1)[0])
        last = int(newest[0][0].split(b"-", 1)[0])
        if since_ms <= first and until_ms >= last:
            total += length
            continue
        span = max(1, last - first)
        covered = max(0, min(until_ms, last) - max(since_ms, first))
        total += round(length * covered / span)
    return total


async def append_raw(redis: Redis, keys: KeyLayout, entries: Sequence[dict[bytes, bytes]], *, cap: int) -> None:
    """Append entries given as their fields (as `raw_pages` reads them), oldest first, in
    one pipeline. Only the benchmark uses it, to grow a ledger-written journal by copies."""
    pipe = redis.pipeline(transaction=False)
    for fields in entries:
        sku = fields.get(b"s", b"")
        pipe.xadd(keys.journal_of(sku.decode() if isinstance(sku, bytes) else str(sku)), fields, maxlen=cap,
                  approximate=True)
    await pipe.execute()
