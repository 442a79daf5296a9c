"""A lean path for the two lookup routes, in front of Litestar: an ASGI callable here, and
the same answers for Granian's RSGI interface (api/rsgi.py, `single` / `batch`).

`GET /v1/availability/{sku}` and `POST /v1/availability/batch` are most of the traffic, and
through Litestar most of their cost is the framework (routing, parameter parsing and
validation, DI, the response object), not the Redis read or the ATS arithmetic. This
callable answers exactly those two routes itself when the request is plainly valid:

- the same key check, scope check and rate-limit bucket as `security.Gate`;
- the same narrowing, SKU check and ATS as `queries.availability_of` / `availability_batch`
  over the same `StockReader` (pipelined) and the live `RuleBook`;
- the answer encoded with msgspec exactly as Litestar encodes it (same bytes, same
  `content-type` and `content-length`);
- for a single SKU, the stock hash is still read from Redis on every request (one
  HGETALL, pipelined with every other request of the same event-loop turn), but when the
  reply and the RuleBook are the ones the last answer for that (SKU, query) was computed
  from, that answer's bytes are sent again: no parsing, ATS arithmetic or encoding. The
  answer is a pure function of the two, so the bytes are the ones Litestar would send.

Anything else — another route, an odd query string (percent-escapes, repeats, unknown or
empty parameters), a body that is not strict JSON of `BatchRequest`, a missing or refused
key, an unknown channel or location, Redis down — falls through to Litestar untouched (the
buffered body is replayed), so every error is Litestar's own problem+json answer.
tests/api/test_fastpath.py compares both byte for byte.

AVAILABILITY_FAST_LOOKUPS=0 switches it off (the benchmark measures both).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import msgspec

from availability.api.queries import narrow
from availability.api.schemas import MAX_BATCH_SKUS, SKU_PATTERN, BatchAvailability, BatchRequest
from availability.api.security import presented_key
from availability.domain.ats import channel_availability
from availability.domain.errors import UnknownChannel, UnknownLocation
from availability.ledger.stockreader import parse_stock

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

    from availability.api.context import ApiContext

PREFIX = "/v1/availability/"
BATCH_PATH = "/v1/availability/batch"
#: the query parameters of the single lookup, with Litestar's max_length for each
PARAMS = frozenset({"channel", "location", "location_group"})
MAX_PARAM = 128
MAX_SKU = 128
#: answers kept for unchanged stock (about 1 KB each with 3 locations: ~16 MB at most)
MAX_CACHED_ANSWERS = 16_384
_SKU = re.compile(SKU_PATTERN)
#: query values taken as they are; anything needing decoding ('%', '+') goes to Litestar
_PLAIN = re.compile(r"^[A-Za-z0-9_.~:\-]+$")

_HEADERS_JSON = b"application/json"
_encode = msgspec.json.Encoder().encode
_decode_batch = msgspec.json.Decoder(BatchRequest).decode


def enabled_from_env() -> bool:
    return os.environ.get("AVAILABILITY_FAST_LOOKUPS", "1").strip().lower() not in ("0", "false", "no", "off")


class FastLookups:
    def __init__(self, app: "ASGIApp", ctx: "ApiContext", *, enabled: bool | None = None) -> None:
        self.app = app
        self.ctx = ctx
        self.enabled = enabled_from_env() if enabled is None else enabled
        #: requests answered here (tests check the fast path really answered)
        self.answered = 0
        #: (sku, raw query) -> the last answer, given again while the RuleBook and the SKU's
        #: stock hash are what it was computed from (still read from Redis every time)
        self._answers: dict[tuple[str, bytes | str], _Answer] = {}

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if self.enabled and scope["type"] == "http":
            path = scope["path"]
            if path.startswith(PREFIX):
                method = scope["method"]
                if method == "POST" and path == BATCH_PATH:
                    await self._batch(scope, receive, send)
                    return
                if method == "GET":
                    body = await self._single(scope, path[len(PREFIX) :])
                    if body is not None:
                        await self._answer(scope, send, body, "/v1/availability/{sku}")
                        return
        await self.app(scope, receive, send)

    # --- the two routes -------------------------------------------------------------------

    async def _single(self, scope: "Scope", sku: str) -> bytes | None:
        if b"%" in scope.get("raw_path", b""):
            return None
        client = scope.get("client")
        return await self.single(sku, scope["query_string"], presented_key(scope["headers"]), client[0] if client else None)

    async def _batch(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        body, replay = await self._read_body(scope, receive)
        answer = None
        if body is not None:
            client = scope.get("client")
            answer = await self.batch(body, presented_key(scope["headers"]), client[0] if client else None)
        if answer is None:
            await self.app(scope, replay, send)
            return
        await self._answer(scope, send, answer, BATCH_PATH)

    # --- the answers, whatever the server interface (ASGI here, RSGI in api/rsgi.py) ---------

    async def single(self, sku: str, query: bytes | str, key: str | None, client_host: str | None) -> bytes | None:
        """The body of `GET /v1/availability/{sku}?{query}` answered 200, or None: Litestar answers."""
        ctx = self.ctx
        book = ctx.runtime.rules.book
        wanted = (sku, query)
        last = self._answers.get(wanted)
        if last is None or last.book is not book:
            last = None
            plan = _plan(book, sku, query)
            if plan is None:
                return None
        else:
            plan = last.plan  # checked against this same RuleBook when it was first answered
        try:
            if not await self._admit(key, client_host):
                return None
            reader = ctx.reader
            raw_read = getattr(reader, "stock_raw", None)
            if raw_read is not None:
                command = plan.command or reader.stock_command(sku)
                stock = await raw_read(command)
            else:  # the ledger's own read (Redis Cluster): parsed buckets, compared as such
                command = None
                stock = (await reader.stock_many((sku,)))[sku]
            if last is not None and last.stock == stock:
                # Same rules and the same stock as last time: the same answer, byte for byte
                # (channel_availability is a pure function of both).
                body = last.body
            else:
                parsed = parse_stock(stock) if command is not None else stock
                body = _encode(channel_availability(book, sku, plan.channel, parsed, plan.locations))
                if plan.command is None and command is not None:
                    plan = _Plan(plan.channel, plan.locations, command)
                self._remember(wanted, _Answer(book, plan, stock, body))
        except Exception:  # noqa: BLE001 - Litestar answers (and logs) every failure its own way
            return None
        self.answered += 1
        return body

    def _remember(self, wanted: tuple, answer: "_Answer") -> None:
        answers = self._answers
        if wanted not in answers and len(answers) >= MAX_CACHED_ANSWERS:
            del answers[next(iter(answers))]  # the oldest: a hot set stays, memory stays bounded
        answers[wanted] = answer

    async def batch(self, body: bytes, key: str | None, client_host: str | None) -> bytes | None:
        """The body of `POST /v1/availability/batch` (strict JSON) answered 200, or None."""
        ctx = self.ctx
        try:
            data = _decode_batch(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        skus = data.skus
        if not skus or len(skus) > min(ctx.settings.batch_max_skus, MAX_BATCH_SKUS):
            return None
        book = ctx.runtime.rules.book
        try:
            locations = narrow(book, data.channel, data.location, data.location_group)
            if not await self._admit(key, client_host):
                return None
            unique = list(dict.fromkeys(skus))
            stock = await ctx.reader.stock_many(unique)
        except Exception:  # noqa: BLE001
            return None
        items = [channel_availability(book, sku, data.channel, stock[sku], locations) for sku in unique]
        self.answered += 1
        return _encode(BatchAvailability(channel=data.channel, rules_version=book.version, items=items))

    # --- shared steps ---------------------------------------------------------------------

    async def _admit(self, key: str | None, client_host: str | None) -> bool:
        """Gate's decision for a read route, without raising: False = let Litestar refuse it."""
        ctx = self.ctx
        if key is None:
            if not ctx.settings.public_read:
                return False
            bucket = f"ip:{client_host or '?'}"
        else:
            principal = ctx.keys.principal_of_key(key)
            if principal is None or not principal.allows("read"):
                return False
            bucket = f"key:{principal.name}"
        limiter = ctx.limiter
        # A refused take leaves the bucket as it was, so Litestar's own take refuses it the same way.
        return not (limiter.enabled and await limiter.admit(bucket))

    async def _read_body(self, scope: "Scope", receive: "Receive"):
        """(body or None, a receive that replays what was read) — None when Litestar should judge it."""
        length = None
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
        if content_type != _HEADERS_JSON or length is None or not length.isdigit():
            return None, receive
        if int(length) > self.ctx.settings.max_body_bytes:
            return None, receive
        chunks: list[bytes] = []
        messages: list = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)

        async def replay():
            if messages:
                return messages.pop(0)
            return await receive()

        if len(body) != int(length) or messages[-1]["type"] != "http.request":
            return None, replay
        return body, replay

    async def _answer(self, scope: "Scope", send: "Send", body: bytes, template: str) -> None:
        scope["path_template"] = template  # the metrics label Litestar would have set
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                # X-Correlation-Id is added by the app's before_send hook (api/correlation.py),
                # which wraps this send too
                "headers": [(b"content-type", _HEADERS_JSON), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Plan:
    """What a lookup's query means against one RuleBook: channel, locations, the read."""

    __slots__ = ("channel", "locations", "command")

    def __init__(self, channel: str, locations: tuple[str, ...] | None, command: bytes | None) -> None:
        self.channel, self.locations, self.command = channel, locations, command


class _Answer:
    __slots__ = ("book", "plan", "stock", "body")

    def __init__(self, book, plan: _Plan, stock, body: bytes) -> None:
        self.book, self.plan, self.stock, self.body = book, plan, stock, body


def _plan(book, sku: str, query: bytes | str) -> _Plan | None:
    """The checks Litestar's route makes, as a plan; None when Litestar should answer (or refuse)."""
    if not sku or len(sku) > MAX_SKU or "/" in sku or sku == "batch" or not _SKU.match(sku):
        return None
    params = _query(query)
    if params is None:
        return None
    channel = params.get("channel", "online")
    try:
        locations = narrow(book, channel, params.get("location"), params.get("location_group"))
    except (UnknownChannel, UnknownLocation):  # Litestar's problem+json 404
        return None
    return _Plan(channel, locations, None)


def _query(raw: bytes | str) -> dict[str, str] | None:
    """The lookup's query parameters when each is plain, known and given once; else None."""
    if not raw:
        return {}
    out: dict[str, str] = {}
    for pair in (raw.decode("latin-1") if isinstance(raw, bytes) else raw).split("&"):
        name, eq, value = pair.partition("=")
        if not eq or name not in PARAMS or name in out or len(value) > MAX_PARAM or not _PLAIN.match(value):
            return None
        out[name] = value
    return out
