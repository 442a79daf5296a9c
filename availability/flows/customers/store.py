"""The customer identity map: which ERP party each Shopify customer, order, guest and POS
customer is, and why (SQL, beside the order flow's documents).

    customers       one row per source: a Shopify customer (`shopify:<shop>:customer:<id>`),
                    or an order that names no customer (`order:<shop>#<number>`); its latest
                    payload (newest `updated_at` wins), the party it maps to, the rule and
                    confidence of that match, and `merged_into` when Shopify merged it away
    customer_keys   normalized contact keys (`email:…`, `phone:+E164`, `address:…`,
                    `guest:<name>`) -> party. The key is the primary key: one party per
                    e-mail address, also when two webhooks for it race (the loser of the
                    insert waits for the winner's party instead of creating a second one)

A key row is first *claimed* (party_id NULL, claimed_ms) by the worker about to create
the party in the ERP, then filled in. A claim older than the claim lease is taken over
(the worker died between claim and ERP create; the next one looks the ERP up by e-mail
first, so a party it did create is adopted, not duplicated).

Tables are created by the Alembic migrations (availability/migrations/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from availability.flows.machinery import now_ms
# the same "newest updated_at wins" as the order documents
from availability.flows.orders.store import _newer  # noqa: PLC2701

metadata = MetaData()

customers = Table(
    "customers", metadata,
    Column("source", String(300), primary_key=True),
    Column("shop", String(200), nullable=False),
    Column("customer_id", String(64)),
    #: received | matched | merged
    Column("state", String(16), nullable=False),
    Column("payload", JSON),
    Column("payload_updated_at", String(64)),
    Column("party_id", Integer, index=True),
    #: email | phone | name_address | guest | new | erp_email | erp_phone | merge
    Column("rule", String(32)),
    Column("confidence", Float),
    Column("matched_key", String(400)),
    Column("detail", Text),
    #: the surviving customer's source after a Shopify customer merge
    Column("merged_into", String(300)),
    Column("received_ms", BigInteger, nullable=False),
    Column("matched_ms", BigInteger),
    Column("updated_ms", BigInteger, nullable=False),
)

keys = Table(
    "customer_keys", metadata,
    Column("key", String(400), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("party_id", Integer, index=True),
    Column("source", String(300)),
    Column("claimed_by", String(100)),
    Column("claimed_ms", BigInteger),
    Column("created_ms", BigInteger, nullable=False),
)


@dataclass
class Customer:
    source: str
    shop: str
    customer_id: str | None
    state: str
    payload: dict | None
    payload_updated_at: str | None
    party_id: int | None
    rule: str | None
    confidence: float | None
    matched_key: str | None
    detail: str | None
    merged_into: str | None
    received_ms: int
    matched_ms: int | None
    updated_ms: int


def _row(row: Any) -> Customer:
    data = dict(row)
    if isinstance(data.get("payload"), str):
        data["payload"] = json.loads(data["payload"])
    return Customer(**data)


class CustomerStore:
    """Over an engine the caller owns (the order store's: one database, one migration head)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- customers --------------------------------------------------------------------------

    async def get(self, source: str) -> Customer | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(customers).where(customers.c.source == source))).mappings().first()
            return _row(row) if row else None

    async def receive(self, *, source: str, shop: str, customer_id: str | None, payload: dict) -> Customer:
        """Merge one customer payload in (the newest `updated_at` wins); the match is redone."""
        stamp = now_ms()
        version = payload.get("updated_at")
        for _ in range(3):
            current = await self.get(source)
            try:
                async with self.engine.begin() as conn:
                    if current is None:
                        await conn.execute(insert(customers).values(
                            source=source, shop=shop, customer_id=customer_id, state="received", payload=payload,
                            payload_updated_at=version, received_ms=stamp, updated_ms=stamp))
                    elif _newer(version, current.payload_updated_at):
                        values: dict[str, Any] = {"payload": payload, "payload_updated_at": version,
                                                  "updated_ms": stamp}
                        if current.state != "merged":
                            values["state"] = "received"
                        await conn.execute(update(customers).where(customers.c.source == source).values(**values))
            except IntegrityError:
                continue  # inserted by a racing delivery: merge into theirs
            found = await self.get(source)
            assert found is not None
            return found
        raise RuntimeError(f"could not record customer {source}")

    async def matched(self, source: str, *, party_id: int, rule: str, confidence: float, matched_key: str | None,
                      detail: str, shop: str = "", payload: dict | None = None) -> None:
        stamp = now_ms()
        values = dict(party_id=party_id, rule=rule, confidence=confidence, matched_key=matched_key, detail=detail,
                      matched_ms=stamp, updated_ms=stamp)
        async with self.engine.begin() as conn:
            result = await conn.execute(update(customers).where(customers.c.source == source,
                                                                customers.c.state != "merged")
                                        .values(state="matched", **values))
            if not result.rowcount:
                exists = (await conn.execute(select(customers.c.source).where(customers.c.source == source))).first()
                if exists is None:
                    await conn.execute(insert(customers).values(
                        source=source, shop=shop, state="matched", payload=payload,
                        payload_updated_at=(payload or {}).get("updated_at"), received_ms=stamp, **values))

    async def merge(self, *, loser: str, survivor: str, shop: str, detail: str) -> bool:
        """Point the merged-away customer at the survivor, and at its party once it has one.

        A loser that already has a party of its own keeps it here: that party is to be
        *replaced* by the survivor's in the ERP (`CustomerIdentity.settle_merges`), and the
        survivor is marked `received` so its worker does that (durable: a worker killed
        meanwhile leaves the mark in SQL). Returns True when such a replacement is due."""
        stamp = now_ms()
        async with self.engine.begin() as conn:
            surv = (await conn.execute(select(customers.c.party_id, customers.c.state)
                                       .where(customers.c.source == survivor))).first()
            party_id = surv[0] if surv else None
            had = (await conn.execute(select(customers.c.party_id, customers.c.merged_into)
                                      .where(customers.c.source == loser))).first()
            own = had[0] if had else None
            values: dict[str, Any] = dict(state="merged", merged_into=survivor, rule="merge", confidence=1.0,
                                          updated_ms=stamp)
            if not had or had[1] != survivor:  # a merge delivered again keeps what its first one noted
                values["detail"] = detail
            if party_id is not None and own in (None, party_id):
                values.update(party_id=party_id, matched_ms=stamp)
            result = await conn.execute(update(customers).where(customers.c.source == loser).values(**values))
            if not result.rowcount:
                await conn.execute(insert(customers).values(source=loser, shop=shop, received_ms=stamp, **values))
            # whoever was merged into the loser before now follows the survivor too (a party
            # of their own still waits for its replacement, like the loser's)
            await conn.execute(update(customers).where(customers.c.merged_into == loser)
                               .values(merged_into=survivor, updated_ms=stamp))
            if party_id is not None:
                await conn.execute(update(customers).where(customers.c.merged_into == survivor,
                                                           customers.c.party_id.is_(None))
                                   .values(party_id=party_id, matched_ms=stamp))
            pending = party_id is not None and (await conn.execute(select(customers.c.source).where(
                customers.c.merged_into == survivor, customers.c.party_id != party_id).limit(1))).first() is not None
            if pending and surv is not None and surv[1] == "matched":
                await conn.execute(update(customers).where(customers.c.source == survivor)
                                   .values(state="received", updated_ms=stamp))
            return pending

    async def followers(self, survivor: str) -> list[Customer]:
        """The customers Shopify merged into `survivor`."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(customers).where(customers.c.merged_into == survivor)
                                      .order_by(customers.c.source))
            return [_row(r) for r in rows.mappings()]

    async def repoint(self, sources: list[str], party_id: int) -> None:
        if not sources:
            return
        async with self.engine.begin() as conn:
            await conn.execute(update(customers).where(customers.c.source.in_(sources))
                               .values(party_id=party_id, matched_ms=now_ms(), updated_ms=now_ms()))

    async def replace_party(self, party_id: int, by_party_id: int, *, note: str) -> None:
        """The ERP replaced `party_id` by `by_party_id`: every source and key of it follows
        (the merged-away customer, and buyers matched to its e-mail, phone or address), and
        the merged-away customers note it in their `detail` (the match report's why)."""
        stamp = now_ms()
        async with self.engine.begin() as conn:
            await conn.execute(update(customers).where(customers.c.party_id == party_id, customers.c.state == "merged")
                               .values(detail=func.coalesce(customers.c.detail, "") + f"; {note}"))
            await conn.execute(update(customers).where(customers.c.party_id == party_id)
                               .values(party_id=by_party_id, matched_ms=stamp, updated_ms=stamp))
            await conn.execute(update(keys).where(keys.c.party_id == party_id).values(party_id=by_party_id))

    async def pending(self, limit: int = 500) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(customers.c.source).where(customers.c.state == "received")
                                      .order_by(customers.c.received_ms).limit(limit))
            return [r[0] for r in rows]

    async def all(self, *, shop: str | None = None) -> list[Customer]:
        async with self.engine.connect() as conn:
            stmt = select(customers).order_by(customers.c.received_ms, customers.c.source)
            if shop:
                stmt = stmt.where(customers.c.shop == shop)
            return [_row(r) for r in (await conn.execute(stmt)).mappings()]

    # --- keys -------------------------------------------------------------------------------

    async def key(self, key: str) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(keys).where(keys.c.key == key))).mappings().first()
            return dict(row) if row else None

    async def claim(self, key: str, kind: str, *, by: str, source: str, lease_ms: int) -> bool:
        """Claim a key before creating its party; False when someone else holds a live claim
        or the key already has a party. A lapsed claim is taken over."""
        stamp = now_ms()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(keys).values(key=key, kind=kind, party_id=None, source=source,
                                                       claimed_by=by, claimed_ms=stamp, created_ms=stamp))
            return True
        except IntegrityError:
            pass
        async with self.engine.begin() as conn:
            result = await conn.execute(update(keys).where(
                keys.c.key == key, keys.c.party_id.is_(None), keys.c.claimed_ms < stamp - lease_ms,
            ).values(claimed_by=by, claimed_ms=stamp, source=source))
            return bool(result.rowcount)

    async def fill(self, key: str, party_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(keys).where(keys.c.key == key).values(party_id=party_id, claimed_ms=None))

    async def add_keys(self, party_id: int, found: list[tuple[str, str]], source: str) -> list[str]:
        """Record more keys of a party (its phone, its address); a key another party holds
        stays theirs. Returns the keys added."""
        added = []
        for key, kind in found:
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(insert(keys).values(key=key, kind=kind, party_id=party_id, source=source,
                                                           created_ms=now_ms()))
                added.append(key)
            except IntegrityError:
                continue
        return added
