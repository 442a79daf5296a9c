"""Shopify mappings: SKU -> InventoryItem GID and (channel, location) -> Location GID.

They are stored beside the rules because the publisher must see a mapping change and a
rule change in the same order everyone else does: a mapping write moves the store version
(`StoreDatabase.write`), and the publisher reloads its mappings when that version moves.
A location mapping must name a location and channel that master data knows.
What the mappings mean for a pushed quantity is `availability.flows.inventory.mappings`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from availability.rules.database import StoreDatabase, Tx, check_key, merged, need_actor
from availability.rules.errors import InvalidMasterData
from availability.rules.models import shopify_item_mappings_t, shopify_location_mappings_t

__all__ = ["ShopifyMappingStore"]


class ShopifyMappingStore:
    """Read and change the Shopify mappings, audited in `master_changes` like master data."""

    def __init__(self, db: StoreDatabase) -> None:
        self.db = db

    async def item_mappings(self) -> dict[str, str]:
        """SKU -> Shopify InventoryItem GID."""
        async with self.db.read() as conn:
            return {r.sku: r.inventory_item_gid for r in await conn.execute(select(shopify_item_mappings_t))}

    async def location_mappings(self) -> list[tuple[str, str, str]]:
        """(channel, location code, Shopify Location GID), sorted."""
        t = shopify_location_mappings_t
        async with self.db.read() as conn:
            rows = await conn.execute(select(t).order_by(t.c.channel, t.c.location))
            return [(r.channel, r.location, r.shopify_location_gid) for r in rows]

    async def set_item_mappings(
        self, mapping: Mapping[str, str | int | None], *, actor: str = "system", reason: str = "", replace: bool = False
    ) -> int:
        """Map SKUs to InventoryItem GIDs (a numeric id is turned into a GID; None unmaps).
        Returns how many SKUs changed."""
        need_actor(actor, InvalidMasterData)
        items = _parse_item_mappings(mapping)
        async with self.db.write() as tx:
            return await self._apply_item_mappings(tx, items, replace, actor, reason)

    async def set_location_mappings(
        self,
        rows: Iterable[tuple[str, str, str | int | None] | Mapping[str, Any]],
        *,
        actor: str = "system",
        reason: str = "",
        replace: bool = False,
    ) -> int:
        """Map (channel, location) to a Shopify Location GID (None unmaps). The location and
        channel must exist in master data. Returns how many pairs changed."""
        need_actor(actor, InvalidMasterData)
        pairs = _parse_location_mappings(rows)
        async with self.db.write() as tx:
            return await self._apply_location_mappings(tx, pairs, replace, actor, reason)

    async def import_mappings_file(self, path: str | Path, *, actor: str = "system", reason: str = "") -> dict[str, int]:
        """Load Shopify mappings from a file, in one transaction.

        - CSV with header `sku,inventory_item_gid`, or `channel,location,shopify_location_gid`;
        - JSON `{"items": {sku: gid} | [{"sku", "inventory_item_gid"}], "locations":
          [{"channel", "location", "shopify_location_gid"}]}` (either key optional).

        Merges into the existing mappings; returns {"items": changed, "locations": changed}.
        """
        need_actor(actor, InvalidMasterData)
        p = Path(path)
        items: dict[str, str | None] = {}
        pairs: dict[tuple[str, str], str | None] = {}
        suffix = p.suffix.lower()
        if suffix == ".csv":
            with p.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = [h.strip() for h in reader.fieldnames or []]
                reader.fieldnames = header
                rows = [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
            if {"sku", "inventory_item_gid"} <= set(header):
                items = _parse_item_mappings({r["sku"]: r["inventory_item_gid"] for r in rows}, where=f"{p}: ")
            elif {"channel", "location", "shopify_location_gid"} <= set(header):
                pairs = _parse_location_mappings(rows, where=f"{p}: ")
            else:
                raise InvalidMasterData(
                    f"{p}: CSV header must be `sku,inventory_item_gid` or `channel,location,shopify_location_gid`, "
                    f"not {','.join(header)!r}"
                )
        elif suffix == ".json":
            try:
                document = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise InvalidMasterData(f"{p}: not valid JSON: {exc}") from None
            if not isinstance(document, dict) or not set(document) <= {"items", "locations"}:
                raise InvalidMasterData(f'{p}: expected an object with "items" and/or "locations"')
            raw_items = document.get("items") or {}
            if isinstance(raw_items, list):
                try:
                    raw_items = {r["sku"]: r["inventory_item_gid"] for r in raw_items}
                except (KeyError, TypeError):
                    raise InvalidMasterData(f'{p}: each of "items" needs "sku" and "inventory_item_gid"') from None
            items = _parse_item_mappings(raw_items, where=f"{p}: ")
            pairs = _parse_location_mappings(document.get("locations") or [], where=f"{p}: ")
        else:
            raise InvalidMasterData(f"{p}: mapping files are .csv or .json")
        async with self.db.write() as tx:
            return {
                "items": await self._apply_item_mappings(tx, items, False, actor, reason) if items else 0,
                "locations": await self._apply_location_mappings(tx, pairs, False, actor, reason) if pairs else 0,
            }

    async def _apply_item_mappings(
        self, tx: Tx, items: dict[str, str | None], replace: bool, actor: str, reason: str
    ) -> int:
        return await self.db.apply_key_values(
            tx, shopify_item_mappings_t, "sku", "inventory_item_gid", "item_mappings", items, replace, actor, reason
        )

    async def _apply_location_mappings(
        self, tx: Tx, pairs: dict[tuple[str, str], str | None], replace: bool, actor: str, reason: str
    ) -> int:
        t = shopify_location_mappings_t
        refs = await self.db.refs(tx.conn)
        for (channel, location), gid in pairs.items():
            if gid is not None:
                refs.check_location(location, "Shopify location mapping: ")
                refs.check_channel(channel, "Shopify location mapping: ")
        existing = {(r.channel, r.location): r.shopify_location_gid for r in await tx.conn.execute(select(t))}
        target, changed = merged(existing, pairs, replace)
        if not changed:
            return 0
        for channel, location in changed:
            if (channel, location) in existing:
                await tx.conn.execute(delete(t).where(t.c.channel == channel, t.c.location == location))
        rows = [{"channel": c, "location": loc, "shopify_location_gid": target[(c, loc)]} for c, loc in changed if (c, loc) in target]
        if rows:
            await tx.conn.execute(insert(t), rows)
        before = [[c, loc, existing.get((c, loc))] for c, loc in changed]
        after = [[c, loc, target.get((c, loc))] for c, loc in changed]
        action = "replace" if replace else "update"
        await self.db.record_master(tx, [("location_mappings", "*", action, before, after)], actor, reason)
        tx.changed = True
        return len(changed)


def _shopify_gid(value: Any, kind: str, where: str) -> str:
    """Accept a Shopify GID or its numeric id (what admin exports show) and store the GID."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return f"gid://shopify/{kind}/{value}"
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return f"gid://shopify/{kind}/{text}"
        prefix = f"gid://shopify/{kind}/"
        if text.startswith(prefix) and len(text) > len(prefix):
            return text
    raise InvalidMasterData(f"{where}{value!r} is not a Shopify {kind} id (gid://shopify/{kind}/123 or 123)")



def _parse_item_mappings(mapping: Any, where: str = "") -> dict[str, str | None]:
    if not isinstance(mapping, Mapping):
        raise InvalidMasterData(f"{where}item mappings are an object of {{sku: inventory_item_gid}}")
    out: dict[str, str | None] = {}
    for sku, gid in mapping.items():
        check_key(sku, f"{where}item mapping SKU")
        out[sku] = None if gid is None else _shopify_gid(gid, "InventoryItem", f"{where}SKU {sku!r}: ")
    return out


def _parse_location_mappings(rows: Any, where: str = "") -> dict[tuple[str, str], str | None]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise InvalidMasterData(f"{where}location mappings are a list of (channel, location, shopify_location_gid)")
    out: dict[tuple[str, str], str | None] = {}
    for i, row in enumerate(rows):
        at = f"{where}location mapping {i}: "
        if isinstance(row, Mapping):
            try:
                channel, location, gid = row["channel"], row["location"], row["shopify_location_gid"]
            except KeyError as exc:
                raise InvalidMasterData(f"{at}missing {exc.args[0]!r}") from None
        elif isinstance(row, (list, tuple)) and len(row) == 3:
            channel, location, gid = row
        else:
            raise InvalidMasterData(f"{at}expected (channel, location, shopify_location_gid), not {row!r}")
        check_key(channel, f"{at}channel")
        check_key(location, f"{at}location")
        out[(channel, location)] = None if gid in (None, "") else _shopify_gid(gid, "Location", at)
    return out
