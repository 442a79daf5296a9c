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
no order. A reader can take a subset of the partitions (`partitions=`): a backtest's worker
processes split them, each reading only its own streams.

Two shapes of an entry: `JournalEntry` (decoded, typed: tools and tests), and the raw
fields dict XRANGE gives (`raw_pages`), which the backtest reads directly with the `F_*`
names below, because building a typed object per entry costs more than replaying it.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence

import msgspec
from redis.asyncio import Redis

from availability.ledger.keys import KeyLayout
from availability.ledger.resp import command

#: entries per XRANGE page: big enough that a round trip is a small share of a page's cost
PAGE = 5000

#: the reservation actions whose event id is "action:RESERVATION_ID"
RESERVATION_ACTIONS = frozenset({"reserve", "release", "commit", "expire", "rollback", "refuse"})

ZERO = (0, 0, 0, 0, 0)

# The fields' names, for readers of raw entries (`raw_pages`): only this module spells them.
F_EVENT, F_TYPE, F_SKU, F_LOCATION, F_QUANTITY, F_STATUS = b"e", b"t", b"s", b"l", b"q", b"st"
F_BEFORE, F_AFTER, F_CHANNEL, F_ORDER = b"b", b"a", b"c", b"r"
#: the buckets of an entry without them (as `_buckets` reads a missing field)
ZERO_RAW = b"0,0,0,0,0"
_RESERVATION_ACTIONS_RAW = frozenset(a.encode() for a in RESERVATION_ACTIONS)

RawEntry = dict[bytes, bytes]
RawPage = list[tuple[bytes, RawEntry]]


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


def raw_order(fields: RawEntry) -> bytes:
    """The order a raw entry belongs to (b'' when none): as `decode_entry` reads it."""
    order = fields.get(F_ORDER)
    if order is not None:
        return order
    if fields.get(F_TYPE) in _RESERVATION_ACTIONS_RAW:
        event_id = fields.get(F_EVENT, b"")
        if b":" in event_id:
            return event_id.split(b":", 1)[1]
    return b""


def encode_entry(entry: JournalEntry) -> RawEntry:
    """A `JournalEntry` back as the fields it was read from (`decode_entry` gives it back):
    how typed entries (tests, tools) are fed to readers of raw entries."""

    def buckets(values: tuple[int, ...]) -> bytes:
        return ",".join(map(str, values)).encode()

    fields = {
        F_EVENT: entry.event_id.encode(), F_TYPE: entry.type.encode(), F_SKU: entry.sku.encode(),
        F_LOCATION: entry.location.encode(), F_QUANTITY: str(entry.quantity).encode(),
        F_STATUS: entry.status.encode(), F_BEFORE: buckets(entry.before), F_AFTER: buckets(entry.after),
        F_CHANNEL: entry.channel.encode(),
    }
    if entry.order:
        fields[F_ORDER] = entry.order.encode()
    return fields


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
    redis: Redis, keys: KeyLayout, *, since_ms: int, until_ms: int, page: int = PAGE,
    partitions: Sequence[int] | None = None,
) -> AsyncIterator[RawPage]:
    """The journal's entries written in [since_ms, until_ms], partition by partition (all of
    them, or those in `partitions`), each partition's oldest first, as XRANGE pages
    (undecoded: the backtest reads them so, and the benchmark's read ceiling too).

    One request at a time, awaited here: a page asked for ahead while the caller replays
    the last one for longer than the client's socket timeout would time out unread."""
    end = f"{until_ms}-18446744073709551615"
    first = f"{max(0, since_ms)}-0"
    streams = keys.all_journals() if partitions is None else [keys.journal(p) for p in partitions]
    for stream in streams:
        start = first
        while True:
            items = await redis.xrange(stream, start, end, count=page)
            if not items:
                break
            yield items
            if len(items) < page:
                break
            last = items[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def partition_shards(keys: KeyLayout, count: int) -> list[list[int]]:
    """The partitions split into `count` shards (a SKU is in one partition, so in one shard)."""
    return [list(keys.range())[index::count] for index in range(count)]


async def read_journal(
    redis: Redis, keys: KeyLayout, *, since_ms: int, until_ms: int, page: int = PAGE,
    shard: tuple[int, int] | None = None, partitions: Sequence[int] | None = None,
) -> AsyncIterator[tuple[int, list[JournalEntry]]]:
    """The journal's entries written in [since_ms, until_ms], oldest first, decoded, a page
    at a time, each with how many entries the page read (a shard keeps only its SKUs').
    Within one SKU the order is the order the ledger applied them in."""
    async for items in raw_pages(redis, keys, since_ms=since_ms, until_ms=until_ms, page=page, partitions=partitions):
        yield len(items), decode_page(items, shard)


async def estimate_entries(redis: Redis, keys: KeyLayout, *, since_ms: int, until_ms: int) -> int:
    """About how many entries [since_ms, until_ms] holds, without reading them (Redis cannot
    count a range): per partition, the whole stream when the window reaches back past its
    oldest entry, else the window's share of its time span. A progress total, not a count.
    One pipelined round trip for every partition's length and ends."""
    streams = keys.all_journals()
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xrange(stream, "-", "+", count=1)
        pipe.xrevrange(stream, "+", "-", count=1)
    replies = await pipe.execute()
    total = 0
    for index in range(len(streams)):
        length, oldest, newest = replies[3 * index : 3 * index + 3]
        if not length or not oldest or not newest:
            continue
        first = int(oldest[0][0].split(b"-", 1)[0])
        last = int(newest[0][0].split(b"-", 1)[0])
        if since_ms <= first and until_ms >= last:
            total += length
            continue
        span = max(1, last - first)
        covered = max(0, min(until_ms, last) - max(since_ms, first))
        total += round(length * covered / span)
    return total


def xadd_command(keys: KeyLayout, fields: RawEntry, *, cap: int, streams: dict[bytes, bytes] | None = None) -> bytes:
    """One XADD of raw `fields` (as `raw_pages` reads them) to its SKU's partition journal,
    RESP-encoded for a raw connection (`streams`: a cache of SKU -> stream name). Only the
    benchmark writes the journal this way, to grow a ledger-written journal by copies
    without a round trip or a redis-py command object per entry."""
    sku = fields.get(F_SKU, b"")
    stream = streams.get(sku) if streams is not None else None
    if stream is None:
        stream = keys.journal_of(sku.decode()).encode()
        if streams is not None:
            streams[sku] = stream
    parts = [b"XADD", stream, b"MAXLEN", b"~", b"%d" % cap, b"*"]
    for name, value in fields.items():
        parts.append(name)
        parts.append(value)
    return command(*parts)
