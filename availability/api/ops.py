"""Operations routes: liveness, readiness and Prometheus metrics (open, no key needed)."""

from __future__ import annotations

import asyncio

from litestar import Response, get

from availability.api.context import ApiContext
from availability.api.metrics import CONTENT_TYPE
from availability.api.schemas import Health
from availability.embedded_redis import pid_alive, read_owner

READY_TIMEOUT_SECONDS = 2.0


def routes(ctx: ApiContext) -> list:
    @get("/health/live", tags=["operations"], summary="The process answers")
    async def live() -> Health:
        return Health(status="ok")

    @get(
        "/health/ready",
        tags=["operations"],
        summary="Redis answers, the rule store answers, the ledger scripts are loaded",
        description="200 when every check is ok, else 503 with the failing checks.",
    )
    async def ready() -> Response[Health]:
        runtime = ctx.runtime
        checks = {
            "redis": await _check(runtime.redis.ping()),
            "rule_store": await _check(runtime.store.version()),
            "ledger_scripts": await _check(_scripts_ready(runtime.ledger), "not loaded"),
        }
        if runtime.embedded_dir is not None:
            checks["embedded_redis"] = _embedded_state(runtime.embedded_dir)
        ok = all(v == "ok" for v in checks.values())
        return Response(Health(status="ok" if ok else "unavailable", checks=checks), status_code=200 if ok else 503)

    @get(
        "/metrics", tags=["operations"], summary="Prometheus metrics (text exposition format)", media_type=CONTENT_TYPE
    )
    async def metrics() -> Response[bytes]:
        marker_pending = None
        if ctx.marker is not None:
            try:
                marker_pending = await ctx.marker.pending()
            except Exception:  # a gauge must not fail the scrape
                marker_pending = None
        body = await ctx.metrics.render(ctx.runtime, marker_pending)
        return Response(body, media_type=CONTENT_TYPE)

    return [live, ready, metrics]


async def _scripts_ready(ledger) -> bool:
    # A restarted server (see embedded_redis supervision) has an empty script cache; the
    # ledger reloads on NOSCRIPT anyway, so load them here rather than report unready.
    if not await ledger.scripts_loaded():
        await ledger.load_scripts()
    return await ledger.scripts_loaded()


def _embedded_state(data_dir) -> str:
    """The embedded server's supervision state, from its owner's record: "ok", or
    "restarting: <why>" (back within seconds) or "failed: <why>" (serve exits non-zero)."""
    record = read_owner(data_dir)
    if record is None:
        return "error: no owner record"
    if record.state == "running":
        return "ok" if pid_alive(record.server_pid) else f"restarting: server pid {record.server_pid} is gone"
    return f"{record.state}: {record.detail}"[:300]


async def _check(awaitable, falsy: str = "failed") -> str:
    try:
        result = await asyncio.wait_for(awaitable, READY_TIMEOUT_SECONDS)
    except Exception as exc:  # readiness reports failures, it does not raise them
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok" if result is not False else falsy
