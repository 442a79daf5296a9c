"""The hot path's read of stock buckets: one Redis connection, auto-pipelined, parsed by hiredis.

`GET /v1/availability/{sku}` and the batch read one hash per SKU. Through redis-py's asyncio
client that read costs more CPU than the whole web framework does per request (connection
pool checkout, timeouts, command packing and a pure-Python reply parser per call). This
reader keeps the ledger's key layout and bucket format (`KeyLayout.stock`,
`parse_buckets`) and only changes the transport:

- one long-lived connection; every HGETALL issued in the same event-loop turn goes out in
  one write (auto-pipelining), so under load many requests share a round trip;
- replies are parsed by hiredis (C) and matched to requests in order (RESP is in order);
- a lost connection fails the requests in flight (answered 503 by the API) and the next
  request reconnects.

It needs the `hiredis` package and a plain `redis://` URL; otherwise `open_stock_reader`
returns the ledger itself (same `stock_many`), so the API works either way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Iterable, Protocol
from urllib.parse import urlparse

from availability.domain.ats import Buckets
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, parse_buckets
from availability.ledger.resp import Endpoint, setup_failure
from availability.ledger.resp import command as _command

try:  # optional: without it the ledger's redis-py read is used
    import hiredis
except ImportError:  # pragma: no cover - depends on the environment
    hiredis = None  # type: ignore[assignment]

log = logging.getLogger("availability.ledger")

CONNECT_TIMEOUT_SECONDS = 5.0
#: a reply this late means Redis (or the network) is stuck: drop the connection, fail the waiters
REPLY_TIMEOUT_SECONDS = 5.0


def parse_stock(reply: list) -> dict[str, Buckets]:
    """An HGETALL reply of a SKU's stock hash: location -> buckets."""
    return {reply[i].decode(): parse_buckets(reply[i + 1]) for i in range(0, len(reply), 2)}


class StockReader(Protocol):
    async def stock_many(self, skus: Iterable[str]) -> dict[str, dict[str, Buckets]]: ...


class RedisUnavailable(ConnectionError):
    pass


class _Pending:
    __slots__ = ("future", "expected", "replies", "sent_at")

    def __init__(self, future: asyncio.Future, expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list = []
        self.sent_at = sent_at


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.pending: collections.deque[_Pending] = collections.deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.lost: Exception | None = None
        self.loop = asyncio.get_running_loop()
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.watchdog = self.loop.call_later(1.0, self._check_overdue)

    def _check_overdue(self) -> None:
        # A timer per connection instead of a timeout per request: the hot path stays free of it.
        if self.lost is not None:
            return
        if self.pending and self.loop.time() - self.pending[0].sent_at > REPLY_TIMEOUT_SECONDS:
            log.warning("no reply from Redis in %.0f s: dropping the connection", REPLY_TIMEOUT_SECONDS)
            if self.transport is not None:
                self.transport.abort()
            return
        self.watchdog = self.loop.call_later(1.0, self._check_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.lost = exc or RedisUnavailable("connection to Redis closed")
        while self.pending:
            waiter = self.pending.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(RedisUnavailable(f"lost the connection to Redis: {self.lost}"))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False or not self.pending:
                return
            head = self.pending[0]
            head.replies.append(reply)
            if len(head.replies) == head.expected:
                self.pending.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)

    def request(self, payload: bytes, expected: int) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append(_Pending(future, expected, self.loop.time()))
        self.outgoing.append(payload)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outgoing and self.transport is not None and self.lost is None:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PipelinedStockReader:
    def __init__(self, url: str, keys: KeyLayout) -> None:
        self.endpoint = Endpoint.from_url(url)
        self.host, self.port = self.endpoint.host, self.endpoint.port
        self.keys = keys
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and conn.lost is None:
                return conn
            loop = asyncio.get_running_loop()
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(_Connection, self.host, self.port), CONNECT_TIMEOUT_SECONDS
                )
            except (OSError, asyncio.TimeoutError) as exc:
                raise RedisUnavailable(f"cannot connect to Redis at {self.host}:{self.port}: {exc}") from None
            setup = self.endpoint.setup_commands()
            if setup:
                failed = setup_failure(await conn.request(b"".join(setup), len(setup)))
                if failed is not None:
                    conn.close()
                    raise RedisUnavailable(f"Redis refused the connection setup: {failed}")
            self._conn = conn
            return conn

    async def stock_many(self, skus: Iterable[str]) -> dict[str, dict[str, Buckets]]:
        skus = list(dict.fromkeys(skus))
        if not skus:
            return {}
        stock_key = self.keys.stock
        payload = b"".join(_command(b"HGETALL", stock_key(sku).encode()) for sku in skus)
        conn = await self._connection()
        replies = await conn.request(payload, len(skus))
        out: dict[str, dict[str, Buckets]] = {}
        for sku, reply in zip(skus, replies):
            if isinstance(reply, Exception):
                raise RedisUnavailable(f"Redis answered an error reading {sku!r}: {reply}")
            out[sku] = parse_stock(reply)
        return out

    async def stock(self, sku: str) -> dict[str, Buckets]:
        return (await self.stock_many([sku]))[sku]

    def stock_command(self, sku: str) -> bytes:
        return _command(b"HGETALL", self.keys.stock(sku).encode())

    async def stock_raw(self, command: bytes) -> list:
        """One SKU's stock hash as Redis answered it (`[location, buckets, ...]`, bytes), for
        `stock_command(sku)`: the lookup fast path compares it with the reply its cached
        answer was computed from, and parses it (`parse_stock`) only when it differs."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connection()
        reply = (await conn.request(command, 1))[0]
        if isinstance(reply, Exception):
            raise RedisUnavailable(f"Redis answered an error: {reply}")
        return reply

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_stock_reader(redis_url: str, ledger: Ledger) -> StockReader:
    """The pipelined reader when hiredis is installed and the URL is plain redis://, else the ledger."""
    if hiredis is None:
        log.info("hiredis is not installed: availability reads go through redis-py")
        return ledger
    if urlparse(redis_url).scheme != "redis":
        log.info("availability reads go through redis-py for %s URLs", urlparse(redis_url).scheme)
        return ledger
    return PipelinedStockReader(redis_url, ledger.keys)
