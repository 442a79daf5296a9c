"""Touches to the OpenAPI document Litestar generates, so it states what the API enforces and
everything it can answer (a client generated from it must meet no surprise).

- Request bodies: Litestar's generator drops msgspec constraints on list items and does not
  say `additionalProperties: false` for structs that forbid unknown fields; msgspec's own
  JSON Schema generator says both, so request-body components are replaced with its output.
- Open routes (health, metrics, the HMAC-checked webhook) need no API key: `security: []`.
  With `public_read`, the read routes take a key optionally.
- Statuses every route of a kind can answer, added in one place rather than per route:
  401/403/429 where a key is checked (the Gate), 503 where Redis or the rule store is read
  (problems.unavailable_handler), 400/413/422 where a body is read (limits.py: nesting
  depth, body size; validation), `/health/ready`'s 503.
- The ingest uploads and the Shopify webhook (availability/ingest/http.py) read their bodies
  raw: their request bodies, answers and refusals are stated here.
- OpenAPI links, so a client (and schemathesis' stateful phase) can chain create -> read ->
  update: a reservation's id to read, release and commit it; a rule's id to read, change,
  roll back, see the history of and delete it; a location's code and a channel's name to
  read and delete them.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Iterable

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin  # the plugin that caches and serves the document

from availability.api.problems import PROBLEM_MEDIA_TYPE

_PATH_PARAM = re.compile(r"\{(\w+):[^}]+\}")
_REF_TEMPLATE = "#/components/schemas/{name}"
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

#: what each added status means on this API (docs/api.md "Errors")
_WHY = {
    400: "malformed JSON, JSON nested deeper than the limit (`nesting-too-deep`), or an empty body",
    401: "no API key, or an unknown one (`WWW-Authenticate: Bearer`)",
    403: "the key lacks the scope this route needs",
    404: "the named SKU's channel or location, rule, reservation, location or channel does not exist",
    409: "conflict with the current state (stale version, reservation conflict, in use)",
    413: "the body is larger than the limit",
    415: "the upload's format (?format= or Content-Type) is not one this route reads",
    422: "the request parses but a value is out of bounds or cannot mean anything",
    429: "the key's rate limit is exceeded (`Retry-After`)",
    503: "the stock ledger (Redis), the rule store or the event stream is unavailable (`Retry-After`)",
}

#: body fields that only repeat the path (the server tolerates them when they are equal); left
#: out of the document, which cannot say "equal to the path parameter"
_PATH_ECHOES = {"LocationBody": "code", "ChannelBody": "name"}


def refine_openapi(app: Litestar, request_types: Iterable[type], handlers: Iterable[Any], public_read: bool) -> None:
    handlers = list(handlers)
    document = app.openapi_schema
    components = document.components.schemas if document.components and document.components.schemas else None
    if components is not None:
        _, generated = msgspec.json.schema_components(list(request_types), ref_template=_REF_TEMPLATE)
        for name, schema in generated.items():
            if name in components:
                echo = _PATH_ECHOES.get(name)
                if echo:
                    schema["properties"].pop(echo, None)
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
    # From here on the served document itself (the plugin caches this dict and serves it).
    served = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    keyed = {
        _PATH_PARAM.sub(r"{\1}", path): handler.opt.get("scope")
        for handler in handlers
        for path in handler.paths
        if handler.opt.get("scope") is not None
    }
    _document_intake(served)
    _name_the_event(served)
    _strings_on_the_wire(served)
    _document_statuses(served, keyed)
    _document_readiness(served)
    _add_links(served)


def _problem(status: int) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    return {
        "description": f"{phrase}: {_WHY[status]} (application/problem+json)",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
    }


def _operations(document: dict[str, Any]):
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None:
                yield path, method, operation


def _document_statuses(document: dict[str, Any], keyed: dict[str, Any]) -> None:
    for path, _method, operation in _operations(document):
        if not path.startswith(("/v1/", "/webhooks/")):
            continue  # health, metrics: open, no input
        responses = operation.setdefault("responses", {})
        wanted = {400, 422, 503}
        if path in keyed:
            wanted |= {401, 403, 429}
        if "requestBody" in operation:
            wanted |= {400, 413, 422}
        for status in sorted(wanted):
            responses.setdefault(str(status), _problem(status))


def _name_the_event(document: dict[str, Any]) -> None:
    """POST /v1/events states its body inline (events.py); as a named component, generated
    clients get a StockEvent model instead of giving up on an anonymous union."""
    operation = document.get("paths", {}).get("/v1/events", {}).get("post")
    if operation is None:
        return
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    one, many = schema["oneOf"]
    document.setdefault("components", {}).setdefault("schemas", {})["StockEvent"] = one
    ref = {"$ref": "#/components/schemas/StockEvent"}
    schema["oneOf"] = [ref, {**many, "items": ref}]


def _strings_on_the_wire(document: dict[str, Any]) -> None:
    """A header or query parameter is absent or a string: `str | None` parameters are
    documented as `oneOf [string, null]`, which tells a client to send the text "null"."""
    for _path, _method, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter.get("schema", {})
            for key in ("oneOf", "anyOf"):
                members = schema.get(key)
                if parameter.get("in") in ("header", "query") and members:
                    kept = [m for m in members if m.get("type") != "null"]
                    if len(kept) == 1 and len(kept) < len(members):
                        rest = {k: v for k, v in schema.items() if k != key}
                        parameter["schema"] = {**kept[0], **rest}


def _document_readiness(document: dict[str, Any]) -> None:
    operation = document.get("paths", {}).get("/health/ready", {}).get("get")
    if operation is not None:
        operation["responses"]["503"] = {
            "description": "a check failed: the failing checks are named in `checks`",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
        }


# --- the ingest area's raw-body routes ----------------------------------------------------------

INTAKE_REPORT = {
    "type": "object",
    "description": "what an upload put on the event streams (availability/ingest/sources.py LoadReport)",
    "properties": {
        "format": {"type": "string"},
        "events": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "dead_lettered": {"type": "integer", "minimum": 0},
        "not_kept": {"type": "integer", "minimum": 0},
        "dead_letter_cap": {"type": "integer", "minimum": 0},
        "rejects": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"where": {"type": "string"}, "reason": {"type": "string"}},
                "required": ["where", "reason"],
            },
        },
    },
    "required": ["format", "events", "rejected", "dead_lettered", "not_kept", "rejects"],
}

WEBHOOK_ANSWER = {
    "type": "object",
    "description": "accepted, duplicate (same X-Shopify-Webhook-Id), ignored topic, or dead-lettered (unmappable)",
    "properties": {
        "status": {"enum": ["accepted", "duplicate", "ignored", "dead_lettered"]},
        "events": {"type": "integer", "minimum": 0},
        "skipped_without_sku": {"type": "integer", "minimum": 0},
        "webhook_id": {"type": "string"},
        "topic": {"type": "string"},
        "stream": {"type": "string"},
        "reason": {"type": "string"},
    },
    "required": ["status"],
}

_TEXT = {"type": "string", "minLength": 1}
#: upload path -> (content types it reads, statuses beyond the common ones)
_UPLOADS = {
    "/v1/ingest/wms/x12": (("application/edi-x12", "text/plain"), ()),
    "/v1/ingest/erp/snapshot": (("text/csv", "application/x-ndjson"), (415,)),
    "/v1/ingest/erp/purchase-orders": (("text/csv", "application/x-ndjson"), (415,)),
    "/v1/ingest/erp/transfers": (("text/csv", "application/x-ndjson"), (415,)),
    "/v1/ingest/pos": (("application/json", "application/x-ndjson"), ()),
    "/v1/ingest/oms": (("application/json", "application/x-ndjson"), ()),
}
_SHOPIFY_HEADERS = (
    ("X-Shopify-Hmac-Sha256", "base64 HMAC-SHA256 of the body under a configured webhook secret"),
    ("X-Shopify-Topic", "e.g. orders/create"),
    ("X-Shopify-Webhook-Id", "deduplication key"),
    ("X-Shopify-Shop-Domain", "the shop"),
)


def _document_intake(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    for path, (types, extra) in _UPLOADS.items():
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        operation.setdefault("tags", ["ingest"])
        operation["description"] = (
            "The source system's own format (docs/events.md, docs/ingestion.md). 202 once the events are on the "
            "stream; rejected rows are dead-lettered and counted. A body of which no row can be read is refused "
            "whole (422)."
        )
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": _TEXT} for media in types},
        }
        if path.startswith("/v1/ingest/erp/"):
            operation.setdefault("parameters", []).append(
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "csv or jsonl (else Content-Type, else sniffed from the first byte)",
                    "schema": {"enum": ["csv", "jsonl", "ndjson", "json"]},
                }
            )
        operation["responses"] = {
            "202": {
                "description": "on the event streams (applied moments later by the consumer)",
                "content": {"application/json": {"schema": INTAKE_REPORT}},
            },
            **{str(status): _problem(status) for status in extra},
        }
    hook = paths.get("/webhooks/shopify", {}).get("post")
    if hook is not None:
        hook.setdefault("tags", ["ingest"])
        hook["description"] = (
            "Authenticated by its HMAC (X-Shopify-Hmac-Sha256 under any configured secret), not an API key. "
            "200 fast for every genuine webhook (accepted, duplicate, ignored topic, or dead-lettered when it "
            "cannot be mapped); 401 when the signature does not match."
        )
        hook["parameters"] = [
            {"name": name, "in": "header", "required": True, "description": why, "schema": {"type": "string"}}
            for name, why in _SHOPIFY_HEADERS
        ]
        hook["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
        hook["responses"] = {
            "200": {"description": "taken", "content": {"application/json": {"schema": WEBHOOK_ANSWER}}},
            "401": {
                "description": "the HMAC does not match the body under any configured secret (application/problem+json)",
                "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
            },
        }


# --- links --------------------------------------------------------------------------------------

#: (method, path, statuses) of a creating operation -> [(method, path, {parameter: expression})]
_LINKS = {
    ("post", "/v1/reservations", ("201", "200")): [
        (m, p, {"reservation_id": "$response.body#/reservation_id"})
        for m, p in (
            ("get", "/v1/reservations/{reservation_id}"),
            ("post", "/v1/reservations/{reservation_id}/commit"),
            ("post", "/v1/reservations/{reservation_id}/release"),
        )
    ],
    ("post", "/v1/rules", ("201",)): [
        (m, p, {"rule_id": "$response.body#/id"})
        for m, p in (
            ("get", "/v1/rules/{rule_id}"),
            ("put", "/v1/rules/{rule_id}"),
            ("patch", "/v1/rules/{rule_id}"),
            ("get", "/v1/rules/{rule_id}/history"),
            ("post", "/v1/rules/{rule_id}/rollback"),
            ("delete", "/v1/rules/{rule_id}"),
        )
    ],
    ("put", "/v1/rules/{rule_id}", ("200",)): [
        ("get", "/v1/rules/{rule_id}", {"rule_id": "$response.body#/id"}),
        ("get", "/v1/rules/{rule_id}/history", {"rule_id": "$response.body#/id"}),
    ],
    ("put", "/v1/locations/{code}", ("200",)): [
        (m, "/v1/locations/{code}", {"code": "$response.body#/code"}) for m in ("get", "delete")
    ],
    ("put", "/v1/channels/{name}", ("200",)): [
        (m, "/v1/channels/{name}", {"name": "$response.body#/name"}) for m in ("get", "delete")
    ],
}


def _add_links(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})

    def operation_id(method: str, path: str) -> str | None:
        return paths.get(path, {}).get(method, {}).get("operationId")

    for (method, path, statuses), targets in _LINKS.items():
        source = paths.get(path, {}).get(method)
        if source is None:
            continue
        links = {}
        for target_method, target_path, parameters in targets:
            target = operation_id(target_method, target_path)
            if target is not None:
                links[target] = {"operationId": target, "parameters": parameters}
        for status in statuses:
            response = source.get("responses", {}).get(status)
            if response is not None and links:
                response["links"] = dict(links)
