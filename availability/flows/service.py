"""`PublisherService`: the Shopify push as a background service of `availability serve`
(registered as "publisher" in availability/services.py) and of `availability publish`.

It runs the publisher loop, outbox recovery, and drift repair (the webhook stream and the
periodic pass). With no `AVAILABILITY_SHOPIFY_URL` / `AVAILABILITY_SHOPIFY_TOKEN` it does
nothing but say so: the dirty set it would drain holds one member per (SKU, location) at
most, so leaving it waiting costs bounded memory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from adapters.shopify.client import ShopifyAdminClient, ThrottleGovernor
from availability.flows import metrics
from availability.flows.drift import DriftRepairer
from availability.flows.publisher import Publisher, PushConfig
from availability.flows.sales import SalesConfig

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

#: settings this area reads beyond the ones every area knows, with their defaults
#: (appended to availability/config.py; read with defaults so an older Settings works)
FLOW_SETTINGS_DEFAULTS: dict[str, Any] = {
    "shopify_drift_interval_seconds": 900.0,
    "shopify_reserve_points": 50.0,
    "shopify_timeout_seconds": 10.0,
    "push_max_attempts": 8,
    "push_batch_size": 250,
}


def setting(settings: Any, name: str) -> Any:
    value = getattr(settings, name, None)
    return FLOW_SETTINGS_DEFAULTS[name] if value is None else value


def shopify_configured(settings: Any) -> bool:
    return bool(getattr(settings, "shopify_url", None) and getattr(settings, "shopify_token", None))


def build_client(settings: Any, *, governor: ThrottleGovernor | None = None) -> ShopifyAdminClient:
    """The Shopify client for this process: one governor per process, shared by every call."""
    return ShopifyAdminClient(
        settings.shopify_url or "http://shopify.invalid",
        settings.shopify_token or "",
        settings.shopify_api_version,
        timeout=float(setting(settings, "shopify_timeout_seconds")),
        governor=governor or ThrottleGovernor(reserve_margin=float(setting(settings, "shopify_reserve_points"))),
        on_cost=metrics.observe_cost,
    )


def build_publisher(runtime: Runtime, client: ShopifyAdminClient | None = None, **kwargs: Any) -> Publisher:
    return Publisher(
        ledger=runtime.ledger,
        rules=runtime.rules,
        mappings=runtime.store,
        client=client or build_client(runtime.settings),
        config=PushConfig.from_settings(runtime.settings),
        sales=SalesConfig.from_settings(runtime.settings),
        **kwargs,
    )


def build_repairer(publisher: Publisher, settings: Any) -> DriftRepairer:
    return DriftRepairer(publisher, interval_s=float(setting(settings, "shopify_drift_interval_seconds")))


class PublisherService:
    name = "publisher"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.enabled = shopify_configured(runtime.settings)
        self.client: ShopifyAdminClient | None = None
        self.publisher: Publisher | None = None
        self.repairer: DriftRepairer | None = None

    async def start(self) -> None:
        if not self.enabled:
            log.warning(
                "Shopify push off: set AVAILABILITY_SHOPIFY_URL and AVAILABILITY_SHOPIFY_TOKEN "
                "(e.g. `availability sim shopify` for a local simulator)"
            )
            return
        settings = self.runtime.settings
        await self.runtime.rules.start_background()  # mapping and rule changes from other processes
        self.client = build_client(settings)
        self.publisher = build_publisher(self.runtime, self.client)
        self.repairer = build_repairer(self.publisher, settings)
        await self.publisher.start()
        await self.repairer.start()
        log.info(
            "Shopify push to %s (API %s): window %.2f s, drift pass every %.0f s",
            settings.shopify_url,
            settings.shopify_api_version,
            self.publisher.config.window_s,
            self.repairer.interval_s,
        )

    async def stop(self) -> None:
        if self.repairer is not None:
            await self.repairer.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.client is not None:
            await self.client.aclose()
