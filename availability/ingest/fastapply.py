"""The consumer's hot path: `Ledger.apply_batch` semantics, without redis-py per command.

Profiling the consumer showed ~85% of its CPU in redis-py building and parsing one
EVALSHA per event (argument encoding, a timeout context per reply). This writes the same
EVALSHA commands, with exactly `Ledger._queue_apply`'s KEYS and ARGV, as pre-encoded RESP
on a few dedicated connections and reads the replies with hiredis (a pure-Python reader
when hiredis is not installed). Same script, same atomicity, same idempotency: only the
client-side cost changes. tests/ingest/test_fastapply.py drives it and `Ledger.apply_batch`
with the same random events and requires identical statuses and buckets.

An error reply for one event (the script refused it, having written nothing) comes back
as that event's status "error" with the reason, exactly as `Ledger.apply_batch` reports
it, and the pipeline dead-letters it; a transient error (OOM, READONLY, ...) raises; a
NOSCRIPT (Redis restarted or flushed its script cache) reloads the scripts and re-sends
the batch, which the idempotency records make safe.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from availability.domain.events import StockEvent, event_digest, source_code
from availability.ledger.ledger import (
    BATCH_PER_CALL,
    ApplyResult,
    Ledger,
    count_cutoffs,
    now_ms,
    parse_apply_reply,
    partition_batches,
    scatter_batch_replies,
    script_source,
)
from availability.ledger.metrics import count_oversells
from availability.ledger.resp import Endpoint, args_payload, as_response_errors, bulk, make_reader, setup_failure

_bulk = bulk


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = make_reader()

    async def roundtrip(self, payload: bytes, count: int) -> list:
        self.writer.write(payload)
        await self.writer.drain()
        replies = []
        parser = self.parser
        while len(replies) < count:
            reply = parser.gets()
            while reply is not False:
                replies.append(reply)
                if len(replies) == count:
                    break
                reply = parser.gets()
            if len(replies) == count:
                break
            data = await self.reader.read(1 << 16)
            if not data:
                raise RedisConnectionError("connection closed by the server")
            parser.feed(data)
        return replies

    def close(self) -> None:
        self.writer.close()


class FastApplier:
    """Applies batches of events like `Ledger.apply_batch`, on its own connections."""

    def __init__(self, ledger: Ledger, redis_url: str, *, connections: int = 8, batched: bool = True,
                 per_call: int = BATCH_PER_CALL) -> None:
        self.ledger = ledger
        self.redis_url = redis_url
        self.endpoint = Endpoint.from_url(redis_url)
        self.keys = ledger.keys
        #: one apply_batch.lua call per partition group (True), or one apply_event.lua per event
        self.batched = batched
        self.per_call = per_call
        limits = ledger.limits
        self._sha = _bulk(hashlib.sha1(script_source("apply_event").encode()).hexdigest().encode())
        self._batch_sha = _bulk(hashlib.sha1(script_source("apply_batch").encode()).hexdigest().encode())
        self._limits_tail = b"".join(
            _bulk(str(v).encode()) for v in (
                limits.journal_cap, limits.delta_log_cap, limits.oversell_cap,
                limits.hold_grace_ms(), limits.tombstone_keep_ms(),
            )
        )
        self._pool: asyncio.Queue[_Conn] = asyncio.Queue()
        self._created = 0
        self._max = connections
        #: per-SKU key blocks of apply_batch.lua (bounded), per-partition key blocks, and the
        #: bucket ids they were made for
        self._blocks: dict[str, tuple[list[int], bytes, bytes]] = {}
        self._partition_blocks: dict[int, bytes] = {}
        self._ids: list[int] = []
        self._suffix_ids: list[int] | None = None
        self._suffixes: list[bytes] = []

    # --- connections ------------------------------------------------------------------------

    async def _connect(self) -> _Conn:
        reader, writer = await self.endpoint.open_stream()
        conn = _Conn(reader, writer)
        setup = self.endpoint.setup_commands()
        if setup:
            failed = setup_failure(await conn.roundtrip(b"".join(setup), len(setup)))
            if failed is not None:
                conn.close()
                raise RedisConnectionError(f"connection setup failed: {failed}")
        return conn

    async def _acquire(self) -> _Conn:
        if self._pool.empty() and self._created < self._max:
            self._created += 1
            try:
                return await self._connect()
            except BaseException:
                self._created -= 1
                raise
        return await self._pool.get()

    def _release(self, conn: _Conn | None, *, broken: bool = False) -> None:
        if conn is None:
            return
        if broken:
            conn.close()
            self._created -= 1
        else:
            self._pool.put_nowait(conn)

    async def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait().close()
        self._created = 0

    # --- applying ---------------------------------------------------------------------------

    def _encode(self, events: Sequence[StockEvent], at_ms: int) -> bytes:
        """Exactly `ledger.apply_call`'s KEYS and ARGV, as RESP (a test holds them equal)."""
        keys = self.keys
        limits = self.ledger.limits
        ids, expires = limits.idempotency_buckets_at(at_ms)
        nkeys = 10 + len(ids)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + nkeys + 20 + len(ids)) + self._sha + _bulk(b"%d" % nkeys)
        # what follows the 13 per-event arguments: now, expiry, caps, bucket ids
        tail = (
            _bulk(b"%d" % at_ms) + _bulk(b"%d" % expires) + self._limits_tail
            + b"".join(_bulk(b"%d" % b) for b in ids)
        )
        args13 = b"$%d\r\n%b\r\n" * 13
        per_sku: dict[str, tuple[bytes, bytes]] = {}
        parts: list[bytes] = []
        append = parts.append
        for e in events:
            sku = e.sku
            cached = per_sku.get(sku)
            if cached is None:
                cached = per_sku[sku] = (
                    _bulk(keys.stock(sku).encode()) + _bulk(keys.idempotency_meta(sku).encode()),
                    _bulk(keys.holds(sku).encode())
                    + b"".join(_bulk(k.encode()) for k in (keys.dirty_of(sku), keys.journal_of(sku), keys.oversells_of(sku)))
                    + _bulk(keys.count_cuts(sku).encode())
                    + _bulk(keys.ended_holds(sku).encode()) + _bulk(keys.ended_holds_index_of(sku).encode())
                    + b"".join(_bulk(keys.idempotency_bucket(sku, b).encode()) for b in ids),
                )
            event_id = e.event_id.encode()
            digest = event_digest(e.event_id)
            etype = e.type.encode()
            reason = e.reason.encode() if e.reason else b""
            sku_b = sku.encode()
            loc_b = e.location.encode()
            quantity = b"%d" % e.quantity
            occurred = b"%d" % e.occurred_ms
            reference = e.reference.encode() if e.reference else b""
            channel = e.channel.encode() if e.channel else b""
            source = e.source.encode()
            code = b"%d" % source_code(e.source)
            cuts = count_cutoffs(e, limits.count_lag_ms).encode()
            append(head)
            append(cached[0])
            append(_bulk(keys.delta_log(sku, e.location).encode()))
            append(cached[1])
            append(args13 % (
                len(event_id), event_id, 8, digest, len(etype), etype, len(reason), reason, len(sku_b), sku_b,
                len(loc_b), loc_b, len(quantity), quantity, len(occurred), occurred, len(reference), reference,
                len(channel), channel, len(source), source, len(code), code, len(cuts), cuts,
            ))
            append(tail)
        return b"".join(parts)

    def _sku_block(self, sku: str, ids: list[int]) -> tuple[bytes, bytes]:
        """A SKU's 5 + nb keys of apply_batch.lua as RESP, and its key head (`{prefix}:{pN}:SKU`),
        cached: with the same bucket ids, a hot SKU's keys are encoded once."""
        cached = self._blocks.get(sku)
        if cached is not None and cached[0] is ids:
            return cached[1], cached[2]
        if self._suffix_ids is not ids:
            self._suffix_ids = ids
            self._suffixes = [x.encode() for x in self.keys.BATCH_SKU_SUFFIXES] + [b":idb:%d" % b for b in ids]
        head = self.keys.sku_head(sku).encode()
        size = len(head)
        block = b"".join([b"$%d\r\n%b%b\r\n" % (size + len(suffix), head, suffix) for suffix in self._suffixes])
        if len(self._blocks) >= 131_072:  # about 40 MB at most; a hot SKU is back in its next batch
            self._blocks.clear()
        self._blocks[sku] = (ids, block, head)
        return block, head

    def _encode_batched(self, events: Sequence[StockEvent], at_ms: int) -> tuple[bytes, list[list[int]]]:
        """One EVALSHA apply_batch.lua per partition group: exactly `ledger.batch_call`'s KEYS
        and ARGV (a test holds them equal), built from cached per-SKU key blocks."""
        keys = self.keys
        limits = self.ledger.limits
        ids, expires = limits.idempotency_buckets_at(at_ms)
        if ids != self._ids:
            self._ids = ids  # the same list object while the buckets stay: the block cache's key
        ids = self._ids
        nb = len(ids)
        per_key = 5 + nb
        groups = partition_batches(keys, events, self.per_call)
        head_args = args_payload([at_ms, expires, limits.journal_cap, limits.delta_log_cap, limits.oversell_cap,
                                  limits.hold_grace_ms(), limits.tombstone_keep_ms(), nb, *ids])
        lag = limits.count_lag_ms
        args15 = b"$%d\r\n%d\r\n$%d\r\n%d\r\n" + b"$%d\r\n%b\r\n" * 13
        parts: list[bytes] = []
        for group in groups:
            partition = keys.partition(events[group[0]].sku)
            key_parts = [self._partition_keys(partition)]
            nkeys = 4
            base_of: dict[str, int] = {}
            heads: dict[str, bytes] = {}
            for i in group:
                sku = events[i].sku
                if sku not in base_of:
                    block, heads[sku] = self._sku_block(sku, ids)
                    base_of[sku] = nkeys + 1
                    key_parts.append(block)
                    nkeys += per_key
            dlog_of: dict[tuple[str, str], int] = {}
            for i in group:
                e = events[i]
                pair = (e.sku, e.location)
                if pair not in dlog_of:
                    nkeys += 1
                    dlog_of[pair] = nkeys
                    key_parts.append(_bulk(heads[e.sku] + b":dlog:" + e.location.encode()))
            arg_parts = [head_args]
            for i in group:
                e = events[i]
                base = base_of[e.sku]
                dlog = dlog_of[(e.sku, e.location)]
                event_id = e.event_id.encode()
                etype = e.type.encode()
                reason = e.reason.encode() if e.reason else b""
                sku_b = e.sku.encode()
                loc_b = e.location.encode()
                quantity = b"%d" % e.quantity
                occurred = b"%d" % e.occurred_ms
                reference = e.reference.encode() if e.reference else b""
                channel = e.channel.encode() if e.channel else b""
                source = e.source.encode()
                code = b"%d" % source_code(e.source)
                cuts = count_cutoffs(e, lag).encode()
                arg_parts.append(args15 % (
                    len(b"%d" % base), base, len(b"%d" % dlog), dlog,
                    len(event_id), event_id, 8, event_digest(e.event_id), len(etype), etype, len(reason), reason,
                    len(sku_b), sku_b, len(loc_b), loc_b, len(quantity), quantity, len(occurred), occurred,
                    len(reference), reference, len(channel), channel, len(source), source, len(code), code,
                    len(cuts), cuts,
                ))
            nargs = 8 + nb + 15 * len(group)
            parts.append(b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + nkeys + nargs) + self._batch_sha + _bulk(b"%d" % nkeys))
            parts += key_parts
            parts += arg_parts
        return b"".join(parts), groups

    def _partition_keys(self, partition: int) -> bytes:
        cached = self._partition_blocks.get(partition)
        if cached is None:
            k = self.keys
            cached = self._partition_blocks[partition] = b"".join(_bulk(name.encode()) for name in (
                k.dirty(partition), k.journal(partition), k.oversells(partition), k.ended_holds_index(partition)))
        return cached

    async def apply_batch(self, events: Sequence[StockEvent], *, at_ms: int | None = None) -> list[ApplyResult]:
        if not events:
            return []
        stamp = at_ms if at_ms is not None else now_ms()
        if self.batched:
            payload, groups = self._encode_batched(events, stamp)
            count = len(groups)
        else:
            payload, groups, count = self._encode(events, stamp), None, len(events)
        for attempt in (1, 2):
            replies = await self._send(payload, count)
            if attempt == 1 and any(isinstance(r, Exception) and str(r).startswith("NOSCRIPT") for r in replies):
                await self.ledger.load_scripts()
                continue
            break
        if groups is not None:
            results = scatter_batch_replies(events, groups, replies)
        else:
            results = [parse_apply_reply(event, reply) for event, reply in zip(events, replies)]
        count_oversells(events, results)
        return results

    async def _send(self, payload: bytes, count: int) -> list:
        conn = None
        try:
            conn = await self._acquire()
            replies = await conn.roundtrip(payload, count)
        except (OSError, asyncio.IncompleteReadError, RedisConnectionError) as exc:
            self._release(conn, broken=True)
            raise RedisConnectionError(f"apply connection failed: {exc}") from exc
        except BaseException:
            # Cancelled mid-batch: the connection may hold unread replies; never reuse it.
            self._release(conn, broken=True)
            raise
        self._release(conn)
        return as_response_errors(replies)
