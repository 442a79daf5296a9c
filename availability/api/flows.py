"""The sync flows' exception queue and the customer match report, over HTTP.

    GET  /v1/flows/exceptions                  list (filter: flow, owner, reason, open, all)
    GET  /v1/flows/exceptions/{id}             one
    POST /v1/flows/exceptions/{id}/retry       close it and settle its document again
    POST /v1/flows/exceptions/{id}/resolve     close it, post nothing (handled elsewhere)
    POST /v1/flows/exceptions/{id}/replay      post the order again from its stored
                                               document, also after a resolve (orders)
    GET  /v1/flows/customers/matches           why each customer maps to its ERP party

The queue is the shared `flow_exceptions` table (availability/flows/documents.py): the
order, returns, finance and fulfilment flows' exceptions, one id space; retry and resolve go to the
exception's own flow (its store and work queue). Reads need the `read` scope, the three
actions `flows` (people who work the queue). The stores (SQL, the service's database) are
opened on first use and closed with the app. The same operations are `availability flows
[returns|finance|fulfilment] exceptions ...` on the CLI (docs/runbooks/order-exceptions.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import Struct

from availability.api.context import ApiContext
from availability.api.problems import ApiError, problem_responses
from availability.api.security import principal_of

READ = {"scope": "read"}
WORK = {"scope": "flows"}
ExceptionId = Annotated[int, PathParameter(description="the exception's id", ge=1, le=2**53)]


class UnknownException(ApiError):
    status = 404
    slug = "unknown-exception"


class ExceptionClosed(ApiError):
    status = 409
    slug = "exception-closed"


class NotReplayableOrder(ApiError):
    status = 409
    slug = "not-replayable"


class ExceptionView(Struct, kw_only=True):
    id: int
    #: orders, returns, finance, fulfilment
    flow: str
    #: the document it is about (an order's "shop#number", a refund's "shop#refund-ID", a
    #: payout's "shop#payout-ID", a shipment's "wms:WAREHOUSE:ID" / "erp:ID")
    reference: str
    #: unknown_sku, unknown_location, erp_validation, erp_down, invalid_order, amount_mismatch, ...
    reason: str
    #: who works it: commerce, operations, finance, platform
    owner: str
    detail: str | None = None
    #: open | resolved
    status: str
    created_ms: int
    resolved_ms: int | None = None
    resolved_by: str | None = None
    note: str | None = None
    #: the documents involved (finance: payout, transactions, ERP entry, both amounts)
    documents: dict[str, Any] | None = None


class ExceptionPage(Struct, kw_only=True):
    exceptions: list[ExceptionView]
    #: pass as `after` for the next page; absent on the last page
    next: int | None = None


class ResolveBody(Struct, kw_only=True, forbid_unknown_fields=True):
    #: why it is closed without posting (kept with the exception)
    note: str = ""


class ActionResult(Struct, kw_only=True):
    id: int
    reference: str
    outcome: str


class MatchView(Struct, kw_only=True):
    source: str
    party_id: int | None = None
    state: str
    rule: str | None = None
    confidence: float | None = None
    key: str | None = None
    why: str | None = None
    merged_into: str | None = None
    same_party_as: list[str] = []


class MatchReport(Struct, kw_only=True):
    sources: int
    parties: int
    by_rule: dict[str, int]
    matches: list[MatchView]


class _Stores:
    """The exception desk (every flow's queue, availability/flows/desk.py), opened once per
    app on first use; `get()` is the order flow's store and queue (the match report)."""

    def __init__(self, ctx: ApiContext) -> None:
        from availability.flows.desk import ExceptionDesk  # noqa: PLC0415

        self.desk = ExceptionDesk(ctx.settings.resolved_database_url(), ctx.runtime.redis, ctx.settings.key_prefix)

    async def get(self):
        return await self.desk.parts("orders")

    async def close(self) -> None:
        await self.desk.close()


def _actor(request: Request) -> str:
    """The key's name: recorded as who retried, resolved or replayed."""
    return principal_of(request.scope).name or "api"


def routes(ctx: ApiContext) -> list:
    stores = _Stores(ctx)
    ctx.flow_stores = stores  # type: ignore[attr-defined]  # closed by the app's shutdown hook

    desk = stores.desk

    async def _one(exception_id: int) -> dict:
        row = await desk.get(exception_id)
        if row is None:
            raise UnknownException(f"no flow exception {exception_id}")
        return row

    @get("/v1/flows/exceptions", opt=READ, tags=["flows"], summary="The sync flows' exception queue",
         description="Oldest first. `open=false` lists resolved ones, `all=true` both.",
         responses=problem_responses(401, 403, 429))
    async def list_exceptions(
        flow: Annotated[str | None, QueryParameter(description="orders, returns, finance, fulfilment",
                                                   pattern=r"^[a-z_]{1,32}$")] = None,
        owner: Annotated[str | None, QueryParameter(description="commerce, operations, finance, platform",
                                                    pattern=r"^[a-z_]{1,32}$")] = None,
        reason: Annotated[str | None, QueryParameter(description="e.g. unknown_sku", pattern=r"^[a-z_]{1,64}$")] = None,
        open: Annotated[bool, QueryParameter(description="true: open ones; false: resolved ones")] = True,  # noqa: A002
        all: Annotated[bool, QueryParameter(description="both, open and resolved (open is then ignored)")] = False,  # noqa: A002
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
        after: Annotated[int, QueryParameter(description="the `next` of the previous page", ge=0, le=2**53)] = 0,
    ) -> ExceptionPage:
        status = None if all else ("open" if open else "resolved")
        rows = await desk.list(status=status, reason=reason, flow=flow, owner=owner, limit=limit, after_id=after)
        views = [ExceptionView(**row) for row in rows]
        return ExceptionPage(exceptions=views, next=views[-1].id if len(views) == limit else None)

    @get("/v1/flows/exceptions/{exception_id:int}", opt=READ, tags=["flows"], summary="One flow exception",
         responses=problem_responses(401, 403, 404, 429))
    async def get_exception(exception_id: ExceptionId) -> ExceptionView:
        return ExceptionView(**await _one(exception_id))

    @post("/v1/flows/exceptions/{exception_id:int}/retry", opt=WORK, tags=["flows"], status_code=202,
          summary="Close the exception and settle its document again (after the cause was fixed)",
          responses=problem_responses(401, 403, 404, 409, 429))
    async def retry(exception_id: ExceptionId, request: Request) -> ActionResult:
        row = await _one(exception_id)
        if row["status"] != "open":
            raise ExceptionClosed(f"exception {exception_id} is {row['status']}: replay it to post the order again")
        await desk.retry(exception_id, by=_actor(request))
        return ActionResult(id=exception_id, reference=row["reference"], outcome="retrying")

    @post("/v1/flows/exceptions/{exception_id:int}/resolve", opt=WORK, tags=["flows"], status_code=200,
          summary="Close the exception without posting (handled outside the flow)",
          responses=problem_responses(401, 403, 404, 409, 429))
    async def resolve(exception_id: ExceptionId, data: JSONBody[ResolveBody], request: Request) -> ActionResult:
        row = await _one(exception_id)
        if row["status"] != "open":
            raise ExceptionClosed(f"exception {exception_id} is already {row['status']}")
        await desk.resolve(exception_id, by=_actor(request), note=data.note[:2000])
        return ActionResult(id=exception_id, reference=row["reference"], outcome="resolved")

    @post("/v1/flows/exceptions/{exception_id:int}/replay", opt=WORK, tags=["flows"], status_code=202,
          summary="Post the exception's order again from its stored document (open or resolved)",
          responses=problem_responses(401, 403, 404, 409, 429))
    async def replay(exception_id: ExceptionId, request: Request) -> ActionResult:
        from availability.flows.desk import NotReplayable as OtherFlow  # noqa: PLC0415
        from availability.flows.orders.flow import NotReplayable  # noqa: PLC0415

        row = await _one(exception_id)
        try:
            await desk.replay(exception_id, by=_actor(request))
        except (NotReplayable, OtherFlow) as exc:
            raise NotReplayableOrder(str(exc)) from None
        return ActionResult(id=exception_id, reference=row["reference"], outcome="replaying")

    @get("/v1/flows/customers/matches", opt=READ, tags=["flows"],
         summary="Customer identity: why each Shopify customer or guest order maps to its ERP party",
         responses=problem_responses(401, 403, 429))
    async def customer_matches(
        shop: Annotated[str | None, QueryParameter(description="only this shop", max_length=200)] = None,
    ) -> MatchReport:
        from availability.flows.customers.identity import match_report  # noqa: PLC0415
        from availability.flows.customers.store import CustomerStore  # noqa: PLC0415

        store, _ = await stores.get()
        report = await match_report(CustomerStore(store.engine), shop=shop)
        return MatchReport(sources=report["sources"], parties=report["parties"], by_rule=report["by_rule"],
                           matches=[MatchView(**m) for m in report["matches"]])

    return [list_exceptions, get_exception, retry, resolve, replay, customer_matches]
