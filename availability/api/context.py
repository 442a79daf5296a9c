"""What the routes share: the runtime (ledger, rule cache, store), keys, limits, metrics.

One `ApiContext` per app. Route handlers are closures over it (built in each routes
module's `routes(ctx)`), so the hot path reads `ctx.runtime.ledger` and
`ctx.runtime.rules.book` directly: no per-request dependency injection.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from availability.api.metrics import ApiMetrics
from availability.api.ratelimit import SharedRateLimiter
from availability.api.security import KeyRing, RateLimiter, keyring_from_settings
from availability.ledger.stockreader import StockReader, open_stock_reader
from availability.config import Settings

if TYPE_CHECKING:
    from availability.bootstrap import Runtime
    from availability.rules.dirtying import RuleChangeMarker

log = logging.getLogger("availability.api")

PUBLISHER_MODULE = "availability.ingest.publisher"


class ApiContext:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.keys: KeyRing = keyring_from_settings(self.settings)
        self.limiter: RateLimiter | SharedRateLimiter = RateLimiter(self.settings.rate_limit_per_second)
        if self.settings.rate_limit_shared and self.settings.rate_limit_per_second > 0:
            self.limiter = SharedRateLimiter(runtime.redis, self.settings.key_prefix, self.settings.rate_limit_per_second)
        self.metrics = ApiMetrics()
        #: set when the events route publishes to the stream (Settings.events_mode)
        self.publisher: Any = None
        self.events_mode: str = "direct"
        #: the rules-dirty service when this app runs it (for its /metrics gauge)
        self.marker: "RuleChangeMarker | None" = None
        self.services: list = []
        #: the hot path's stock reads (auto-pipelined when hiredis is installed; see open_reader)
        self.reader: StockReader = runtime.ledger

    async def open_reader(self) -> None:
        if self.settings.redis_cluster:
            # The pipelined reader talks to one server; on a cluster the ledger's reads go
            # through the cluster client, which sends each SKU's read to its slot's primary.
            return
        self.reader = open_stock_reader(self.runtime.redis_url, self.runtime.ledger)

    async def close_reader(self) -> None:
        close = getattr(self.reader, "close", None)
        if close is not None and self.reader is not self.runtime.ledger:
            await close()
        self.reader = self.runtime.ledger

    async def open_events(self) -> None:
        """Decide between publishing events to the stream and applying them directly."""
        mode = self.settings.events_mode
        if mode == "direct":
            self.events_mode = "direct"
            return
        try:
            module = importlib.import_module(PUBLISHER_MODULE)
        except ModuleNotFoundError as exc:
            missing_ingest = exc.name is not None and PUBLISHER_MODULE.startswith(exc.name)
            if not missing_ingest or mode == "stream":
                raise
            log.info("POST /v1/events applies events directly: %s is not installed", PUBLISHER_MODULE)
            self.events_mode = "direct"
            return
        publisher = module.EventPublisher(self.runtime)
        start = getattr(publisher, "start", None)
        if start is not None:
            await start()
        self.publisher = publisher
        self.events_mode = "stream"

    async def close_events(self) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            for name in ("close", "stop"):
                closer = getattr(publisher, name, None)
                if closer is not None:
                    await closer()
                    break
