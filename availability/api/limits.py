"""Hostile-input limits applied to every request body before a decoder sees it.

Litestar decodes a `JSONBody[...]` route's body into plain Python first and converts it to
the struct after, and `POST /v1/events` hands `request.body()` to the domain decoder: both
read the body through `Request.body()`, so checking there covers every JSON route of the
API in one place. (The ingest uploads stream their bodies and check them where they parse
them: availability/ingest/sources.py.)
"""

from __future__ import annotations

from litestar import Request

from availability.domain.jsonlimits import check_depth


class GuardedRequest(Request):
    """A request whose body is refused with 400 `nesting-too-deep` when its JSON nests
    deeper than `max_json_depth` (a recursive decoder would fail on it)."""

    max_json_depth: int = 64
    _depth_checked = False

    async def body(self) -> bytes:
        body = await super().body()
        if not self._depth_checked:
            check_depth(body, self.max_json_depth, what="the request body")
            self._depth_checked = True
        return body


def guarded_request(max_json_depth: int) -> type[GuardedRequest]:
    """The app's request class, with the configured limit (Settings.max_json_depth)."""
    return type("GuardedRequest", (GuardedRequest,), {"max_json_depth": max_json_depth})
