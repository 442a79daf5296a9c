"""`PublisherService`: the Shopify push as a background service of `availability serve`
(registered as "publisher" in availability/services.py) and of `availability publish`.

It runs, per shop (availability/flows/inventory/shops.py), the publisher loop, outbox recovery, and
drift repair (the webhook stream, the periodic pass, the sales sweep); with several shops
each claims from its own dirty set, fed from the ledger's (`DirtyFanout`). With no
`AVAILABILITY_SHOPIFY_URL` / `AVAILABILITY_SHOPIFY_TOKEN` (or shops) it does nothing but say so: the dirty set it would drain holds one member per (SKU, location) at
most, so leaving it waiting costs bounded memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.shopify.client import ShopifyAdminClient, ThrottleGovernor
from availability.flows.inventory import metrics
from availability.flows.inventory.drift import DriftRepairer
from availability.flows.inventory.publisher import Publisher, PushConfig
from availability.flows.inventory.sales import SalesConfig
from availability.flows.inventory.shops import ShopConfig, ShopConfigError, ShopMappings, configured_shops
from availability.flows.inventory.state import DirtyFanout, PushKeys

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


def pushing_shops(settings: Any) -> list[ShopConfig]:
    """The shops the push runs for: those with an Admin API URL and token."""
    return [shop for shop in configured_shops(settings) if shop.pushes]


def shopify_configured(settings: Any) -> bool:
    return bool(pushing_shops(settings))


def select_shop(settings: Any, name: str | None = None) -> ShopConfig:
    """One shop by name (None: the only or first one). Raises ShopConfigError."""
    shops = configured_shops(settings)
    if name is None:
        return shops[0]
    for shop in shops:
        if shop.name == name or shop.label == name:
            return shop
    raise ShopConfigError(f"no shop {name!r} (configured: {', '.join(s.label for s in shops)})")


def build_client(
    settings: Any, *, governor: ThrottleGovernor | None = None, shop: ShopConfig | None = None
) -> ShopifyAdminClient:
    """The Shopify client of a shop: one governor per shop and process, shared by every call."""
    shop = shop or select_shop(settings)
    return ShopifyAdminClient(
        shop.url or "http://shopify.invalid",
        shop.token or "",
        shop.api_version,
        timeout=float(setting(settings, "shopify_timeout_seconds")),
        governor=governor or ThrottleGovernor(reserve_margin=float(setting(settings, "shopify_reserve_points"))),
        on_cost=metrics.observe_cost,
    )


def build_fanout(runtime: Runtime, shops: list[ShopConfig]) -> DirtyFanout | None:
    """With several shops, one hand-over feeds every shop's dirty set (with one shop, the
    publisher makes its own)."""
    if len(shops) < 2:
        return None
    return DirtyFanout(
        runtime.redis,
        runtime.ledger.keys,
        [PushKeys(runtime.ledger.keys, shop.name).dirty for shop in shops],
    )


def build_publisher(
    runtime: Runtime,
    client: ShopifyAdminClient | None = None,
    *,
    shop: ShopConfig | None = None,
    fanout: DirtyFanout | None = None,
    **kwargs: Any,
) -> Publisher:
    settings = runtime.settings
    shop = shop or select_shop(settings)
    if fanout is None and shop.name:
        fanout = build_fanout(runtime, pushing_shops(settings))
    return Publisher(
        ledger=runtime.ledger,
        rules=runtime.rules,
        mappings=ShopMappings(shop, runtime.store.mappings),
        client=client or build_client(settings, shop=shop),
        config=PushConfig.from_settings(settings),
        sales=SalesConfig.from_settings(settings),
        shop=shop.name,
        fanout=fanout,
        **kwargs,
    )


def build_repairer(publisher: Publisher, settings: Any) -> DriftRepairer:
    return DriftRepairer(publisher, interval_s=float(setting(settings, "shopify_drift_interval_seconds")))


@dataclass
class ShopPush:
    shop: ShopConfig
    client: ShopifyAdminClient
    publisher: Publisher
    repairer: DriftRepairer


class PublisherService:
    name = "publisher"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.shops = pushing_shops(runtime.settings)
        self.enabled = bool(self.shops)
        self.pushes: list[ShopPush] = []

    # The single-shop view older callers use.
    @property
    def publisher(self) -> Publisher | None:
        return self.pushes[0].publisher if self.pushes else None

    @property
    def repairer(self) -> DriftRepairer | None:
        return self.pushes[0].repairer if self.pushes else None

    @property
    def client(self) -> ShopifyAdminClient | None:
        return self.pushes[0].client if self.pushes else None

    async def start(self) -> None:
        if not self.enabled:
            log.warning(
                "Shopify push off: set AVAILABILITY_SHOPIFY_URL and AVAILABILITY_SHOPIFY_TOKEN "
                "(or AVAILABILITY_SHOPIFY_SHOPS; e.g. `availability sim shopify` for a local simulator)"
            )
            return
        settings = self.runtime.settings
        await self.runtime.rules.start_background()  # mapping and rule changes from other processes
        fanout = build_fanout(self.runtime, self.shops)
        for shop in self.shops:
            client = build_client(settings, shop=shop)
            publisher = build_publisher(self.runtime, client, shop=shop, fanout=fanout)
            repairer = build_repairer(publisher, settings)
            await publisher.start()
            await repairer.start()
            self.pushes.append(ShopPush(shop, client, publisher, repairer))
            log.info(
                "Shopify push of shop %s (channel %s) to %s (API %s): window %.2f s, drift pass every %.0f s",
                shop.label,
                shop.channel,
                shop.url,
                shop.api_version,
                publisher.config.window_s,
                repairer.interval_s,
            )

    async def stop(self) -> None:
        for push in self.pushes:
            await push.repairer.stop()
        for push in self.pushes:
            await push.publisher.stop()
        for push in self.pushes:
            await push.client.aclose()
        self.pushes.clear()
