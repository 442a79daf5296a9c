"""A correlation id per HTTP request: the caller's `X-Correlation-Id` (or `X-Request-Id`)
when it is sane (availability/correlation.py), else a new one. Set in the contextvar every
log line reads, and echoed in the response's `X-Correlation-Id`.

Plain ASGI and one header scan, because it runs on every lookup. Two parts: the middleware
sets the contextvar around the route; `echo_header` (a `before_send` hook, which sees every
response, also the 401 that `Gate` raises and the app's exception handler renders outside
the route) writes the header from the id left in the scope.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from availability.correlation import current_correlation_id, new_correlation_id, sane

HEADER = b"x-correlation-id"
_ASKED = (HEADER, b"x-request-id")


def choose(headers) -> str:
    """The caller's sane id, else a new one."""
    for name, value in headers:
        if name in _ASKED:
            chosen = sane(value)
            if chosen is not None:
                return chosen
    return new_correlation_id()


class CorrelationId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = choose(scope["headers"])
        scope.setdefault("state", {})["correlation_id"] = cid  # type: ignore[typeddict-item]
        token = current_correlation_id.set(cid)
        try:
            await self.app(scope, receive, send)
        finally:
            current_correlation_id.reset(token)


async def echo_header(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    cid = scope.get("state", {}).get("correlation_id")  # type: ignore[attr-defined]
    if cid is None:  # no route matched (404, 405): the middleware did not run
        cid = choose(scope.get("headers", ()))
    message["headers"] = [*message.get("headers", ()), (HEADER, cid.encode())]  # type: ignore[typeddict-item]
