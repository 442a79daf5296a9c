"""Tables of the rule and master-data store (SQLAlchemy 2 declarative).

The same schema runs on SQLite (the default: one file, nothing to install) and on
PostgreSQL (when several service processes share one store). So the columns stick
to types both understand: strings without a length (a code longer than a VARCHAR
limit should be a validation question, not a database error that only happens on
PostgreSQL), BIGINT for numbers a planner types, generic JSON for lists and
before/after snapshots, and UTC timestamps through `UTCDateTime`.

Rows are never the domain objects: `availability.rules.store` converts them into
the frozen `availability.domain.rules` structs, so nothing outside this package
depends on the table layout.

`store_version` is a single row whose counter goes up in the same transaction as
every change to rules, locations, channels, SKU categories or Shopify mappings.
Caches in every process poll that one cheap row to know when to rebuild their
`RuleBook`, and the store takes that row's lock first in every write, which
serialises writers on PostgreSQL the way SQLite's file lock does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so UTC is stored
    naive and given back its tzinfo on the way out. Naive datetimes are refused
    on the way in because guessing their zone is how audit trails end up an hour off.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON where Python None means SQL NULL (not the JSON text 'null'), so "no
#: before-state" and "every location" are plain NULLs a human can query for.
NullableJSON = JSON(none_as_null=True)


class Base(DeclarativeBase):
    pass


class StoreVersionRow(Base):
    """One row (id = 1): the version of everything a `RuleBook` is built from."""

    __tablename__ = "store_version"
    __table_args__ = (CheckConstraint("id = 1", name="store_version_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class LocationRow(Base):
    __tablename__ = "locations"

    code: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, nullable=False, default="")
    type: Mapped[str] = mapped_column(String, nullable=False, default="warehouse")
    priority: Mapped[int] = mapped_column(BigInteger, nullable=False, default=100)
    ships: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    pickup: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    sells_in_store: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    groups: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class ChannelRow(Base):
    __tablename__ = "channels"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    priority: Mapped[int] = mapped_column(BigInteger, nullable=False, default=100)
    #: NULL = every active location (the domain's `locations=None`); [] = none listed
    locations: Mapped[list[str] | None] = mapped_column(NullableJSON, nullable=True)
    location_groups: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")


class RuleRow(Base):
    """Current state of each rule. Deleting sets `deleted` so ids are never reused
    and history (and a rollback to before the delete) keeps pointing at something."""

    __tablename__ = "rules"
    __table_args__ = (
        Index("ix_rules_kind", "kind"),
        Index("ix_rules_sku", "sku"),
    )

    # Ids are assigned by the store (max + 1 under the store_version lock) rather
    # than by a sequence, so an imported document can keep its ids on both backends.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String, nullable=False)
    units: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    percent: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    sku: Mapped[str | None] = mapped_column(String, nullable=True)
    category: Mapped[str | None] = mapped_column(String, nullable=True)
    location: Mapped[str | None] = mapped_column(String, nullable=True)
    location_group: Mapped[str | None] = mapped_column(String, nullable=True)
    channel: Mapped[str | None] = mapped_column(String, nullable=True)
    priority: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RuleChangeRow(Base):
    """Append-only history: one row per rule version, with who, when, why and
    the full before/after state (NULL before = created, NULL after = deleted)."""

    __tablename__ = "rule_changes"
    __table_args__ = (
        # A second guard besides the compare-and-set: two writers can never both
        # record the same version of one rule.
        UniqueConstraint("rule_id", "version", name="uq_rule_changes_rule_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    action: Mapped[str] = mapped_column(String, nullable=False)
    actor: Mapped[str] = mapped_column(String, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    store_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    before: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)


class MasterChangeRow(Base):
    """History of master data: locations and channels (one row per key changed),
    SKU categories and Shopify mappings (one row per call, holding only the
    entries that changed, so a 50,000-SKU import is one readable row)."""

    __tablename__ = "master_changes"
    __table_args__ = (Index("ix_master_changes_entity_key", "entity", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: location | channel | sku_categories | item_mappings | location_mappings
    entity: Mapped[str] = mapped_column(String, nullable=False)
    #: location code / channel name, or "*" for the mapping tables
    key: Mapped[str] = mapped_column(String, nullable=False)
    action: Mapped[str] = mapped_column(String, nullable=False)
    actor: Mapped[str] = mapped_column(String, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    store_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    before: Mapped[Any] = mapped_column(NullableJSON, nullable=True)
    after: Mapped[Any] = mapped_column(NullableJSON, nullable=True)


class SkuCategoryRow(Base):
    __tablename__ = "sku_categories"

    sku: Mapped[str] = mapped_column(String, primary_key=True)
    category: Mapped[str] = mapped_column(String, nullable=False)


class ApiKeyRow(Base):
    """Only the SHA-256 of a key is stored: a leaked database must not leak credentials."""

    __tablename__ = "api_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class ShopifyItemMappingRow(Base):
    """SKU -> Shopify InventoryItem GID (what `inventorySetQuantities` addresses)."""

    __tablename__ = "shopify_item_mappings"

    sku: Mapped[str] = mapped_column(String, primary_key=True)
    inventory_item_gid: Mapped[str] = mapped_column(String, nullable=False)


class ShopifyLocationMappingRow(Base):
    """(channel, location code) -> Shopify Location GID: the channel's ATS at our
    location is what gets pushed to that Shopify location."""

    __tablename__ = "shopify_location_mappings"

    channel: Mapped[str] = mapped_column(String, primary_key=True)
    location: Mapped[str] = mapped_column(String, primary_key=True)
    shopify_location_gid: Mapped[str] = mapped_column(String, nullable=False)


# Core Table handles: the store works at the Core level (plain INSERT/UPDATE with
# executemany) because it converts rows to domain structs itself and bulk imports
# should not pay for ORM unit-of-work bookkeeping.
store_version_t = StoreVersionRow.__table__
locations_t = LocationRow.__table__
channels_t = ChannelRow.__table__
rules_t = RuleRow.__table__
rule_changes_t = RuleChangeRow.__table__
master_changes_t = MasterChangeRow.__table__
sku_categories_t = SkuCategoryRow.__table__
api_keys_t = ApiKeyRow.__table__
shopify_item_mappings_t = ShopifyItemMappingRow.__table__
shopify_location_mappings_t = ShopifyLocationMappingRow.__table__

__all__ = [
    "Base",
    "UTCDateTime",
    "StoreVersionRow",
    "LocationRow",
    "ChannelRow",
    "RuleRow",
    "RuleChangeRow",
    "MasterChangeRow",
    "SkuCategoryRow",
    "ApiKeyRow",
    "ShopifyItemMappingRow",
    "ShopifyLocationMappingRow",
]
