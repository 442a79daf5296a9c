"""The composition root: the one place that turns `Settings` into running parts.

Entry points (CLI commands, the ASGI app factory, benchmarks) call `open_runtime()` and get
the Redis client, ledger, rule store and rule cache wired together; nothing else reads
configuration or builds clients by itself.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from redis.asyncio import BlockingConnectionPool, Redis

from availability.config import Settings
from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits, ReservationPolicy
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore

log = logging.getLogger("availability")


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    redis_url: str
    ledger: Ledger
    store: RuleStore
    rules: RuleCache
    embedded_redis: EmbeddedRedis | None = None
    #: extra things to close, in reverse order, when the runtime closes
    closers: list = field(default_factory=list)


def make_redis(url: str, *, max_connections: int = 64) -> Redis:
    # A blocking pool makes bursts queue for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30)
    return Redis(connection_pool=pool)


def start_embedded_redis(settings: Settings) -> EmbeddedRedis:
    data_dir = Path(settings.data_dir) / "redis"
    server = EmbeddedRedis(data_dir).start()
    log.info("embedded redis-server %s on %s (data in %s)", server.binary, server.url, data_dir)
    return server


@asynccontextmanager
async def open_runtime(settings: Settings, *, embedded: EmbeddedRedis | None = None) -> AsyncIterator[Runtime]:
    """Build everything from settings; close it all on exit (the embedded Redis last)."""
    owned_redis = None
    if settings.redis_url:
        redis_url = settings.redis_url
    else:
        if embedded is None:
            embedded = owned_redis = start_embedded_redis(settings)
        redis_url = embedded.url
    redis = make_redis(redis_url)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = RuleStore(settings.resolved_database_url())
    try:
        await store.start()
        rules = RuleCache(store, refresh_interval=settings.rules_refresh_seconds)
        await rules.start()
        ledger = Ledger(
            redis,
            keys=KeyLayout(settings.key_prefix),
            limits=LedgerLimits(
                idempotency_window_ms=settings.idempotency_window_seconds * 1000,
                journal_cap=settings.journal_cap,
                delta_log_cap=settings.delta_log_cap,
            ),
            reservations=ReservationPolicy(
                default_ttl_ms=settings.reservation_default_ttl_seconds * 1000,
                lease_ms=int(settings.reservation_lease_seconds * 1000),
                retention_ms=settings.reservation_retention_seconds * 1000,
                group_max=settings.reservation_group_max,
                debug_pause_at=settings.debug_reserve_pause_at,
                debug_pause_seconds=settings.debug_reserve_pause_seconds,
            ),
        )
        await ledger.load_scripts()
        runtime = Runtime(settings, redis, redis_url, ledger, store, rules, embedded)
        try:
            yield runtime
        finally:
            for closer in reversed(runtime.closers):
                await closer()
            await rules.stop()
    finally:
        await store.close()
        await redis.aclose()
        if owned_redis is not None:
            owned_redis.stop()
