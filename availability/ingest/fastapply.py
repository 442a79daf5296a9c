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
import ssl
from collections.abc import Sequence
from importlib import resources
from urllib.parse import unquote, urlparse

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from availability.domain.events import StockEvent, event_digest, source_code
from availability.ledger.metrics import count_oversells
from availability.ledger.ledger import ApplyResult, Ledger, count_cutoffs, now_ms, parse_apply_reply

try:  # hiredis parses replies in C; optional
    import hiredis

    _Reader = hiredis.Reader
    _ReplyError = hiredis.ReplyError
except ImportError:  # pragma: no cover - exercised only without hiredis
    hiredis = None
    _Reader = None
    _ReplyError = None


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class _PyReader:
    """Minimal RESP2 reader (arrays, bulk strings, integers, simple strings, errors)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def gets(self):
        parsed = self._parse(0)
        if parsed is None:
            return False
        value, end = parsed
        del self.buffer[:end]
        return value

    def _parse(self, pos: int):
        buf = self.buffer
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : eol])
        nxt = eol + 2
        if kind == b"+":
            return line, nxt
        if kind == b"-":
            return ResponseError(line.decode(errors="replace")), nxt
        if kind == b":":
            return int(line), nxt
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, nxt
            if len(buf) < nxt + size + 2:
                return None
            return bytes(buf[nxt : nxt + size]), nxt + size + 2
        if kind == b"*":
            count = int(line)
            items = []
            for _ in range(count):
                parsed = self._parse(nxt)
                if parsed is None:
                    return None
                item, nxt = parsed
                items.append(item)
            return items, nxt
        raise RedisConnectionError(f"unexpected RESP type {kind!r}")


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = _Reader() if _Reader is not None else _PyReader()

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

    def __init__(self, ledger: Ledger, redis_url: str, *, connections: int = 8) -> None:
        self.ledger = ledger
        self.redis_url = redis_url
        self.keys = ledger.keys
        limits = ledger.limits
        source = resources.files("availability.ledger").joinpath("scripts", "apply_event.lua").read_bytes()
        self._sha = _bulk(hashlib.sha1(source).hexdigest().encode())
        # KEYS 5..7 are global; the limits are the same for every event
        self._globals = b"".join(_bulk(k.encode()) for k in (self.keys.dirty, self.keys.journal, self.keys.oversells))
        self._limits_tail = b"".join(
            _bulk(str(v).encode()) for v in (
                limits.journal_cap, limits.delta_log_cap, limits.oversell_cap,
                limits.hold_grace_ms(), limits.tombstone_keep_ms(),
            )
        )
        self._pool: asyncio.Queue[_Conn] = asyncio.Queue()
        self._created = 0
        self._max = connections

    # --- connections ------------------------------------------------------------------------

    async def _connect(self) -> _Conn:
        url = urlparse(self.redis_url)
        if url.scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(url.path)
        else:
            context = ssl.create_default_context() if url.scheme == "rediss" else None
            reader, writer = await asyncio.open_connection(url.hostname or "127.0.0.1", url.port or 6379, ssl=context)
        conn = _Conn(reader, writer)
        setup = []
        if url.password:
            user = unquote(url.username) if url.username else None
            auth = [b"AUTH"] + ([user.encode()] if user else []) + [unquote(url.password).encode()]
            setup.append(auth)
        db = (url.path or "/0").lstrip("/") or "0"
        if url.scheme != "unix" and db != "0":
            setup.append([b"SELECT", db.encode()])
        if setup:
            payload = b"".join(b"*%d\r\n" % len(cmd) + b"".join(_bulk(p) for p in cmd) for cmd in setup)
            for reply in await conn.roundtrip(payload, len(setup)):
                if isinstance(reply, Exception):
                    conn.close()
                    raise RedisConnectionError(f"connection setup failed: {reply}")
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
                    _bulk(keys.holds(sku).encode()) + self._globals + _bulk(keys.count_cuts(sku).encode())
                    + _bulk(keys.ended_holds(sku).encode()) + _bulk(keys.ended_holds_index.encode())
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

    async def apply_batch(self, events: Sequence[StockEvent], *, at_ms: int | None = None) -> list[ApplyResult]:
        if not events:
            return []
        stamp = at_ms if at_ms is not None else now_ms()
        payload = self._encode(events, stamp)
        for attempt in (1, 2):
            replies = await self._send(payload, len(events))
            if attempt == 1 and any(isinstance(r, Exception) and str(r).startswith("NOSCRIPT") for r in replies):
                await self.ledger.load_scripts()
                continue
            break
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
        if _ReplyError is not None:
            replies = [ResponseError(str(r)) if isinstance(r, _ReplyError) else r for r in replies]
        return replies
