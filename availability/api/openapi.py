"""Touches to the OpenAPI document Litestar generates, so it states what the API enforces.

- Request bodies: Litestar's generator drops msgspec constraints on list items and does not
  say `additionalProperties: false` for structs that forbid unknown fields; msgspec's own
  JSON Schema generator says both, so request-body components are replaced with its output.
- Open routes (health, metrics, the HMAC-checked webhook) need no API key: `security: []`.
  With `public_read`, the read routes take a key optionally.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import msgspec
from litestar import Litestar

_PATH_PARAM = re.compile(r"\{(\w+):[^}]+\}")
_REF_TEMPLATE = "#/components/schemas/{name}"


def refine_openapi(app: Litestar, request_types: Iterable[type], handlers: Iterable[Any], public_read: bool) -> None:
    document = app.openapi_schema
    components = document.components.schemas if document.components and document.components.schemas else None
    if components is not None:
        _, generated = msgspec.json.schema_components(list(request_types), ref_template=_REF_TEMPLATE)
        for name, schema in generated.items():
            if name in components:
                components[name] = schema  # type: ignore[assignment]
    optional = [{}, {"bearer": []}, {"apiKey": []}]
    for handler in handlers:
        scope = handler.opt.get("scope")
        if scope is not None and not (public_read and scope == "read"):
            continue
        for path in handler.paths:
            item = (document.paths or {}).get(_PATH_PARAM.sub(r"{\1}", path))
            if item is None:
                continue
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if operation is not None:
                    operation.security = [] if scope is None else optional  # type: ignore[assignment]
