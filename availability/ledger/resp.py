"""RESP on raw sockets for the two hot paths (the consumer's `FastApplier`, the API's
`PipelinedStockReader`) and the apply ceiling: command encoding, a reply reader (hiredis
when installed, else a small pure-Python one) and the connection handshake (AUTH, SELECT)
from a redis:// / rediss:// / unix:// URL. One place, so the three cannot drift apart.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

try:  # hiredis parses replies in C; optional
    import hiredis

    _HiredisReader = hiredis.Reader
    _HiredisError = hiredis.ReplyError
except ImportError:  # pragma: no cover - exercised only without hiredis
    hiredis = None
    _HiredisReader = None
    _HiredisError = None

HAVE_HIREDIS = hiredis is not None


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)


def args_payload(args) -> bytes:
    """Bulk strings of mixed str / bytes / int arguments (the rest of a command)."""
    out = []
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


class PyReader:
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
            if count < 0:
                return None, nxt
            items = []
            for _ in range(count):
                parsed = self._parse(nxt)
                if parsed is None:
                    return None
                item, nxt = parsed
                items.append(item)
            return items, nxt
        raise RedisConnectionError(f"unexpected RESP type {kind!r}")


def make_reader():
    return _HiredisReader() if _HiredisReader is not None else PyReader()


def as_response_errors(replies: list) -> list:
    """hiredis's ReplyError objects as redis-py's ResponseError (what the callers test for)."""
    if _HiredisError is None:
        return replies
    return [ResponseError(str(r)) if isinstance(r, _HiredisError) else r for r in replies]


@dataclass(frozen=True)
class Endpoint:
    """Where a redis URL points, and what a new connection must say first."""

    scheme: str
    host: str
    port: int
    path: str
    username: str | None
    password: str | None
    db: int

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parsed = urlparse(url)
        db = (parsed.path or "/0").lstrip("/") if parsed.scheme != "unix" else "0"
        return cls(
            scheme=parsed.scheme or "redis",
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            path=parsed.path,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            db=int(db or 0),
        )

    def setup_commands(self) -> list[bytes]:
        """AUTH / SELECT, each encoded; empty for a default connection."""
        setup = []
        if self.password is not None:
            user = (self.username.encode(),) if self.username else ()
            setup.append(command(b"AUTH", *user, self.password.encode()))
        if self.db:
            setup.append(command(b"SELECT", str(self.db).encode()))
        return setup

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.scheme == "unix":
            return await asyncio.open_unix_connection(self.path)
        context = ssl.create_default_context() if self.scheme == "rediss" else None
        return await asyncio.open_connection(self.host, self.port, ssl=context)


def setup_failure(replies: list) -> Exception | None:
    """The first error among the handshake's replies, if any."""
    return next((r for r in replies if isinstance(r, Exception)), None)
