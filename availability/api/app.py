"""The Litestar app: routes, auth gate, problem+json errors, metrics, lifespan.

- `create_app(runtime)`: an app over a runtime someone else opened (tests, embedding).
- `create_asgi_app()`: the ASGI factory for uvicorn (`availability serve`, or
  `uvicorn --factory availability.api.app:create_asgi_app`): reads `Settings` from the
  environment, opens the runtime in the lifespan (embedded Redis when no URL is given)
  and runs the background services beside the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from availability.api import backtests, events, exceptions, flows, lookups, master, ops, reservations, rules
from availability.api.allow import options_handlers
from availability.api.asyncapi import asyncapi_routes
from availability.api.context import ApiContext
from availability.api.correlation import CorrelationId, echo_header
from availability.api.fastpath import FastLookups
from availability.api.limits import guarded_request
from availability.api.metrics import MetricsASGI
from availability.api.openapi import refine_openapi
from availability.api.problems import EXCEPTION_HANDLERS
from availability.api.schemas import (
    BatchRequest,
    ChannelBody,
    LocationBody,
    PreviewRequest,
    ReservationBody,
    RollbackBody,
    RuleBody,
)
from availability.api.security import Gate, Principal, ensure_dev_admin_key
from availability.config import Settings
from availability.console import install as install_console
from availability.console import schema_render_plugins

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger("availability.api")

API_VERSION = "1.0"

#: request bodies whose OpenAPI schema comes from msgspec (exact bounds, no unknown fields)
REQUEST_BODIES = (BatchRequest, ReservationBody, RuleBody, RollbackBody, PreviewRequest, LocationBody, ChannelBody,
                  flows.ResolveBody, *backtests.REQUEST_BODIES)


def create_app(runtime: "Runtime", *, services: bool | list[str] = False) -> Litestar:
    """The API over an open `runtime`.

    `services`: also run the background services in the app's lifespan: every one of
    `availability.services.SERVICES` that is installed (True), or the named ones.
    """
    settings = runtime.settings
    ctx = ApiContext(runtime)
    handlers = [
        *lookups.routes(ctx),
        *reservations.routes(ctx),
        *rules.routes(ctx),
        *backtests.routes(ctx),
        *master.routes(ctx),
        *events.routes(ctx),
        *ops.routes(ctx),
        *exceptions.routes(ctx),
        *flows.routes(ctx),
        *_intake_routes(runtime),
        *asyncapi_routes(settings, API_VERSION),
    ]
    console = install_console(ctx)  # the planner console at /console (availability/console)
    app = Litestar(
        # OPTIONS first: Litestar's own would answer only the first handler's methods (allow.py)
        route_handlers=[*options_handlers(handlers), *handlers, *console.routers],
        template_config=console.template_config,
        stores=console.stores,
        on_shutdown=[console.close],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[CorrelationId, DefineMiddleware(Gate, keys=ctx.keys, limiter=ctx.limiter, public_read=settings.public_read)],
        before_send=[echo_header],  # X-Correlation-Id on every response (api/correlation.py)
        lifespan=[_lifespan(ctx, services)],
        openapi_config=OpenAPIConfig(
            title="Availability API",
            version=API_VERSION,
            description=(
                "Real-time available-to-sell per SKU, channel and location; reservations that never oversell; "
                "versioned rules with preview. Errors are RFC 9457 application/problem+json. docs/api.md has the "
                "guide."
            ),
            path="/schema",
            # Swagger UI from vendored assets: no CDN, so /schema renders on a machine with no internet.
            render_plugins=schema_render_plugins(),
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", description="API key"),
                    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
                }
            ),
            security=[{"bearer": []}, {"apiKey": []}],
        ),
        request_max_body_size=settings.max_body_bytes,
        request_class=guarded_request(settings.max_json_depth),
        logging_config=None,
        debug=False,
    )
    refine_openapi(app, REQUEST_BODIES, handlers, settings.public_read)
    # Outside routing, so unknown paths and framework errors are timed as well.
    # The two lookup routes answer from a lean path when the request is plainly valid (fastpath.py).
    fast = FastLookups(app.asgi_handler, ctx)
    app.asgi_handler = MetricsASGI(fast, ctx.metrics)
    app.state.fast_lookups = fast
    app.state.api = ctx
    return app


def _intake_routes(runtime: "Runtime") -> list:
    """The ingest area's HTTP intake (source formats, Shopify webhooks), when installed.

    Uploads need the `events` scope; the Shopify webhook authenticates by its HMAC instead.
    """
    try:
        from availability.ingest.http import intake_handlers  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("availability.ingest"):
            return []
        raise
    handlers = intake_handlers(runtime)
    for handler in handlers:
        if not any(path.startswith("/webhooks/") for path in handler.paths):
            handler.opt.setdefault("scope", "events")
    return handlers


class ServedApp:
    """The ASGI app `availability serve` runs: opens the runtime at startup (embedded Redis
    when no URL is given), builds the API over it, runs the background services, and closes
    everything at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Litestar | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:  # only reachable when a server skips the lifespan
            raise RuntimeError("availability API started without its lifespan (use lifespan='on')")
        await self.app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        from availability.bootstrap import open_runtime  # noqa: PLC0415

        await receive()  # lifespan.startup
        started = False
        try:
            async with AsyncExitStack() as stack:
                runtime = await stack.enter_async_context(open_runtime(self.settings, flows=True))
                app = create_app(runtime, services=self.settings.services if self.settings.services is not None else True)
                await stack.enter_async_context(app.lifespan())
                self.app = app
                started = True
                _settle_heap()
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                self.app = None
        except Exception as exc:
            log.exception("API %s failed", "shutdown" if started else "startup")
            kind = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": kind, "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.shutdown.complete"})


def _settle_heap() -> None:
    """Move everything start-up created (modules, SQLAlchemy, FastStream, the first RuleBook)
    out of the cyclic GC's reach: a full collection would otherwise walk all of it, and on a
    loaded server that showed as 80-100 ms pauses, the whole p99 of the lookup path."""
    gc.collect()
    gc.freeze()
    # What survives from here on is mostly the RuleBook's memoised lookups; full collections
    # walking them every few hundred ms cost 4-6 ms each, so collect the old generation less often.
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(max(gen0, 5_000), gen1, 100)


def create_asgi_app() -> ServedApp:
    """ASGI factory (`uvicorn --factory availability.api.app:create_asgi_app`): settings from the environment."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return ServedApp(Settings())


def _lifespan(ctx: ApiContext, services: bool | list[str]):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = ctx.runtime
            await _load_keys(ctx)
            refresher = asyncio.create_task(_refresh_keys(ctx), name="api-keys-refresh")
            stack.push_async_callback(_cancel, refresher)
            await ctx.open_reader()
            stack.push_async_callback(ctx.close_reader)
            await ctx.open_events()
            stack.push_async_callback(ctx.close_events)
            stack.push_async_callback(ctx.flow_stores.close)  # the flows' SQL store (api/flows.py)
            if services:
                await _start_services(ctx, runtime, services, stack)
            log.info(
                "API ready: rules v%s, events %s, public_read=%s",
                runtime.rules.book.version,
                ctx.events_mode,
                ctx.settings.public_read,
            )
            yield

    return lifespan


async def _start_services(
    ctx: ApiContext, runtime: "Runtime", services: bool | list[str], stack: AsyncExitStack
) -> None:
    from availability.services import build_services  # noqa: PLC0415

    # Other processes (the CLI, other replicas) change rules too: poll for their changes.
    await runtime.rules.start_background()
    names = None if services is True else list(services)
    for service in build_services(runtime, names):
        await service.start()
        stack.push_async_callback(service.stop)
        ctx.services.append(service)
        if getattr(service, "name", None) == "rules-dirty":
            ctx.marker = service  # type: ignore[assignment]
        log.info("service %s started", getattr(service, "name", type(service).__name__))


async def _load_keys(ctx: ApiContext) -> None:
    settings = ctx.settings
    await ctx.keys.refresh(ctx.runtime.store)
    if ctx.keys.configured or settings.public_read or not settings.dev_admin_key:
        return
    key = ensure_dev_admin_key(settings.data_dir)
    ctx.keys.add(key, Principal("dev-admin", frozenset({"admin"})))
    log.warning(
        "no API key is configured: using the development admin key from %s/dev-admin-key. "
        "Call with `Authorization: Bearer %s`. Configure AVAILABILITY_API_KEYS (or AVAILABILITY_PUBLIC_READ) "
        "for anything but local use.",
        settings.data_dir,
        key,
    )


async def _refresh_keys(ctx: ApiContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.api_keys_refresh_seconds)
        try:
            await ctx.keys.refresh(ctx.runtime.store)
        except Exception:  # keep the keys we have; retry next tick
            log.exception("reloading API keys from the rule store failed")


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
