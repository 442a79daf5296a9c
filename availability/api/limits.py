"""Hostile-input limits applied to every request body before a decoder sees it.

Litestar decodes a `JSONBody[...]` route's body into plain Python first and converts it to
the struct after, and `POST /v1/events` hands `request.body()` to the domain decoder: both
read the body through `Request.body()`, so checking there covers every JSON route of the
API in one place. (The ingest uploads stream their bodies and check them where they parse
them: availability/ingest/sources.py.)
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

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

    async def json(self) -> Any:
        """The decoded body, checked strictly against the route's body struct.

        Litestar converts a `JSONBody[Struct]` leniently (`0` for a boolean, `4039.0` or
        `"5"` for an integer), which the OpenAPI document (JSON Schema types) does not allow;
        checking here keeps "what the schema forbids is refused" true for every JSON route.
        """
        value = await super().json()
        field = self.route_handler.parsed_data_field
        target = getattr(field, "annotation", None)
        if isinstance(target, type) and issubclass(target, msgspec.Struct):
            try:
                _strict(target)(value)
            except msgspec.ValidationError as exc:
                message = str(exc)
                where = _AT.search(message)
                error = {"message": message, "key": where.group(1) if where else None, "source": "body"}
                raise ValidationException(message, extra=[error]) from None
        return value


def guarded_request(max_json_depth: int) -> type[GuardedRequest]:
    """The app's request class, with the configured limit (Settings.max_json_depth)."""
    return type("GuardedRequest", (GuardedRequest,), {"max_json_depth": max_json_depth})


#: where msgspec says the error is: "... - at `$.lines[0].sku`"
_AT = re.compile(r"at `\$\.?([^`]*)`")


@lru_cache(maxsize=64)
def _strict(target: type):
    return lambda value: msgspec.convert(value, target, strict=True)
