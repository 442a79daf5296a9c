"""Master-data routes: locations and channels (list, get, put = create or replace, delete).

Writes need the `rules` scope (planners own where each channel sells), are recorded in the
store's master-data history with the key's name and reason, and swap the RuleBook at once.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, delete, get, put
from litestar.params import HeaderParameter, JSONBody, PathParameter

from availability.api.context import ApiContext
from availability.api.problems import InvalidInput, problem_responses
from availability.api.schemas import LOCATION_PATTERN, NAME_PATTERN, ChannelBody, LocationBody
from availability.api.security import principal_of
from availability.domain.rules import Channel, Location

Code = Annotated[str, PathParameter(description="location code", min_length=1, max_length=64, pattern=LOCATION_PATTERN)]
Name = Annotated[str, PathParameter(description="channel name", min_length=1, max_length=128, pattern=NAME_PATTERN)]
Reason = Annotated[
    str | None, HeaderParameter(name="X-Change-Reason", description="why (recorded in history)", max_length=2000)
]
RULES = {"scope": "rules"}
READ = {"scope": "read"}
WRITE_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 429)


def routes(ctx: ApiContext) -> list:
    def store():
        return ctx.runtime.store

    async def changed() -> None:
        await ctx.runtime.rules.apply_local_change()

    @get(
        "/v1/locations",
        opt=READ,
        tags=["master data"],
        summary="Locations in priority order",
        responses=problem_responses(401, 403, 429),
    )
    async def list_locations() -> list[Location]:
        return await store().list_locations()

    @get(
        "/v1/locations/{code:str}",
        opt=READ,
        tags=["master data"],
        summary="One location",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def get_location(code: Code) -> Location:
        return await store().get_location(code)

    @put(
        "/v1/locations/{code:str}",
        opt=RULES,
        tags=["master data"],
        summary="Create or replace a location",
        responses=WRITE_PROBLEMS,
    )
    async def put_location(
        code: Code, data: JSONBody[LocationBody], request: Request, x_change_reason: Reason = None
    ) -> Location:
        if data.code is not None and data.code != code:
            raise InvalidInput(f"body code {data.code!r} differs from the path's {code!r}")
        location = await store().upsert_location(
            data.to_location(code), actor=principal_of(request.scope).name, reason=data.reason or x_change_reason or ""
        )
        await changed()
        return location

    @delete(
        "/v1/locations/{code:str}",
        opt=RULES,
        tags=["master data"],
        summary="Delete a location no channel or rule uses (409 otherwise; set active=false instead)",
        responses=WRITE_PROBLEMS,
    )
    async def delete_location(code: Code, request: Request, x_change_reason: Reason = None) -> None:
        await store().delete_location(code, actor=principal_of(request.scope).name, reason=x_change_reason or "")
        await changed()

    @get(
        "/v1/channels",
        opt=READ,
        tags=["master data"],
        summary="Channels (the default `online` one when none is configured)",
        responses=problem_responses(401, 403, 429),
    )
    async def list_channels() -> list[Channel]:
        return await store().list_channels()

    @get(
        "/v1/channels/{name:str}",
        opt=READ,
        tags=["master data"],
        summary="One channel",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def get_channel(name: Name) -> Channel:
        return await store().get_channel(name)

    @put(
        "/v1/channels/{name:str}",
        opt=RULES,
        tags=["master data"],
        summary="Create or replace a channel (the first one configured replaces the default `online`)",
        responses=WRITE_PROBLEMS,
    )
    async def put_channel(
        name: Name, data: JSONBody[ChannelBody], request: Request, x_change_reason: Reason = None
    ) -> Channel:
        if data.name is not None and data.name != name:
            raise InvalidInput(f"body name {data.name!r} differs from the path's {name!r}")
        channel = await store().upsert_channel(
            data.to_channel(name), actor=principal_of(request.scope).name, reason=data.reason or x_change_reason or ""
        )
        await changed()
        return channel

    @delete(
        "/v1/channels/{name:str}",
        opt=RULES,
        tags=["master data"],
        summary="Delete a channel no rule uses (409 otherwise)",
        responses=WRITE_PROBLEMS,
    )
    async def delete_channel(name: Name, request: Request, x_change_reason: Reason = None) -> None:
        await store().delete_channel(name, actor=principal_of(request.scope).name, reason=x_change_reason or "")
        await changed()

    return [
        list_locations,
        get_location,
        put_location,
        delete_location,
        list_channels,
        get_channel,
        put_channel,
        delete_channel,
    ]
