"""`OPTIONS` for every path, answering the methods that path really has.

Litestar adds an OPTIONS handler to a path when its first handler is registered; when more
handlers for the same path arrive (GET, then PUT and DELETE of /v1/channels/{name}), the
route is rebuilt but keeps that first OPTIONS handler, which still answers the first
handler's methods (`Allow: GET, OPTIONS`). Registering our own OPTIONS handler per path,
ahead of the others, with the methods of every handler of that path, keeps `Allow` true.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from litestar import Response, route
from litestar.status_codes import HTTP_204_NO_CONTENT


def options_handlers(handlers: Iterable[Any]) -> list:
    """One OPTIONS handler per path of `handlers` (open: no `scope`, so no key needed)."""
    methods: dict[str, set[str]] = defaultdict(set)
    for handler in handlers:
        for path in handler.paths:
            methods[path].update(handler.http_methods)
    return [_options(path, allowed) for path, allowed in methods.items() if "OPTIONS" not in allowed]


def _options(path: str, methods: set[str]):
    allow = ", ".join(sorted(methods | {"OPTIONS"}))

    @route(path, http_method="OPTIONS", include_in_schema=False, name=f"options:{path}")
    async def options() -> Response[None]:
        return Response(content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allow})

    return options
