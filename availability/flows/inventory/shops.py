"""The Shopify shops this service pushes to and takes webhooks from.

Retailers with several brands or markets run several Shopify stores against one stock
pool. `AVAILABILITY_SHOPIFY_SHOPS` is a JSON list, one object per shop:

    [{"name": "uk", "url": "https://brand-uk.myshopify.com", "token": "shpat_...",
      "api_version": "2026-04", "webhook_secrets": ["..."], "shop_domain": "brand-uk.myshopify.com",
      "channel": "online-uk", "locations": {"DC1": "gid://shopify/Location/1"},
      "items": {"TEE-BLK-M": "gid://shopify/InventoryItem/2"}, "default_location": "DC1"}, ...]

- `channel`: the channel the shop sells as; its ATS is what the shop is shown, and its
  orders are booked under it.
- `locations`: our location -> the shop's Location GID (published as `channel`'s ATS
  there). `items`: SKU -> the shop's InventoryItem GID. Either left out: the rule store's
  mappings (`availability shopify import-mappings`), which is right for one shop only.
- Every shop has its own keys (`{prefix}:shopify:{name}:...`), its own publisher and
  drift repair, and its webhooks are told apart by `X-Shopify-Shop-Domain`.

Without the list the single-shop settings are the shorthand for one shop (name ""):
`AVAILABILITY_SHOPIFY_URL`, `_TOKEN`, `_API_VERSION`, `_WEBHOOK_SECRETS`,
`_SHOP_DOMAIN` (default: the host of the URL when it is a *.myshopify.com one),
`_DEFAULT_LOCATION`, channel `online`, and the rule store's mappings, with the key names
the single-shop service always had.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import msgspec

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class ShopConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    url: str | None = None
    token: str | None = None
    api_version: str = "2026-04"
    webhook_secrets: list[str] = []
    shop_domain: str | None = None
    channel: str = "online"
    #: our location -> Shopify Location GID; None = the rule store's location mappings
    locations: dict[str, str] | None = None
    #: SKU -> Shopify InventoryItem GID; None = the rule store's item mappings
    items: dict[str, str] | None = None
    #: where orders without a location are booked; None = the channel's first location
    default_location: str | None = None

    @property
    def label(self) -> str:
        return self.name or "default"

    @property
    def pushes(self) -> bool:
        """Whether the shop has what the push needs (an Admin API URL and token)."""
        return bool(self.url and self.token)

    @property
    def domain(self) -> str | None:
        """The X-Shopify-Shop-Domain its webhooks carry (lower case)."""
        if self.shop_domain:
            return self.shop_domain.strip().lower()
        host = (urlparse(self.url).hostname or "") if self.url else ""
        return host.lower() if host.endswith(".myshopify.com") else None


class ShopConfigError(ValueError):
    """AVAILABILITY_SHOPIFY_SHOPS does not describe a usable list of shops."""


def configured_shops(settings: Any) -> list[ShopConfig]:
    """The shops from `shopify_shops`, else the one the single-shop settings describe."""
    raw = getattr(settings, "shopify_shops", None)
    if raw:
        if isinstance(raw, (str, bytes)):
            try:
                raw = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise ShopConfigError(f"AVAILABILITY_SHOPIFY_SHOPS is not JSON: {exc}") from None
        try:
            shops = msgspec.convert(raw, list[ShopConfig])
        except msgspec.ValidationError as exc:
            raise ShopConfigError(f"AVAILABILITY_SHOPIFY_SHOPS: {exc}") from None
        seen_names: set[str] = set()
        seen_domains: set[str] = set()
        for shop in shops:
            if not _NAME_RE.match(shop.name):
                raise ShopConfigError(f"shop name {shop.name!r}: 1-40 of a-z 0-9 _ - (it is part of Redis keys)")
            if shop.name in seen_names:
                raise ShopConfigError(f"shop name {shop.name!r} is used twice")
            seen_names.add(shop.name)
            if shop.domain is None:
                raise ShopConfigError(f"shop {shop.name!r} needs shop_domain (its webhooks are told apart by it)")
            if shop.domain in seen_domains:
                raise ShopConfigError(f"shop domain {shop.domain!r} is used twice")
            seen_domains.add(shop.domain)
        return shops
    return [
        ShopConfig(
            name="",
            url=getattr(settings, "shopify_url", None),
            token=getattr(settings, "shopify_token", None),
            api_version=getattr(settings, "shopify_api_version", None) or "2026-04",
            webhook_secrets=list(getattr(settings, "shopify_webhook_secrets", None) or []),
            shop_domain=getattr(settings, "shopify_shop_domain", None),
            default_location=getattr(settings, "shopify_default_location", None),
        )
    ]


def shop_for_domain(shops: list[ShopConfig], domain: str | None) -> ShopConfig | None:
    if not domain:
        return None
    wanted = domain.strip().lower()
    return next((s for s in shops if s.domain == wanted), None)


class ShopMappings:
    """A shop's mappings as the publisher reads them (`MappingSource`): its own from the
    shop config, or the stored ones (`ShopifyMappingStore`) for what the config leaves out."""

    def __init__(self, shop: ShopConfig, store: Any) -> None:
        self.shop = shop
        self.store = store

    async def item_mappings(self) -> dict[str, str]:
        if self.shop.items is not None:
            return dict(self.shop.items)
        return await self.store.item_mappings()

    async def location_mappings(self) -> list[tuple[str, str, str]]:
        if self.shop.locations is not None:
            return [(self.shop.channel, location, gid) for location, gid in sorted(self.shop.locations.items())]
        return await self.store.location_mappings()
