"""The served app on Granian's RSGI interface: the two lookup routes answered straight from
Granian's request object, everything else handed to the same Litestar app as ASGI.

Why: under Granian's ASGI interface a lookup still pays for the ASGI scope dict, the
`receive`/`send` callables and two `send` crossings into Rust per response, and that
per-request protocol work was most of what was left once the fast path (api/fastpath.py)
had taken Litestar's routing out. RSGI hands the app a scope object whose fields are read
lazily and takes the whole response in one call (`response_bytes`), so the hot path is:
read path, query and two headers; `FastLookups.single` / `.batch` (the same key, scope
and rate-limit decision, the same ATS and msgspec bytes as Litestar's routes); one call
back. Everything the fast path declines (other routes, odd input, errors) goes through
`asgi_bridge`, so the answer is Litestar's own. One app, one port, one lifespan.

What the RSGI scope cannot carry, and so what the bridge gives Litestar differently from
an ASGI server: the path arrives percent-decoded (RSGI has no raw path; `raw_path` is the
decoded path re-quoted, which only mounted apps read), and header values that are not
visible ASCII are dropped by Granian before the app sees them (a key with such bytes is
then "missing" rather than "unknown": 401 either way).

`create_rsgi_app()` is the factory `availability serve` hands Granian (api/commands.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from availability.api.app import ServedApp, create_asgi_app
from availability.api.correlation import choose
from availability.api.fastpath import BATCH_PATH, PREFIX

if TYPE_CHECKING:
    from availability.api.fastpath import FastLookups

log = logging.getLogger("availability.api")

SINGLE_TEMPLATE = "/v1/availability/{sku}"
#: characters kept as they are when the decoded path is quoted back into `raw_path`
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_JSON = "application/json"


#: what `_key` answers when only the headers' order could decide
_UNDECIDED: Any = object()


def _address(address: str) -> tuple[str, int]:
    """'127.0.0.1:5000' / '[::1]:5000' -> (host, port), as an ASGI server's client / server."""
    host, _, port = address.rpartition(":")
    return (host[1:-1] if host.startswith("[") else host), int(port) if port.isdigit() else 0


def _host(address: str) -> str:
    return _address(address)[0]


def _key(headers: Any) -> Any:
    """The presented API key by security.presented_key's rule (the first bearer token, else
    the first non-empty X-API-Key, whichever header comes first when both are usable), or
    _UNDECIDED where that rule needs the headers' order, which RSGI does not give."""
    bearer = None
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            bearer = token
        elif len(headers.get_all("authorization")) > 1:
            return _UNDECIDED  # a later one may be a bearer token
    if "x-api-key" in headers:
        if bearer is not None:
            return _UNDECIDED  # both usable: the first in the request wins
        return next((v.strip() for v in headers.get_all("x-api-key") if v), None)
    return bearer


def _correlation_id(headers: Any) -> str:
    if "x-correlation-id" in headers or "x-request-id" in headers:
        return choose((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return choose(())


class RsgiServedApp:
    """`ServedApp` (runtime, Litestar app, background services) behind Granian's RSGI."""

    def __init__(self, served: ServedApp) -> None:
        self.served = served
        self._to_app: asyncio.Queue | None = None
        self._from_app: asyncio.Queue | None = None
        self._lifespan: asyncio.Task | None = None
        self.fast: FastLookups | None = None
        self.metrics = None

    # --- lifespan: Granian calls these on the worker's loop, before and after serving ------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.fast is not None or loop.is_running():
            return  # started by whoever embeds the server (tests/api/served.py awaits startup())
        try:
            loop.run_until_complete(self.startup())
        except Exception:
            log.exception("API startup failed")
            sys.exit(1)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if not loop.is_running():
            loop.run_until_complete(self.shutdown())

    async def startup(self) -> None:
        """Open the runtime and the app (ServedApp's ASGI lifespan, driven from here)."""
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": {}}
        # The lifespan stays a task for as long as the worker serves: it holds the runtime open.
        self._lifespan = asyncio.ensure_future(self.served(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(message.get("message") or message["type"])
        app = self.served.app
        self.fast = app.state.fast_lookups
        self.metrics = app.state.api.metrics

    async def shutdown(self) -> None:
        if self._lifespan is None or self._lifespan.done():
            return
        self.fast = None
        await self._to_app.put({"type": "lifespan.shutdown"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.shutdown.complete":
            log.error("API shutdown: %s", message.get("message") or message["type"])
        await self._lifespan

    # --- requests ---------------------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        fast = self.fast
        body = None
        if fast is not None and fast.enabled and scope.proto == "http":
            path = scope.path
            if path.startswith(PREFIX):
                start = time.perf_counter()
                method = scope.method
                answer = None
                if method == "GET":
                    headers = scope.headers
                    key = _key(headers)
                    if key is not _UNDECIDED:
                        client = _host(scope.client) if key is None else None  # only public reads need it
                        answer = await fast.single(path[len(PREFIX) :], scope.query_string, key, client)
                    template = SINGLE_TEMPLATE
                elif method == "POST" and path == BATCH_PATH:
                    headers = scope.headers
                    key = _key(headers)
                    # read here only a JSON body of a declared length within the limit; any
                    # other is streamed to Litestar, which judges it (and its size) as it reads
                    if key is not _UNDECIDED and headers.get("content-type") == _JSON and self._fits(headers):
                        body = await proto()
                        if len(body) == int(headers.get("content-length")):
                            answer = await fast.batch(body, key, _host(scope.client) if key is None else None)
                    template = BATCH_PATH
                if answer is not None:
                    proto.response_bytes(
                        200,
                        [
                            ("content-type", _JSON),
                            ("content-length", str(len(answer))),
                            ("x-correlation-id", _correlation_id(headers)),
                        ],
                        answer,
                    )
                    self.metrics.observe(method, template, 200, time.perf_counter() - start)
                    return
        await asgi_bridge(self.served, scope, proto, body)

    def _fits(self, headers: Any) -> bool:
        """A declared Content-Length within the app's body limit (else Litestar judges the body)."""
        length = headers.get("content-length")
        return length is not None and length.isdigit() and int(length) <= self.served.settings.max_body_bytes


async def asgi_bridge(app: Any, scope: Any, proto: Any, body: bytes | None = None) -> None:
    """Serve one RSGI request with an ASGI app. `body`: already read by the caller."""
    path = scope.path
    server = _address(scope.server)
    asgi_scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": path,
        "raw_path": quote(path, safe=_PATH_SAFE).encode("ascii"),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": _address(scope.client),
        "server": server,
        "state": {},
    }
    if body is not None:
        chunks = None
    else:
        chunks = proto.__aiter__()
    done = False

    async def receive() -> dict:
        nonlocal body, done
        if done:
            # After the body, an ASGI app waits here for the client to go away.
            await proto.client_disconnect()
            return {"type": "http.disconnect"}
        if chunks is None:
            done = True
            return {"type": "http.request", "body": body or b"", "more_body": False}
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(chunk), "more_body": True}

    status = 500
    headers: list[tuple[str, str]] = []
    started = False
    stream = None
    finished = False

    async def send(message: dict) -> None:
        nonlocal status, headers, started, stream, finished
        kind = message["type"]
        if kind == "http.response.start":
            status = int(message["status"])
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
            started = True
        elif kind == "http.response.body":
            if finished:
                return
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if stream is None:
                if not more:
                    proto.response_bytes(status, headers, chunk)
                    finished = True
                    return
                stream = proto.response_stream(status, headers)
            if chunk:
                await stream.send_bytes(chunk)
            if not more:
                finished = True

    try:
        await app(asgi_scope, receive, send)
    except Exception:
        log.exception("unhandled error serving %s %s", scope.method, path)
        if not finished and stream is None:
            proto.response_bytes(500, [("content-type", "text/plain")], b"Internal Server Error")
            finished = True
        return
    if not finished and stream is None:
        # started without a body message (or never started): close the exchange cleanly
        proto.response_bytes(status, headers, b"") if started else proto.response_empty(500, [])


def create_rsgi_app() -> RsgiServedApp:
    """RSGI factory (`granian --interface rsgi --factory availability.api.rsgi:create_rsgi_app`).
    Called in each Granian worker, which `serve` forks: the worker dies with `serve`, as the
    embedded server does, so a SIGKILLed `serve` leaves no worker running its services."""
    from availability.embedded_redis import die_with_parent  # noqa: PLC0415

    die_with_parent()
    return RsgiServedApp(create_asgi_app())
