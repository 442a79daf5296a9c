"""Call one of this service's own JSON routes in process, as the logged-in planner.

The backtest page speaks only the backtest API's HTTP contract (`POST /v1/backtests`,
`GET /v1/backtests/{id}`), so the console depends on that contract, not on the engine's
Python names. The browser holds a session cookie, not an API key, so the page's requests
come here and are passed to the app with the planner's `Principal` in the ASGI scope's
state, where the API's gate accepts it (`security.INTERNAL_PRINCIPAL`) and checks its
scopes as for any caller. A client cannot put anything in that state: it is server-side.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar

from availability.api.security import INTERNAL_PRINCIPAL, Principal

MAX_ANSWER_BYTES = 4 * 1024 * 1024


class ApiAnswer(msgspec.Struct, frozen=True):
    status: int
    body: Any


def has_route(app: Litestar, path: str) -> bool:
    return any(route.path == path for route in app.routes)


async def call_api(app: Litestar, principal: Principal, method: str, path: str, body: Any = None) -> ApiAnswer:
    payload = b"" if body is None else msgspec.json.encode(body)
    headers = [(b"accept", b"application/json")]
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("console", 0),
        "state": {INTERNAL_PRINCIPAL: principal},
    }
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    status = 500
    chunks: list[bytes] = []

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            if sum(map(len, chunks)) < MAX_ANSWER_BYTES:
                chunks.append(message.get("body", b""))

    await app(scope, receive, send)  # type: ignore[arg-type]
    raw = b"".join(chunks)
    try:
        decoded = msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        decoded = {"detail": raw[:500].decode("utf-8", "replace")}
    return ApiAnswer(status, decoded)
