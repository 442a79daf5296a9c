"""A seeded, realistic demo catalogue: SKUs, locations, channels with buffers and
ring-fences, Shopify mappings and opening stock. Deterministic for a given seed, so a
demo, a load test and a benchmark can all talk about the same SKUs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from availability.domain.events import StockEvent

CATEGORIES = ("tops", "bottoms", "shoes", "accessories", "outerwear")
COLOURS = ("BLK", "WHT", "RED", "NVY", "GRN", "GRY")
SIZES = ("XS", "S", "M", "L", "XL")
REGIONS = ("north", "south", "west")

OPENING_STOCK_AT = datetime(2026, 11, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Catalogue:
    skus: list[str]
    categories: dict[str, str]
    warehouses: list[str]
    stores: list[str]
    seed: int

    @property
    def locations(self) -> list[str]:
        return self.warehouses + self.stores

    def hot_skus(self, count: int = 10) -> list[str]:
        return self.skus[:count]


def build_catalogue(skus: int = 10_000, stores: int = 17, seed: int = 42) -> Catalogue:
    codes = []
    categories = {}
    for i in range(skus):
        category = CATEGORIES[i % len(CATEGORIES)]
        code = f"{category[:3].upper()}-{i // 30:04d}-{COLOURS[i % len(COLOURS)]}-{SIZES[i % len(SIZES)]}"
        if code in categories:
            code = f"{code}-{i}"
        codes.append(code)
        categories[code] = category
    return Catalogue(
        skus=codes,
        categories=categories,
        warehouses=["DC-EAST", "DC-WEST", "3PL-CENTRAL"],
        stores=[f"STORE-{n:02d}" for n in range(1, stores + 1)],
        seed=seed,
    )


def master_data(cat: Catalogue) -> dict:
    """Locations, channels and rules in the rule store's import format."""
    locations = [
        {"code": "DC-EAST", "name": "East distribution centre", "type": "warehouse", "priority": 1, "ships": True},
        {"code": "DC-WEST", "name": "West distribution centre", "type": "warehouse", "priority": 2, "ships": True},
        {"code": "3PL-CENTRAL", "name": "Central 3PL", "type": "3pl", "priority": 3, "ships": True},
    ]
    for n, store in enumerate(cat.stores):
        locations.append({
            "code": store, "name": f"Store {n + 1}", "type": "store", "priority": 10 + n, "ships": n % 3 == 0,
            "pickup": True, "sells_in_store": True, "groups": [REGIONS[n % len(REGIONS)], "stores"],
        })
    shipping_stores = [s for n, s in enumerate(cat.stores) if n % 3 == 0]
    channels = [
        {"name": "pos", "priority": 1, "locations": None, "location_groups": ["stores"],
         "description": "store tills"},
        {"name": "online", "priority": 2, "locations": cat.warehouses + shipping_stores,
         "description": "Shopify storefront (ship from DCs, the 3PL and ship-from-store stores)"},
        {"name": "marketplace", "priority": 3, "locations": ["DC-EAST", "DC-WEST"],
         "description": "third-party marketplace, DCs only"},
    ]
    hot = cat.hot_skus(3)
    rules = [
        {"kind": "safety_stock", "units": 1, "note": "global: count error allowance"},
        {"kind": "safety_stock", "units": 2, "location_group": "stores", "note": "stores: display units"},
        {"kind": "protection", "channel": "pos", "units": 2, "location_group": "stores",
         "note": "keep two units for walk-in customers"},
        {"kind": "protection", "channel": "online", "percent": 10, "location": "DC-EAST",
         "note": "online ring-fence at the main DC"},
        {"kind": "buffer", "channel": "online", "percent": 5, "location_group": "stores",
         "note": "store stock is less accurate"},
        {"kind": "buffer", "channel": "marketplace", "units": 2, "note": "marketplace penalties for oversell"},
        {"kind": "threshold", "channel": "marketplace", "units": 3, "note": "do not list the last units"},
        {"kind": "threshold", "channel": "online", "units": 2, "category": "shoes",
         "note": "size runs: hide singles"},
    ]
    rules += [{"kind": "buffer", "channel": "online", "units": 0, "sku": sku, "note": "flash-sale SKU: no buffer"}
              for sku in hot]
    return {"locations": locations, "channels": channels, "rules": rules, "sku_categories": cat.categories}


def shopify_mappings(cat: Catalogue) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """SKU -> InventoryItem GID; (channel, location) -> Shopify Location GID.

    Online sells from the warehouses (one Shopify location each); POS sells per store."""
    items = {sku: f"gid://shopify/InventoryItem/{100_000 + i}" for i, sku in enumerate(cat.skus)}
    locations = [("online", code, f"gid://shopify/Location/{i + 1}") for i, code in enumerate(cat.warehouses)]
    locations += [("pos", code, f"gid://shopify/Location/{100 + i}") for i, code in enumerate(cat.stores)]
    return items, locations


def opening_stock(cat: Catalogue) -> Iterator[StockEvent]:
    """One ERP snapshot per (SKU, location): deep stock in the DCs, a few units in stores."""
    rnd = random.Random(cat.seed)
    for sku in cat.skus:
        for loc in cat.locations:
            quantity = rnd.randint(20, 400) if loc in cat.warehouses else rnd.randint(0, 12)
            yield StockEvent(event_id=f"demo-open:{sku}:{loc}", type="snapshot", source="erp",
                             occurred_at=OPENING_STOCK_AT, sku=sku, location=loc, quantity=quantity)
