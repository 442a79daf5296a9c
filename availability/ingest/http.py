"""HTTP intake: the Litestar routes that take source systems' own formats and put
canonical events on the stream. Mount with `app = Litestar([..., intake_router(runtime)])`.

    POST /webhooks/shopify              Shopify webhooks: HMAC (any configured secret), dedupe
                                        on X-Shopify-Webhook-Id, 200 fast; inventory_levels/update
                                        goes to {prefix}:shopify:levels (drift repair)
    POST /v1/ingest/wms/x12             an X12 944/945/947/846 file (all or nothing)
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
import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, Router, post
from redis.exceptions import RedisError

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
LEVELS_STREAM_CAP = 100_000


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


# --- Shopify location mapping ------------------------------------------------------------------


class _ShopifyLocations:
    """Shopify location id/GID -> our location code, from the rule store's mappings;
    reloaded when the rule store's version moves."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._version: int | None = None
        self._map: dict[int | str, str] = {}
        self._default: str | None = None

    async def get(self) -> tuple[dict[int | str, str], str]:
        rules = self.runtime.rules
        version = rules.version
        if version != self._version:
            mapping: dict[int | str, str] = {}
            for _channel, location, gid in await self.runtime.store.location_mappings():
                mapping[gid] = location
                numeric = gid.rsplit("/", 1)[-1]
                if numeric.isdigit():
                    mapping[numeric] = location
                    mapping[int(numeric)] = location
            book = rules.book
            default = self.runtime.settings.shopify_default_location
            if not default:
                online = book.channel_locations("online") if "online" in book.channels else ()
                default = (online[0] if online else None) or next(iter(book.locations), None) or "DEFAULT"
            self._map, self._default, self._version = mapping, default, version
        return self._map, self._default or "DEFAULT"


_locations_by_runtime: dict[int, _ShopifyLocations] = {}


def _shopify_locations(runtime: Runtime) -> _ShopifyLocations:
    found = _locations_by_runtime.get(id(runtime))
    if found is None or found.runtime is not runtime:
        found = _locations_by_runtime[id(runtime)] = _ShopifyLocations(runtime)
    return found


async def map_shopify_payload(runtime: Runtime, topic: str, body: bytes, webhook: Any = None) -> list[StockEvent]:
    """Map a webhook body to canonical events (also used by DLQ replay). Raises `InvalidEvent`."""
    from adapters.shopify.webhooks import InventoryLevelUpdate, map_webhook

    check_depth(body, runtime.settings.max_json_depth, what="the webhook body")  # an edited replay payload
    location_map, default_location = await _shopify_locations(runtime).get()
    mapped = map_webhook(topic, body, location_map, default_location=default_location, webhook=webhook)
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
        self, request: Request, fmt: str, endpoint: str, *, options: dict | None = None, sniff: bool = False
    ) -> Response:
        """Spool, parse (in a worker process from Settings.ingest_worker_bytes, else a worker
        thread: workers.py, sources.load), publish, dead-letter, answer.

        `sniff`: `fmt` is an ERP prefix whose encoding is told by the first non-blank byte
        (`{` JSON Lines, else CSV). A body of which not one row or document can be read is
        refused whole (422), nothing dead-lettered: it is not the format at all.
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
        return _accepted(report.as_dict())

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
        from adapters.shopify.webhooks import (
            HEADER_HMAC,
            IGNORED_TOPICS,
            MAPPED_TOPICS,
            InventoryLevelUpdate,
            ShopifyWebhook,
            map_webhook,
            verify_hmac,
        )

        path = request.url.path
        try:
            body = await self.read_body(request, limit=min(self.max_bytes, 5 * 1024 * 1024))
        except IntakeProblem as exc:
            return problem(exc.status, exc.slug, exc.detail, path)
        secrets = [s for s in self.settings.shopify_webhook_secrets if s]
        if not verify_hmac(body, request.headers.get(HEADER_HMAC), secrets):
            metrics.WEBHOOKS.labels("unverified", "forged").inc()
            detail = "X-Shopify-Hmac-Sha256 does not match the body under any configured secret"
            if not secrets:
                detail = "no Shopify webhook secret is configured (AVAILABILITY_SHOPIFY_WEBHOOK_SECRETS)"
            return problem(401, "invalid-signature", detail, path)
        try:
            hook = ShopifyWebhook.from_headers(request.headers.items())
        except InvalidEvent as exc:
            return problem(400, "invalid-webhook", exc.detail, path)
        topic = hook.topic.strip().lower()
        topic_label = topic if topic in MAPPED_TOPICS or topic in IGNORED_TOPICS else "other"

        seen_key = self.names.webhook_seen(hook.webhook_id)
        try:
            first = await self.redis.set(seen_key, hook.topic, nx=True, ex=self.settings.webhook_dedupe_seconds)
        except RedisError:
            return problem(503, "unavailable", "the event stream is unavailable; retry later", path)
        if not first:
            metrics.WEBHOOKS.labels(topic_label, "duplicate").inc()
            return _accepted({"status": "duplicate", "webhook_id": hook.webhook_id}, 200)
        try:
            if topic_label == "other":
                metrics.WEBHOOKS.labels(topic_label, "unhandled").inc()
                return _accepted({"status": "ignored", "topic": topic}, 200)
            location_map, default_location = await _shopify_locations(self.runtime).get()
            try:
                mapped = map_webhook(topic, body, location_map, default_location=default_location, webhook=hook)
            except InvalidEvent as exc:
                # Genuine (signed) but unmappable: answer 200 so Shopify does not retry and then
                # drop the subscription; the body waits in the DLQ for a fix and a replay.
                await self.dead_letters.add(
                    [
                        DeadLetter(
                            reason="unmapped",
                            detail=exc.detail,
                            payload=body,
                            stream=f"{INTAKE_PREFIX}shopify:{topic}",
                            entry_id=hook.webhook_id,
                            source="shopify",
                        )
                    ]
                )
                metrics.WEBHOOKS.labels(topic_label, "dead_lettered").inc()
                return _accepted({"status": "dead_lettered", "reason": exc.detail}, 200)
            if isinstance(mapped, InventoryLevelUpdate):
                await self.redis.xadd(
                    self.names.shopify_levels,
                    {
                        "level": msgspec.json.encode(mapped),
                        "webhook_id": hook.webhook_id,
                        "shop": hook.shop_domain,
                        "received_at": int(time.time() * 1000),
                    },
                    maxlen=LEVELS_STREAM_CAP,
                    approximate=True,
                )
                metrics.WEBHOOKS.labels(topic_label, "accepted").inc()
                return _accepted({"status": "accepted", "stream": self.names.shopify_levels}, 200)
            await self.publisher.publish(list(mapped))
        except BaseException:
            # Not recorded as seen: Shopify's retry must get another chance.
            try:
                await self.redis.delete(seen_key)
            except RedisError:
                pass
            raise
        metrics.WEBHOOKS.labels(topic_label, "accepted").inc()
        return _accepted(
            {"status": "accepted", "events": len(mapped), "skipped_without_sku": mapped.skipped_without_sku}, 200
        )


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

    @post("/v1/ingest/wms/x12", status_code=202, request_max_body_size=limit, summary="WMS X12 944/945/947/846 upload")
    async def wms_x12(request: Request) -> Response:
        return await intake.upload(request, "x12", "wms-x12")

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
