"""Reservation routes: hold all lines or none, release, commit, read.

Idempotent on `reservation_id`: the first request that holds stock answers 201; sending
the same request again answers 200 with the reservation as it is now (same lines and
allocations; `status` shows a later commit), and `Idempotent-Replayed: true`. The same id
with other lines or another channel is 409 reservation-conflict.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from litestar import Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter

from availability.api.context import ApiContext
from availability.api.problems import problem_responses
from availability.api.schemas import RESERVATION_ID_PATTERN, ReservationBody
from availability.domain.errors import AvailabilityError, InsufficientStock
from availability.domain.reservations import Reservation

ReservationId = Annotated[
    str,
    PathParameter(
        description="the reservation id given when it was made", min_length=1, max_length=200, pattern=RESERVATION_ID_PATTERN
    ),
]


def routes(ctx: ApiContext) -> list:
    counter = ctx.metrics.reservations

    @post(
        "/v1/reservations",
        opt={"scope": "reserve"},
        status_code=201,
        tags=["reservations"],
        summary="Reserve stock for an order: every line or none",
        description=(
            "201 with where each line was reserved (`allocations`), or 409 `insufficient-stock` naming the "
            "short lines. A line without `location` is placed by location priority across the channel's "
            "locations. `ttl_seconds` releases the hold automatically if it is neither committed nor released; "
            "absent, the service's default TTL applies (900 s unless configured); `null` holds until "
            "committed or released. Replaying the same request answers 200 with the same reservation; a "
            "retry while an earlier attempt under the id is unfinished answers 409 `reservation-in-progress` "
            "with Retry-After. An error answer means nothing is held."
        ),
        responses={
            200: ResponseSpec(
                Reservation, description="replay of an earlier identical request", generate_examples=False
            ),
            **problem_responses(401, 403, 404, 409, 422, 429, 503),
        },
    )
    async def create_reservation(data: JSONBody[ReservationBody]) -> Response[Reservation]:
        runtime = ctx.runtime
        try:
            reservation, created = await runtime.ledger.reserve_or_replay(data.to_request(), runtime.rules.book)
        except InsufficientStock:
            counter.labels("short").inc()
            raise
        except AvailabilityError:
            counter.labels("rejected").inc()
            raise
        # A replay is answered with the reservation as the first request made it.
        counter.labels("held" if created else "replayed").inc()
        # Percent-encoded: an id is any text but "|", and a header is latin-1 (an id like
        # "ñ😀" must not turn a made reservation into a 500).
        headers = {"Location": f"/v1/reservations/{quote(reservation.reservation_id, safe='')}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(reservation, status_code=201 if created else 200, headers=headers)

    @get(
        "/v1/reservations/{reservation_id:str}",
        opt={"scope": "read"},
        tags=["reservations"],
        summary="A reservation and its current status",
        responses=problem_responses(401, 403, 404, 429),
    )
    async def get_reservation(reservation_id: ReservationId) -> Reservation:
        return await ctx.runtime.ledger.get_reservation(reservation_id)

    @post(
        "/v1/reservations/{reservation_id:str}/release",
        opt={"scope": "reserve"},
        status_code=200,
        tags=["reservations"],
        summary="Give the held stock back (cart abandoned, order cancelled); idempotent",
        responses=problem_responses(401, 403, 404, 409, 429),
    )
    async def release_reservation(reservation_id: ReservationId) -> Reservation:
        return await ctx.runtime.ledger.release(reservation_id)

    @post(
        "/v1/reservations/{reservation_id:str}/commit",
        opt={"scope": "reserve"},
        status_code=200,
        tags=["reservations"],
        summary="Turn the hold into an allocation (order placed); idempotent",
        responses=problem_responses(401, 403, 404, 409, 429),
    )
    async def commit_reservation(reservation_id: ReservationId) -> Reservation:
        return await ctx.runtime.ledger.commit(reservation_id)

    return [create_reservation, get_reservation, release_reservation, commit_reservation]
