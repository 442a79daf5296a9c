"""Availability routes: one SKU, a batch of SKUs, and the explanation of an answer (hot path)."""

from __future__ import annotations

from typing import Annotated

from litestar import get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from availability.api.context import ApiContext
from availability.api.problems import problem_responses
from availability.api.queries import availability_batch, availability_of, explain_of
from availability.api.schemas import (
    SKU_PATTERN,
    BatchAvailability,
    BatchRequest,
    Constant,
)
from availability.domain.ats import ChannelAvailability, Explanation

Sku = Annotated[str, PathParameter(description="the SKU", min_length=1, max_length=128, pattern=SKU_PATTERN)]
Channel = Annotated[str, QueryParameter(description="sales channel", max_length=128)]
LocationCode = Annotated[str | None, QueryParameter(description="only this location", max_length=128)]
LocationGroup = Annotated[
    str | None, QueryParameter(description="only the locations of this group (POS: nearby stores)", max_length=128)
]
READ = {"scope": "read"}


def routes(ctx: ApiContext) -> list:
    settings = ctx.settings

    @get(
        "/v1/availability/{sku:str}",
        opt=READ,
        tags=["availability"],
        summary="Channel ATS of one SKU",
        description=(
            "The channel total and its per-location breakdown in location priority order. A SKU never "
            "seen has nothing available: 200 with zeros. `location` and `location_group` narrow the answer "
            "(together: the location plus the group)."
        ),
        responses=problem_responses(401, 403, 404, 422, 429),
    )
    async def get_availability(
        sku: Sku, channel: Channel = "online", location: LocationCode = None, location_group: LocationGroup = None
    ) -> ChannelAvailability:
        runtime = ctx.runtime
        return await availability_of(ctx.reader, runtime.rules.book, sku, channel, location, location_group)

    @post(
        "/v1/availability/batch",
        opt=READ,
        status_code=200,
        tags=["availability"],
        summary="Channel ATS of many SKUs in one Redis round trip",
        description=f"Up to {settings.batch_max_skus} SKUs (a page or a cart); answered in the order asked.",
        responses=problem_responses(401, 403, 404, 422, 429),
    )
    async def post_availability_batch(data: JSONBody[BatchRequest]) -> BatchAvailability:
        runtime = ctx.runtime
        book = runtime.rules.book
        items = await availability_batch(
            ctx.reader,
            book,
            data.skus,
            data.channel,
            data.location,
            data.location_group,
            max_skus=settings.batch_max_skus,
        )
        return BatchAvailability(channel=data.channel, rules_version=book.version, items=items)

    @get(
        "/v1/availability/{sku:str}/explain",
        opt=READ,
        tags=["availability"],
        summary="The arithmetic behind an ATS answer",
        description="Every term with the rule (id, version, scope) behind it, per location, and as text.",
        responses=problem_responses(401, 403, 404, 422, 429),
    )
    async def get_explanation(
        sku: Sku, channel: Channel = "online", location: LocationCode = None, location_group: LocationGroup = None
    ) -> Explanation:
        runtime = ctx.runtime
        return await explain_of(ctx.reader, runtime.rules.book, sku, channel, location, location_group)

    handlers = [get_availability, post_availability_batch, get_explanation]

    if settings.bench_endpoints:
        answer = Constant(sku="BENCH", channel="online", ats=42)

        @get("/bench/constant", opt=READ, include_in_schema=False)
        async def bench_constant() -> Constant:
            return answer

        handlers.append(bench_constant)
    return handlers
