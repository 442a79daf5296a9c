"""POST /v1/events: canonical events from sources that post over HTTP.

The body is one event or a JSON list of up to `Settings.events_max`, validated with the
domain's `decode_events` (a bad event is 422 naming it and why; nothing is taken).

Where they go is `Settings.events_mode`:
- "stream": published to the partitioned event streams for the consumer
  (`availability.ingest.publisher.EventPublisher`); 202 Accepted, `mode: "stream"`.
- "direct": applied to the ledger in this request (one pipelined round trip); 200 with
  each event's ledger status (applied, duplicate, ...), `mode: "direct"`.
- "auto" (default): "stream" when the ingest publisher is installed, else "direct".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec
from litestar import Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody

from availability.api.context import ApiContext
from availability.api.problems import InvalidInput, problem_responses
from availability.api.schemas import (
    DATETIME_PATTERN,
    LOCATION_PATTERN,
    SKU_PATTERN,
    EventOutcome,
    EventsAccepted,
)
from availability.domain.events import (
    ADJUSTMENT_REASONS,
    MAX_QUANTITY,
    RESERVATION_TYPES,
    StockEvent,
    decode_events,
)


def _event_schema() -> dict:
    # The body is read raw and validated by the domain decoder, so its schema is stated here,
    # with the bounds validate_event() enforces that a type cannot carry.
    generated = msgspec.json.schema(StockEvent)
    event = generated["$defs"][generated["$ref"].rsplit("/", 1)[-1]]
    props = event["properties"]
    props["type"]["type"] = "string"  # an enum alone is not typed for client generators
    props["event_id"].update(minLength=1, maxLength=200)
    props["sku"].update(minLength=1, maxLength=128, pattern=SKU_PATTERN)
    props["location"].update(pattern=LOCATION_PATTERN)
    props["quantity"].update(minimum=0, maximum=MAX_QUANTITY)
    props["occurred_at"].update(pattern=DATETIME_PATTERN)
    props["eta"]["anyOf"][0].update(pattern=DATETIME_PATTERN)
    # What validate_event() asks of some types, as JSON Schema conditionals.
    event["allOf"] = [
        {
            "if": {"properties": {"type": {"const": "adjustment"}}, "required": ["type"]},
            "then": {"properties": {"reason": {"enum": list(ADJUSTMENT_REASONS)}}, "required": ["reason"]},
        },
        {
            "if": {"properties": {"type": {"enum": sorted(RESERVATION_TYPES)}}, "required": ["type"]},
            "then": {"properties": {"reference": {"type": "string", "minLength": 1}}, "required": ["reference"]},
        },
    ]
    return event


def events_body_schema(max_events: int) -> dict:
    event = _event_schema()
    return {"oneOf": [event, {"type": "array", "items": event, "minItems": 1, "maxItems": max_events}]}


def routes(ctx: ApiContext) -> list:
    max_events = ctx.settings.events_max
    counter = ctx.metrics.events
    body_schema = events_body_schema(max_events)

    @dataclass
    class EventsOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=body_schema)},  # type: ignore[arg-type]
                required=True,
                description=f"one canonical event or a list of up to {max_events} (docs/events.md)",
            )

    @post(
        "/v1/events",
        opt={"scope": "events"},
        status_code=200,
        tags=["events"],
        summary="Submit canonical stock events",
        description=(
            "`mode: stream` (202): published to the event streams for the consumer. `mode: direct` (200): "
            "applied to the ledger now, with each event's status. Idempotent on `event_id` either way."
        ),
        operation_class=EventsOperation,
        responses={
            202: ResponseSpec(EventsAccepted, description="queued on the event streams", generate_examples=False),
            **problem_responses(400, 401, 403, 413, 422, 429),
        },
    )
    async def post_events(request: Request) -> Response[EventsAccepted]:
        events = decode_events(await request.body())
        if not events:
            raise InvalidInput("no events: send one event or a non-empty list")
        if len(events) > max_events:
            raise InvalidInput(f"at most {max_events} events per request, got {len(events)}", max_events=max_events)
        if ctx.publisher is not None:
            await ctx.publisher.publish(events)
            counter.labels("stream", "queued").inc(len(events))
            return Response(EventsAccepted(mode="stream", received=len(events)), status_code=202)
        results = await ctx.runtime.ledger.apply_batch(events)
        counts = Counter(r.status for r in results)
        for status, n in counts.items():
            counter.labels("direct", status).inc(n)
        return Response(
            EventsAccepted(
                mode="direct",
                received=len(events),
                results=[EventOutcome(r.event_id, r.status) for r in results],
                counts=dict(counts),
            ),
            status_code=200,
        )

    return [post_events]
