"""Exception routes: what the ledger recorded for a person to act on.

`GET /v1/oversells`: orders and sales a channel made beyond what a location had (a
Shopify order for more than was there, a POS sale of the last unit twice). The ledger
applies such an event (the sale happened) and records the shortfall; this lists them,
newest first, so someone can cancel, back-order or move stock.
"""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter
from msgspec import Struct

from availability.api.context import ApiContext
from availability.api.problems import problem_responses

READ = {"scope": "read"}

Limit = Annotated[int, QueryParameter(description="at most this many, newest first", ge=1, le=1000)]
Before = Annotated[
    str | None,
    QueryParameter(description="page on: the `next` of the previous page", pattern=r"^\d{1,20}-\d{1,20}$"),
]


class OversellView(Struct, kw_only=True):
    id: str
    event_id: str
    order: str
    sku: str
    location: str
    units_short: int
    type: str
    source: str
    channel: str
    at_ms: int
    #: the location's buckets just after the event
    on_hand: int
    reserved: int
    allocated: int
    unsellable: int


class OversellPage(Struct, kw_only=True):
    oversells: list[OversellView]
    #: pass as `before` for the next (older) page; absent on the last page
    next: str | None = None


def routes(ctx: ApiContext) -> list:
    @get(
        "/v1/oversells",
        opt=READ,
        tags=["exceptions"],
        summary="Oversell exceptions: orders and sales beyond what a location had",
        description=(
            "Each entry names the order (reference), SKU, location and the units short: how far the event "
            "pushed the location's available (on_hand - reserved - allocated - unsellable) below zero."
        ),
        responses=problem_responses(401, 403, 422, 429),
    )
    async def list_oversells(limit: Limit = 100, before: Before = None) -> OversellPage:
        rows = await ctx.runtime.ledger.oversells(limit=limit, before=before)
        views = [
            OversellView(
                id=entry_id, event_id=o.event_id, order=o.order, sku=o.sku, location=o.location,
                units_short=o.units_short, type=o.type, source=o.source, channel=o.channel, at_ms=o.at_ms,
                on_hand=o.buckets_after.on_hand, reserved=o.buckets_after.reserved,
                allocated=o.buckets_after.allocated, unsellable=o.buckets_after.unsellable,
            )
            for entry_id, o in rows
        ]
        return OversellPage(oversells=views, next=rows[-1][0] if len(rows) == limit else None)

    return [list_oversells]
