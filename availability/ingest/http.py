"""HTTP intake: the Litestar routes that take source systems' own formats and put
canonical events on the stream. Mount with `app = Litestar([..., intake_router(runtime)])`.

    POST /webhooks/shopify              Shopify webhooks (ingest/shopify_webhooks.py): a configured
                                        shop, its HMAC, dedupe on webhook and event id, stale
                                        level retries dropped, 200 fast; inventory_levels/update
                                        goes to the shop's drift-repair stream
    POST /v1/ingest/wms/x12             an X12 944/945/947/846 file (all or nothing); its 945s
                                        also go to the fulfilment flow ("fulfilment" in the answer)
    POST /v1/ingest/erp/snapshot        ERP stock snapshot, CSV or JSON Lines, streamed
    POST /v1/ingest/erp/purchase-orders ERP purchase orders, CSV or JSON Lines
    POST /v1/ingest/erp/transfers       ERP transfers, CSV or JSON Lines
    POST /v1/ingest/pos                 till transactions: a JSON object, array or JSON Lines
    POST /v1/ingest/oms                 OMS order messages: a JSON object, array or JSON Lines

Answers: 202 `{"format", "events", "rejected", "dead_lettered", "not_kept", "rejects":
[{"where", "reason"}]}` once the events are on the stream (applied moments later by the
consumer); rejected rows or documents of an otherwise good upload are dead-lettered
(`availability dlq list`), at most Settings.dlq_max_per_request per upload (the rest are
counted in `not_kept`). Input refused as a whole (not one row readable, JSON nested beyond
Settings.max_json_depth, a bad header or envelope) gets a 4xx `application/problem+json`
naming the problem; never a 500. Bodies of Settings.ingest_worker_bytes or more are
parsed and published by a worker process (workers.py), smaller ones in a worker thread:
never on the event loop that serves lookups. CSV vs JSON Lines is chosen by
`?format=csv|jsonl`, else by Content-Type (text/csv; application/x-ndjson,
application/jsonl), else by sniffing the first byte.

These routes carry no authentication of their own except the webhook's HMAC: the API
app's guards (API keys with a write scope) apply when it mounts the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, Router, post
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from availability.domain.errors import AvailabilityError, InvalidEvent
from availability.domain.jsonlimits import check_depth
from availability.domain.events import StockEvent
from availability.ingest import metrics
from availability.ingest.deadletters import DeadLetter, DeadLetters
from availability.ingest.publisher import EventPublisher
from availability.ingest.sources import INTAKE_PREFIX, load
from availability.ingest.streams import StreamNames
from availability.ingest.workers import UploadWorkers

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
_encoder = msgspec.json.Encoder()
#: uploads held in memory up to this size, then spooled to a temporary file
SPOOL_BYTES = 8 * 1024 * 1024


class IntakeProblem(AvailabilityError):
    """A request the intake refuses as a whole (status and slug set per instance)."""

    def __init__(self, status: int, slug: str, detail: str, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.status = status
        self.slug = slug


def problem(status: int, slug: str, detail: str, instance: str = "", **extra: Any) -> Response:
    body = {
        "type": f"urn:availability:problem:{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        **({"instance": instance} if instance else {}),
        **extra,
    }
    return Response(content=_encoder.encode(body), status_code=status, media_type=PROBLEM)


def _accepted(body: dict[str, Any], status: int = 202) -> Response:
    return Response(content=_encoder.encode(body), status_code=status, media_type="application/json")


# --- Shopify webhooks: availability/ingest/shopify_webhooks.py ------------------------------------

_handlers_by_runtime: dict[int, Any] = {}


def shopify_webhooks(runtime: Runtime):
    """The runtime's `ShopifyWebhookHandler` (one per runtime: it caches location maps)."""
    from availability.ingest.shopify_webhooks import ShopifyWebhookHandler

    found = _handlers_by_runtime.get(id(runtime))
    if found is None or found.runtime is not runtime:
        found = _handlers_by_runtime[id(runtime)] = ShopifyWebhookHandler(runtime)
    return found


async def map_shopify_payload(runtime: Runtime, topic: str, body: bytes, webhook: Any = None) -> list[StockEvent]:
    """Map a webhook body to canonical events (also used by DLQ replay). Raises `InvalidEvent`."""
    from adapters.shopify.webhooks import InventoryLevelUpdate, map_webhook
    from availability.flows.inventory.shops import shop_for_domain

    check_depth(body, runtime.settings.max_json_depth, what="the webhook body")  # an edited replay payload
    handler = shopify_webhooks(runtime)
    shop = shop_for_domain(handler.shops, getattr(webhook, "shop_domain", None)) or handler.shops[0]
    location_map, default_location = await handler.locations(shop)
    mapped = map_webhook(
        topic, body, location_map, default_location=default_location, webhook=webhook, channel=shop.channel
    )
    if isinstance(mapped, InventoryLevelUpdate):
        raise InvalidEvent("inventory_levels/update carries no ledger event (it goes to the drift-repair stream)")
    return list(mapped)


# --- the intake ----------------------------------------------------------------------------------


class HttpIntake:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.redis = runtime.redis
        self.names = StreamNames.from_settings(runtime.settings)
        self.publisher = EventPublisher(runtime)
        self.dead_letters = DeadLetters.from_settings(runtime.redis, runtime.settings)
        self.max_bytes = runtime.settings.ingest_max_body_bytes
        self.max_depth = runtime.settings.max_json_depth
        #: large uploads load in a worker process (Redis Streams broker only)
        self.workers = (
            UploadWorkers(runtime) if runtime.settings.broker == "redis" and runtime.settings.ingest_worker_bytes else None
        )
        #: hands an upload's 945s to the fulfilment flow (built on first use)
        self._wms: Any = None

    async def read_body(self, request: Request, limit: int | None = None) -> bytes:
        limit = limit or self.max_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise IntakeProblem(413, "body-too-large", f"body of {declared} bytes exceeds the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise IntakeProblem(413, "body-too-large", f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            check_depth(body, self.max_depth, what="the body")
        except InvalidEvent as exc:
            raise IntakeProblem(exc.status, exc.slug, exc.detail, **exc.extra) from None
        return body

    async def spool_body(self, request: Request) -> tempfile.SpooledTemporaryFile:
        """Stream the body to a spooled temporary file (memory, then disk), bounded in size."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise IntakeProblem(413, "body-too-large", f"body of {declared} bytes exceeds the limit of {self.max_bytes}")
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - the caller closes it
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise IntakeProblem(413, "body-too-large", f"body exceeds the limit of {self.max_bytes} bytes")
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    # --- uploads -----------------------------------------------------------------------------

    async def upload(
        self, request: Request, fmt: str, endpoint: str, *, options: dict | None = None, sniff: bool = False,
        then: Any = None,
    ) -> Response:
        """Spool, parse (in a worker process from Settings.ingest_worker_bytes, else a worker
        thread: workers.py, sources.load), publish, dead-letter, answer.

        `sniff`: `fmt` is an ERP prefix whose encoding is told by the first non-blank byte
        (`{` JSON Lines, else CSV). A body of which not one row or document can be read is
        refused whole (422), nothing dead-lettered: it is not the format at all.
        `then(spool)`: called once the events are published; a dict it returns is added to
        the answer (the x12 route hands 945s to the fulfilment flow).
        """
        try:
            spool = await self.spool_body(request)
            with spool:
                head = spool.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
                if not head:
                    raise IntakeProblem(400, "empty-body", "the request body is empty (or only blank)")
                spool.seek(0)
                if sniff:
                    fmt = f"{fmt}-jsonl" if head == b"{" else f"{fmt}-csv"
                size = spool.seek(0, 2)
                spool.seek(0)
                kwargs = dict(
                    label=f"http:{endpoint}",
                    options=options,
                    max_dead_letters=self.settings.dlq_max_per_request,
                    refuse_if_nothing_readable=True,
                    max_depth=self.max_depth,
                )
                if self.workers is not None and size >= self.settings.ingest_worker_bytes:
                    report = await self._in_worker(fmt, spool, kwargs)
                else:
                    report = await load(fmt, spool, self.publisher, self.dead_letters, **kwargs)
                extra = await then(spool) if then is not None else None
        except IntakeProblem as exc:
            metrics.INTAKE_REQUESTS.labels(endpoint, "refused").inc()
            return problem(exc.status, exc.slug, exc.detail, request.url.path, **exc.extra)
        except InvalidEvent as exc:
            metrics.INTAKE_REQUESTS.labels(endpoint, "refused").inc()
            return problem(exc.status, exc.slug, exc.detail, request.url.path, format=fmt, **_jsonable(exc.extra))
        except RedisError as exc:
            metrics.INTAKE_REQUESTS.labels(endpoint, "unavailable").inc()
            log.warning("intake %s: stream unavailable: %s", endpoint, exc)
            return problem(503, "unavailable", "the event stream is unavailable; retry later", request.url.path)
        metrics.INTAKE_REQUESTS.labels(endpoint, "accepted").inc()
        return _accepted({**report.as_dict(), **(extra or {})})

    async def wms_x12(self, request: Request) -> Response:
        """An X12 upload; its 945s also go to the fulfilment flow (flows/fulfilment/wms.py)."""
        from availability.flows.fulfilment.wms import WmsHandoff  # noqa: PLC0415

        if self._wms is None:
            self._wms = WmsHandoff.of_runtime(self.runtime)

        async def to_fulfilment(spool: Any) -> dict[str, Any] | None:
            spool.seek(0)
            data = await asyncio.to_thread(spool.read)
            try:
                answer = await self._wms.take(data, where="http:wms-x12")
            except SQLAlchemyError as exc:
                log.warning("wms-x12: the fulfilment store is unavailable: %s", exc)
                raise IntakeProblem(503, "unavailable", "the fulfilment store is unavailable; send the file again "
                                    "(its stock events are in and are not applied twice)") from None
            return {"fulfilment": answer} if answer is not None else None

        return await self.upload(request, "x12", "wms-x12", then=to_fulfilment)

    async def _in_worker(self, fmt: str, spool: Any, kwargs: dict[str, Any]):
        """Load a large upload in a worker process (availability/ingest/workers.py): the
        spooled body goes to a named file it can open, removed afterwards."""
        assert self.workers is not None
        path = await asyncio.to_thread(_to_named_file, spool)
        try:
            return await self.workers.load(fmt, path, **kwargs)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def tabular_format(self, request: Request, kind: str) -> str:
        """erp-csv / erp-jsonl (or erp-po-*, erp-transfers-*) from ?format=, Content-Type or sniffing."""
        wanted = (request.query_params.get("format") or "").lower()
        if not wanted:
            ctype = (request.headers.get("content-type") or "").lower()
            if "csv" in ctype:
                wanted = "csv"
            elif "ndjson" in ctype or "jsonl" in ctype or "json" in ctype:
                wanted = "jsonl"
        if wanted in ("ndjson", "json"):
            wanted = "jsonl"
        if wanted and wanted not in ("csv", "jsonl"):
            raise IntakeProblem(415, "unsupported-format", f"format {wanted!r} is not csv or jsonl")
        prefix = {"snapshot": "erp", "purchase-orders": "erp-po", "transfers": "erp-transfers"}[kind]
        return f"{prefix}-{wanted}" if wanted else prefix

    async def tabular(self, request: Request, kind: str) -> Response:
        try:
            fmt = self.tabular_format(request, kind)
        except IntakeProblem as exc:
            metrics.INTAKE_REQUESTS.labels(f"erp-{kind}", "refused").inc()
            return problem(exc.status, exc.slug, exc.detail, request.url.path)
        return await self.upload(request, fmt, f"erp-{kind}", sniff=not fmt.endswith(("-csv", "-jsonl")))

    # --- Shopify webhooks --------------------------------------------------------------------

    async def shopify(self, request: Request) -> Response:
        """Read the body; the handler decides everything else."""
        path = request.url.path
        try:
            body = await self.read_body(request, limit=min(self.max_bytes, 5 * 1024 * 1024))
        except IntakeProblem as exc:
            return problem(exc.status, exc.slug, exc.detail, path)
        answer = await shopify_webhooks(self.runtime).handle(request.headers.items(), body)
        if answer.problem:
            return problem(answer.status, answer.problem, answer.body["detail"], path)
        return _accepted(answer.body, answer.status)


def _to_named_file(spool: Any) -> str:
    spool.seek(0)
    with tempfile.NamedTemporaryFile(prefix="availability-upload-", delete=False) as named:
        shutil.copyfileobj(spool, named, 1024 * 1024)
    return named.name


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool, list, dict)) and k not in ("type", "title", "status", "detail", "instance")}


def intake_handlers(runtime: Runtime) -> list:
    """The route handlers, for an app that wants to place them itself."""
    intake = HttpIntake(runtime)
    limit = runtime.settings.ingest_max_body_bytes

    @post("/webhooks/shopify", status_code=200, request_max_body_size=limit, summary="Shopify webhook (HMAC)")
    async def shopify_webhook(request: Request) -> Response:
        try:
            return await intake.shopify(request)
        except RedisError:
            return problem(503, "unavailable", "the event stream is unavailable; retry later", request.url.path)
        except SQLAlchemyError:
            # the order flow records an order in SQL before answering: Shopify retries later
            return problem(503, "unavailable", "the order store is unavailable; retry later", request.url.path)

    @post("/v1/ingest/wms/x12", status_code=202, request_max_body_size=limit, summary="WMS X12 944/945/947/846 upload")
    async def wms_x12(request: Request) -> Response:
        return await intake.wms_x12(request)

    @post("/v1/ingest/erp/snapshot", status_code=202, request_max_body_size=limit, summary="ERP stock snapshot (CSV/JSONL)")
    async def erp_snapshot(request: Request) -> Response:
        return await intake.tabular(request, "snapshot")

    @post("/v1/ingest/erp/purchase-orders", status_code=202, request_max_body_size=limit, summary="ERP purchase orders")
    async def erp_purchase_orders(request: Request) -> Response:
        return await intake.tabular(request, "purchase-orders")

    @post("/v1/ingest/erp/transfers", status_code=202, request_max_body_size=limit, summary="ERP transfers")
    async def erp_transfers(request: Request) -> Response:
        return await intake.tabular(request, "transfers")

    @post("/v1/ingest/pos", status_code=202, request_max_body_size=limit, summary="POS till transactions")
    async def pos(request: Request) -> Response:
        return await intake.upload(request, "pos", "pos")

    @post("/v1/ingest/oms", status_code=202, request_max_body_size=limit, summary="OMS order messages")
    async def oms(request: Request) -> Response:
        return await intake.upload(request, "oms", "oms")

    return [shopify_webhook, wms_x12, erp_snapshot, erp_purchase_orders, erp_transfers, pos, oms]


def intake_router(runtime: Runtime) -> Router:
    """The intake routes as one Router (paths are absolute: /webhooks/..., /v1/ingest/...)."""
    return Router(path="/", route_handlers=intake_handlers(runtime), tags=["ingest"])
