"""The simulator's HTTP app (Litestar): the Admin GraphQL endpoint and the
simulator-only control endpoints under ``/_sim/`` (never on real Shopify; no auth)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath

from adapters.shopify.gid import GidError

from . import payments
from .bulk import BulkOperations
from .config import VERSION_RE, SimulatorConfig
from .faults import buyer_loop, external_writer_loop
from .gql import INVENTORY_MUTATIONS, Context, QueryError, ValidationFailed, prepare, run
from .customers import customer_routes
from .sales import CheckoutRefused
from .state import SimulatorState
from ._util import canonical_hash
from .webhooks import WebhookSender

_AUTH_ERROR = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
_SERVER_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers)


def _cost_ext(requested: float | None, actual: float | None, status: dict[str, Any]) -> dict[str, Any]:
    def num(v: float | None) -> int | float | None:
        return int(v) if v is not None and float(v).is_integer() else v

    return {"cost": {"requestedQueryCost": num(requested), "actualQueryCost": num(actual), "throttleStatus": status}}


def _sim(request: Request[Any, Any, Any]) -> SimulatorState:
    return request.app.state.sim


def _sender(request: Request[Any, Any, Any]) -> WebhookSender:
    return request.app.state.webhooks


def _base_url(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/")


async def _read_json(request: Request[Any, Any, Any]) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    return msgspec.json.decode(raw)


@post("/admin/api/{version:str}/graphql.json", status_code=200)
async def graphql_endpoint(request: Request[Any, Any, Any], version: FromPath[str]) -> Response[bytes]:
    state, sender = _sim(request), _sender(request)
    arrived = state.now()
    token = request.headers.get("x-shopify-access-token")
    if not state.token_valid(token):
        state.count_call(authorized=False)
        return _json(_AUTH_ERROR, 401)
    assert token is not None
    if not VERSION_RE.match(version):
        return _json({"errors": "Not Found"}, 404)
    try:
        payload = await _read_json(request)
    except msgspec.DecodeError:
        return _json({"errors": {"query": "Required parameter missing or invalid"}}, 400)
    query = payload.get("query") if isinstance(payload, dict) else None
    variables = payload.get("variables") if isinstance(payload, dict) else None
    operation_name = payload.get("operationName") if isinstance(payload, dict) else None
    if variables is None:
        variables = {}
    if not isinstance(query, str) or not query.strip() or not isinstance(variables, dict):
        return _json({"errors": {"query": "Required parameter missing or invalid"}}, 400)
    if operation_name is not None and not isinstance(operation_name, str):
        return _json({"errors": {"operationName": "must be a string"}}, 400)
    state.count_call(authorized=True)
    state.bulk.base_url = _base_url(request)

    error_status, hold_answer, latency = state.draw_faults()
    try:
        # Parsing and validating is CPU work: off the loop, so that requests arriving
        # meanwhile are stamped when they arrive (the bucket is judged at arrival).
        prepared = await asyncio.to_thread(prepare, query, variables, version, costs=state.costs, operation_name=operation_name)
    except QueryError as exc:
        state.count("graphql_errors")
        return _json({"errors": [exc.to_error()], "extensions": _cost_ext(0, 0, state.bucket_status(token))})
    except ValidationFailed as exc:
        state.count("graphql_errors")
        return _json({"errors": exc.errors, "extensions": _cost_ext(0, 0, state.bucket_status(token))})

    if error_status is not None:
        state.count("injected_errors")
        if state.faults.error_marks_key_failed:
            for call in prepared.calls:
                if call.name in INVENTORY_MUTATIONS and call.idem_key:
                    state.idempotency_failed_attempt(call.idem_key, canonical_hash({"field": call.name, "input": call.args["input"]}))
        return _json({"errors": _SERVER_ERRORS.get(error_status, "Server Error")}, error_status)

    requested = prepared.requested_cost
    if requested > state.config.max_query_cost:
        state.count("max_cost_exceeded")
        err = {
            "message": f"Query cost is {requested:.0f}, which exceeds the single query max cost limit ({state.config.max_query_cost}).",
            "extensions": {"code": "MAX_COST_EXCEEDED", "cost": int(requested), "maxCost": state.config.max_query_cost},
        }
        return _json({"errors": [err], "extensions": _cost_ext(requested, None, state.bucket_status(token))})

    admitted, throttle_status = state.admit(token, requested, arrived)
    if not admitted:
        body = {
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": _cost_ext(requested, None, throttle_status),
        }
        status_code = state.config.throttle_http_status
        headers = None
        if status_code == 429:
            wait = max(0.0, (requested - throttle_status["currentlyAvailable"]) / throttle_status["restoreRate"])
            headers = {"Retry-After": f"{max(1.0, math.ceil(wait)):.1f}"}
        return _json(body, status_code, headers)

    if not prepared.is_mutation:
        state.count("queries")
    emit = sender.emit if state.config.echo_api_writes else None
    context = Context(state=state, prepared=prepared, latency=latency, emit=emit, base_url=_base_url(request))
    try:
        data, errors, actual = await run(prepared, context)
    except BaseException:
        state.settle(token, requested, 0)
        raise
    if errors:
        state.count("graphql_errors")
    final_status = state.settle(token, requested, actual)
    body: dict[str, Any] = {}
    if errors:
        body["errors"] = errors
    body["data"] = data
    body["extensions"] = _cost_ext(requested, actual, final_status)
    if hold_answer:
        # The work is done; only the answer is late (beyond the client's timeout).
        state.count("injected_timeouts")
        await asyncio.sleep(state.faults.timeout_s)
    return _json(body)


# ---- simulator-only control endpoints ------------------------------------------------


@post("/_sim/seed", status_code=200)
async def sim_seed(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        spec = await _read_json(request)
        return _json(_sim(request).seed(spec))
    except (msgspec.DecodeError, ValueError, KeyError, TypeError, GidError, AttributeError) as exc:
        return _json({"error": f"bad seed: {exc}"}, 400)


@get("/_sim/levels")
async def sim_levels(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json({"levels": _sim(request).levels_detail()})


@get("/_sim/stats")
async def sim_stats(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = _sim(request)
    return _json({"stats": state.stats, "bucket": state.bucket_status(), "plan": state.limits, "cost_model": state.costs})


@get("/_sim/history")
async def sim_history(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json({"history": _sim(request).history})


@get("/_sim/faults")
async def sim_faults_get(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json(_sim(request).faults)


@post("/_sim/faults", status_code=200)
async def sim_faults(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        changes = await _read_json(request)
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        return _json(_sim(request).set_faults(**changes))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return _json({"error": f"bad faults: {exc}"}, 400)


@post("/_sim/webhook", status_code=200)
async def sim_webhook(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        body = await _read_json(request)
        url, secret = body.get("url"), body.get("secret")
        if url is not None and not isinstance(url, str) or secret is not None and not isinstance(secret, str):
            raise ValueError("url and secret must be strings")
    except (msgspec.DecodeError, ValueError, AttributeError) as exc:
        return _json({"error": f"bad webhook config: {exc}"}, 400)
    _sim(request).configure_webhook(url, secret)
    return _json({"url": url})


@post("/_sim/external-change", status_code=200)
async def sim_external_change(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, sender = _sim(request), _sender(request)
    try:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        changed = state.external_change(body.get("inventory_item_id"), body.get("location_id"), body.get("available"), body.get("delta"))
    except (msgspec.DecodeError, ValueError, KeyError, TypeError, GidError) as exc:
        return _json({"error": f"bad external change: {exc}"}, 400)
    if changed is None:
        return _json({"error": "no stocked level to change"}, 409)
    delivery = await sender.level_update(*changed)
    return _json({"change": state.level_webhook_body(*changed), "webhook": delivery})


@post("/_sim/checkout", status_code=201)
async def sim_checkout(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A shopper checks out (simulator control endpoint: drives Shopify's own sales).
    Body ``{"line_items": [{"inventory_item_id" | "sku", "quantity"}], "location_id"?,
    "source_name"?: "web" | "pos", "presentment"?: {"currency", "rate"}}``; 201 with the order, 409 when Shopify would refuse
    (not enough available for a DENY item), 400 for a malformed request."""
    state, sender = _sim(request), _sender(request)
    try:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        source = body.get("source_name", "web")
        if source not in ("web", "pos"):
            raise ValueError("source_name is web or pos")
        presentment = body.get("presentment")
        if presentment is not None and not isinstance(presentment, dict):
            raise ValueError('presentment is {"currency", "rate"}')
        order, events = state.checkout(body.get("line_items"), body.get("location_id"), source,
                                       customer_id=body.get("customer_id"), presentment=presentment)
    except (msgspec.DecodeError, ValueError) as exc:
        return _json({"error": f"bad checkout: {exc}", "code": "INVALID"}, 400)
    except CheckoutRefused as exc:
        return _json({"error": exc.message, "code": exc.code}, exc.status)
    sender.emit(events)
    return _json({"order": order}, 201)


@post("/_sim/orders/{order_id:int}/cancel", status_code=200)
async def sim_cancel(request: Request[Any, Any, Any], order_id: FromPath[int]) -> Response[bytes]:
    """Cancel an order with restock (simulator control endpoint)."""
    state, sender = _sim(request), _sender(request)
    try:
        body = await _read_json(request)
        reason = body.get("reason", "customer") if isinstance(body, dict) else "customer"
        order, events = state.cancel_order(order_id, reason)
    except msgspec.DecodeError as exc:
        return _json({"error": f"bad cancel: {exc}", "code": "INVALID"}, 400)
    except CheckoutRefused as exc:
        return _json({"error": exc.message, "code": exc.code}, exc.status)
    sender.emit(events)
    return _json({"order": order})


@post("/_sim/orders/{order_id:int}/money", status_code=200)
async def sim_order_money(request: Request[Any, Any, Any], order_id: FromPath[int]) -> Response[bytes]:
    """An order's presentment currency and rate and its shipping charge (simulator control:
    refunds then carry shop and presentment money apart). Body ``{"currency"?, "rate"?, "shipping"?}``."""
    from .refunds import Refused  # noqa: PLC0415

    state = _sim(request)
    try:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        state.refunds.set_money(order_id, currency=body.get("currency"), rate=body.get("rate"),
                                shipping=body.get("shipping"))
    except (msgspec.DecodeError, ValueError) as exc:
        return _json({"error": f"bad request: {exc}", "code": "INVALID"}, 400)
    except Refused as exc:
        return _json({"error": exc.message, "code": exc.code}, 404 if exc.code == "NOT_FOUND" else 400)
    return _json({"ok": True})


@post("/_sim/orders/{order_id:int}/fulfilled", status_code=200)
async def sim_order_fulfilled(request: Request[Any, Any, Any], order_id: FromPath[int]) -> Response[bytes]:
    """Mark an order's units fulfilled (simulator control, until fulfillmentCreate exists):
    body ``{"line_item_id"?, "quantity"?}``, all open units when empty."""
    from .refunds import Refused  # noqa: PLC0415

    state = _sim(request)
    try:
        body = await _read_json(request)
        body = body if isinstance(body, dict) else {}
        state.refunds.mark_fulfilled(order_id, body.get("line_item_id"), body.get("quantity"))
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        return _json({"error": f"bad request: {exc}", "code": "INVALID"}, 400)
    except Refused as exc:
        return _json({"error": exc.message, "code": exc.code}, 404 if exc.code == "NOT_FOUND" else 400)
    return _json({"ok": True})


@get("/_sim/orders")
async def sim_orders(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = _sim(request)
    return _json({"orders": [state.order_webhook_body(state.order(i)) for i in state.order_ids()]})


@post("/_sim/fulfillments", status_code=200)
async def sim_fulfillment(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Fulfil as a merchant would in the admin (simulator control endpoint): the body is
    ``fulfillmentCreate``'s ``FulfillmentInput``; answers its payload (userErrors 422)."""
    state, sender = _sim(request), _sender(request)
    try:
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
    except (msgspec.DecodeError, ValueError) as exc:
        return _json({"error": f"bad fulfillment: {exc}"}, 400)
    payload, events = state.fulfillment_create(body)
    sender.emit(events)
    return _json(payload, 422 if payload["userErrors"] else 200)


@post("/_sim/staged-uploads", status_code=201)
async def sim_staged_upload(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Target of ``stagedUploadsCreate``: a multipart POST with the returned parameters
    and the JSONL as the ``file`` field (as a signed bucket upload takes it)."""
    bulk: BulkOperations = _sim(request).bulk
    try:
        form = await request.form()
    except Exception as exc:  # a malformed multipart body is the caller's error
        return _json({"error": f"bad upload: {exc}"}, 400)
    key = form.get("key")
    upload = form.get("file")
    if not isinstance(key, str) or upload is None:
        return _json({"error": "an upload needs the key parameter and a file field"}, 400)
    content = await upload.read() if isinstance(upload, UploadFile) else str(upload).encode()
    if not bulk.stage(key, content):
        return _json({"error": "unknown staged upload key (call stagedUploadsCreate first)"}, 403)
    return Response(content=b"", status_code=201)


@get("/_sim/bulk/{name:str}")
async def sim_bulk_result(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    try:
        op_id = int(name.removesuffix(".jsonl"))
    except ValueError:
        return _json({"error": "no such result"}, 404)
    data = _sim(request).bulk.result(op_id)
    if data is None:
        return _json({"error": "no such result"}, 404)
    return Response(content=data, status_code=200, media_type="application/jsonl")


@post("/_sim/reset", status_code=200)
async def sim_reset(request: Request[Any, Any, Any]) -> Response[bytes]:
    _sim(request).reset()
    return _json({"reset": True})


def create_app(config: SimulatorConfig | None = None, state: SimulatorState | None = None) -> Litestar:
    """Build the simulator app. The state is at ``app.state.sim`` (a :class:`SimulatorState`)."""
    config = config or (state.config if state else SimulatorConfig())
    sim_state = state or SimulatorState(config)
    bulk: BulkOperations = sim_state.bulk
    sender = WebhookSender(sim_state)
    bulk.emit = sender.emit
    sim_state.emit_webhooks = sender.emit  # fulfillments/create (fulfillment.py)
    sim_state.refunds.emit = sender.emit  # Shopify always announces refunds and returns
    background: list[asyncio.Task[Any]] = []

    async def on_startup() -> None:
        await sender.start()
        loop = asyncio.get_running_loop()
        background.append(loop.create_task(external_writer_loop(sim_state, sender)))
        background.append(loop.create_task(buyer_loop(sim_state, sender)))

    async def on_shutdown() -> None:
        for t in background:
            t.cancel()
        for t in background:
            with contextlib.suppress(BaseException):
                await t
        background.clear()
        await bulk.stop()
        await sender.stop()

    return Litestar(
        route_handlers=[
            graphql_endpoint,
            sim_seed,
            sim_levels,
            sim_stats,
            sim_history,
            sim_faults_get,
            sim_faults,
            sim_webhook,
            sim_external_change,
            sim_checkout,
            sim_cancel,
            sim_orders,
            sim_fulfillment,
            sim_order_money,
            sim_order_fulfilled,
            sim_staged_upload,
            sim_bulk_result,
            sim_reset,
            *customer_routes,
            *payments.ROUTES,
        ],
        state=State({"sim": sim_state, "webhooks": sender}),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        openapi_config=None,
        logging_config=None,  # leave the host process's logging alone
        debug=False,
        request_max_body_size=200 * 1024 * 1024,
    )
