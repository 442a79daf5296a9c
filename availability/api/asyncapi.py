"""The AsyncAPI document of the event streams and the dead-letter stream, by FastStream's own
generator, served beside OpenAPI (`/asyncapi.json`; `/asyncapi` renders it).

FastStream describes a broker's subscribers and publishers; the consumer's subscribers take
raw batches (availability/ingest/consumer.py), so a broker is declared here with one
subscriber per partition stream and a publisher for the dead-letter stream, named as the
service names them (StreamNames). Their message payloads are then set from the msgspec
structs that decode them (StockEvent, DeadLetter), so the bounds and the event types in the
document are the decoder's own.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import msgspec
from faststream.specification.asyncapi.site import ASYNCAPI_CSS_DEFAULT_URL, ASYNCAPI_JS_DEFAULT_URL
from litestar import MediaType, Response, get

from availability.config import Settings
from availability.domain.events import EVENT_TYPES, StockEvent

ASYNCAPI_VERSION = "3.0.0"


class DeadLetterEntry(msgspec.Struct, kw_only=True):
    """A dead-letter stream entry's fields (availability/ingest/deadletters.py DeadLetter.fields)."""

    reason: str
    detail: str
    #: the refused payload, as received (truncated past the cap; then payload_bytes is set)
    payload: str
    stream: str
    entry_id: str
    at: int
    source: str | None = None
    event_id: str | None = None
    payload_bytes: int | None = None


def asyncapi_document(settings: Settings, api_version: str) -> dict[str, Any]:
    from faststream.redis import RedisBroker, StreamSub  # noqa: PLC0415
    from faststream.specification import AsyncAPI  # noqa: PLC0415

    from availability.ingest.streams import StreamNames  # noqa: PLC0415

    names = StreamNames.from_settings(settings)
    # Host and port only: a URL's credentials must not reach a public document.
    where = urlsplit(settings.redis_url or "redis://localhost:6379")
    broker = RedisBroker(
        url=f"redis://{where.hostname or 'localhost'}:{where.port or 6379}", description="the stock event streams"
    )
    for p in range(settings.partitions):
        stream = names.partition(p)

        @broker.subscriber(
            stream=StreamSub(stream, group=names.group, consumer="any", batch=True),
            title=f"events:{p}",
            description=(
                f"partition {p} of the canonical stock events (a SKU always lands on the same partition: "
                "crc32(sku) mod partitions), applied by the consumer group in order; docs/events.md"
            ),
        )
        async def apply(event: dict) -> None:  # a declaration only; the consumer reads raw batches
            return None

    @broker.publisher(
        stream=names.dlq,
        title="dead-letters",
        description="events and uploads refused with their reason (`availability dlq list|replay`)",
    )
    async def dead_letter() -> dict:
        return {}

    document = json.loads(
        AsyncAPI(
            broker,
            title="Availability event streams",
            version=api_version,
            description="Canonical stock events in (partitioned Redis streams) and the dead-letter stream.",
            schema_version=ASYNCAPI_VERSION,
        ).to_specification().to_json()
    )
    _set_payloads(document)
    return document


def _set_payloads(document: dict[str, Any]) -> None:
    """Every message on an event stream carries a StockEvent, every dead letter a DeadLetterEntry."""
    from availability.api.events import _event_schema  # noqa: PLC0415 - the bounds POST /v1/events states

    _, schemas = msgspec.json.schema_components([StockEvent, DeadLetterEntry], ref_template="#/components/schemas/{name}")
    schemas["StockEvent"] = _event_schema()
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(schemas)
    for name, message in components.get("messages", {}).items():
        target = "DeadLetterEntry" if "dead" in name.lower() else "StockEvent"
        message["payload"] = {"$ref": f"#/components/schemas/{target}"}
    assert set(schemas["StockEvent"]["properties"]["type"]["enum"]) == set(EVENT_TYPES)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Availability event streams</title>
<link rel="stylesheet" href="{css}"></head><body><div id="asyncapi"></div><script src="{js}"></script>
<script>AsyncApiStandalone.render({{schema: {{url: "/asyncapi.json"}}, config: {{show: {{sidebar: true}}}}}},
document.getElementById("asyncapi"));</script></body></html>"""


def asyncapi_routes(settings: Settings, api_version: str) -> list:
    """`GET /asyncapi.json` (the document) and `GET /asyncapi` (rendered); open, like /schema."""
    document = asyncapi_document(settings, api_version)
    page = _PAGE.format(css=ASYNCAPI_CSS_DEFAULT_URL, js=ASYNCAPI_JS_DEFAULT_URL)

    @get("/asyncapi.json", tags=["operations"], summary="AsyncAPI 3.0 document of the event and dead-letter streams")
    async def asyncapi_json() -> dict[str, Any]:
        return document

    @get("/asyncapi", include_in_schema=False)
    async def asyncapi_page() -> Response[str]:
        return Response(page, media_type=MediaType.HTML)

    return [asyncapi_json, asyncapi_page]
