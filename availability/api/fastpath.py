"""A lean ASGI path for the two lookup routes, in front of Litestar.

`GET /v1/availability/{sku}` and `POST /v1/availability/batch` are most of the traffic, and
through Litestar most of their cost is the framework (routing, parameter parsing and
validation, DI, the response object), not the Redis read or the ATS arithmetic. This
callable answers exactly those two routes itself when the request is plainly valid:

- the same key check, scope check and rate-limit bucket as `security.Gate`;
- the same narrowing, SKU check and ATS as `queries.availability_of` / `availability_batch`
  over the same `StockReader` (pipelined) and the live `RuleBook`;
- the answer encoded with msgspec exactly as Litestar encodes it (same bytes, same
  `content-type` and `content-length`).

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
from availability.api.security import ANONYMOUS, presented_key
from availability.domain.ats import channel_availability

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

    from availability.api.context import ApiContext

PREFIX = "/v1/availability/"
BATCH_PATH = "/v1/availability/batch"
#: the query parameters of the single lookup, with Litestar's max_length for each
PARAMS = frozenset({"channel", "location", "location_group"})
MAX_PARAM = 128
MAX_SKU = 128
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
        if (
            not sku
            or len(sku) > MAX_SKU
            or "/" in sku
            or sku == "batch"
            or b"%" in scope.get("raw_path", b"")
            or not _SKU.match(sku)
        ):
            return None
        params = _query(scope["query_string"])
        if params is None:
            return None
        ctx = self.ctx
        book = ctx.runtime.rules.book
        try:
            locations = narrow(book, params.get("channel", "online"), params.get("location"), params.get("location_group"))
            if not await self._admit(scope):
                return None
            stock = (await ctx.reader.stock_many((sku,)))[sku]
        except Exception:  # noqa: BLE001 - Litestar answers (and logs) every failure its own way
            return None
        return _encode(channel_availability(book, sku, params.get("channel", "online"), stock, locations))

    async def _batch(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        body, replay = await self._read_body(scope, receive)
        answer = None
        if body is not None:
            answer = await self._batch_answer(scope, body)
        if answer is None:
            await self.app(scope, replay, send)
            return
        await self._answer(scope, send, answer, BATCH_PATH)

    async def _batch_answer(self, scope: "Scope", body: bytes) -> bytes | None:
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
            if not await self._admit(scope):
                return None
            unique = list(dict.fromkeys(skus))
            stock = await ctx.reader.stock_many(unique)
        except Exception:  # noqa: BLE001
            return None
        items = [channel_availability(book, sku, data.channel, stock[sku], locations) for sku in unique]
        return _encode(BatchAvailability(channel=data.channel, rules_version=book.version, items=items))

    # --- shared steps ---------------------------------------------------------------------

    async def _admit(self, scope: "Scope") -> bool:
        """Gate's decision for a read route, without raising: False = let Litestar refuse it."""
        ctx = self.ctx
        key = presented_key(scope["headers"])
        if key is None:
            if not ctx.settings.public_read:
                return False
            principal = ANONYMOUS
            client = scope.get("client")
            bucket = f"ip:{client[0] if client else '?'}"
        else:
            principal = ctx.keys.authenticate(key)
            if principal is None or not principal.allows("read"):
                return False
            bucket = f"key:{principal.name}"
        limiter = ctx.limiter
        # A refused take leaves the bucket as it was, so Litestar's own take refuses it the same way.
        if limiter.enabled and await limiter.admit(bucket):
            return False
        scope.setdefault("state", {})["principal"] = principal
        return True

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
        self.answered += 1
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


def _query(raw: bytes) -> dict[str, str] | None:
    """The lookup's query parameters when each is plain, known and given once; else None."""
    if not raw:
        return {}
    out: dict[str, str] = {}
    for pair in raw.decode("latin-1").split("&"):
        name, eq, value = pair.partition("=")
        if not eq or name not in PARAMS or name in out or len(value) > MAX_PARAM or not _PLAIN.match(value):
            return None
        out[name] = value
    return out
