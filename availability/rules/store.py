"""The rule and master-data store: versioned, audited, SQLite or PostgreSQL.

Planners change rules rarely; every request reads them. So this store is built
for correct, audited writes and one cheap "has anything changed?" read:

- Every write runs in one transaction that first increments the single-row
  `store_version` counter. Taking that row first serialises writers on
  PostgreSQL (row lock) just as SQLite's write lock does (`BEGIN IMMEDIATE`), so
  read-validate-write sequences (compare-and-set on a rule version, "does this
  location exist", "max id + 1") cannot interleave, and a cache in any process
  knows it must rebuild when the counter moves. A write that turns out to change
  nothing is rolled back, so the counter only moves for real changes.
- Rule updates are compare-and-set on the rule's own `version`: of two planners
  who both loaded version 3, the first to save makes version 4 and the second
  gets `StaleRuleVersion` instead of silently overwriting it.
- Every change appends a history row with who, when (UTC), why and the full
  before/after state; rules are soft-deleted so their history and ids survive
  and a rollback can restore a deleted rule.
- `load_book()` reads the version and every row in one snapshot (REPEATABLE
  READ on PostgreSQL; one read transaction under WAL on SQLite), so the
  `RuleBook` it returns is exactly the state at `book.version`.

The database URL is passed in by the caller (configuration lives elsewhere);
this module never reads the environment.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import tomllib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from sqlalchemy import bindparam, delete, event, func, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from availability.domain.errors import (
    InvalidRule,
    StaleRuleVersion,
    UnknownChannel,
    UnknownLocation,
    UnknownRule,
)
from availability.domain.rules import (
    DEFAULT_CHANNEL,
    SELECTOR_WEIGHTS,
    Channel,
    Location,
    Rule,
    RuleBook,
    rule_from_fields,
)
from availability.rules.errors import InvalidMasterData, MasterDataInUse
from availability.rules.models import (
    api_keys_t,
    channels_t,
    locations_t,
    master_changes_t,
    rule_changes_t,
    rules_t,
    shopify_item_mappings_t,
    shopify_location_mappings_t,
    sku_categories_t,
    store_version_t,
)

log = logging.getLogger(__name__)

__all__ = [
    "RuleStore",
    "RuleChange",
    "MasterChange",
    "load_master_file",
    "hash_api_key",
]

_RULE_FIELDS: tuple[str, ...] = Rule.__struct_fields__
_SELECTORS: tuple[str, ...] = tuple(SELECTOR_WEIGHTS)
_LOCATION_FIELDS: tuple[str, ...] = Location.__struct_fields__
_CHANNEL_FIELDS: tuple[str, ...] = Channel.__struct_fields__
_DOCUMENT_KEYS = ("locations", "channels", "rules", "sku_categories")
#: rows per DELETE ... WHERE key IN (...), well under SQLite's bound-parameter limit
_CHUNK = 500

# The channel a store with no configured channels answers for. Taken from RuleBook
# itself rather than re-declared, so there is one definition of the default.
_DEFAULT_CHANNEL_STRUCT: Channel = RuleBook(version=0, locations=[], channels=[], rules=[]).channels[DEFAULT_CHANNEL]


class RuleChange(msgspec.Struct, frozen=True, kw_only=True):
    """One version of one rule: who made it, when, why, and the state before and after.

    `before` is None for a create (or a restore of a deleted rule), `after` is None
    for a delete. Both hold every `Rule` field, so a version can be restored as is.
    """

    rule_id: int
    version: int
    action: Literal["create", "update", "delete"]
    actor: str
    reason: str
    at: datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: the store version this change produced (what a cache's book.version is compared with)
    store_version: int = 0


class MasterChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change to master data or mappings (see `MasterChangeRow` for entities and keys)."""

    entity: str
    key: str
    action: str
    actor: str
    reason: str
    at: datetime
    before: Any
    after: Any
    store_version: int = 0


def hash_api_key(key_plaintext: str) -> str:
    """The stored form of an API key: hex SHA-256. The API hashes a presented key the same way."""
    return hashlib.sha256(key_plaintext.encode("utf-8")).hexdigest()


def load_master_file(path: str | Path) -> dict[str, Any]:
    """Read a master-data document (for `RuleStore.import_master_data`) from a .json or .toml file."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            document = json.loads(p.read_text(encoding="utf-8"))
        elif suffix == ".toml":
            document = tomllib.loads(p.read_text(encoding="utf-8"))
        else:
            raise InvalidMasterData(f"{p}: master data files are .json or .toml, not {suffix or 'no suffix'!r}")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidMasterData(f"{p}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidMasterData(f"{p}: a master data document is an object with keys {', '.join(_DOCUMENT_KEYS)}")
    return document


# --- internal helpers -------------------------------------------------------------------------


@dataclass
class _Tx:
    """An open write transaction: its connection, the store version it will commit
    as, one timestamp for every history row it writes, and whether anything changed."""

    conn: AsyncConnection
    version: int
    at: datetime
    changed: bool = False


@dataclass
class _Refs:
    """Known location codes and channel names, to reject rules that name a typo:
    a rule for "STORE12" that silently matches nothing is worse than an error."""

    locations: set[str]
    channels: set[str]

    def check_location(self, code: str | None, where: str = "") -> None:
        if code is not None and code not in self.locations:
            raise UnknownLocation(f"{where}unknown location {code!r}: add it to master data first", location=code)

    def check_channel(self, name: str | None, where: str = "") -> None:
        if name is None:
            return
        # With no channel configured the book sells through the default one, so it is valid.
        known = self.channels or {DEFAULT_CHANNEL}
        if name not in known:
            raise UnknownChannel(
                f"{where}unknown channel {name!r} (configured: {', '.join(sorted(known))})", channel=name
            )

    def check_rule(self, rule: Rule, where: str = "") -> None:
        self.check_location(rule.location, where)
        self.check_channel(rule.channel, where)


def _rule_dict(rule: Rule) -> dict[str, Any]:
    """Every field, defaults included: history must be restorable without knowing the defaults of the day."""
    return {f: getattr(rule, f) for f in _RULE_FIELDS}


def _rule_identity(rule: Rule) -> tuple[Any, ...]:
    return tuple(getattr(rule, f) for f in _RULE_FIELDS if f not in ("id", "version"))


def _same_rule(a: Rule, b: Rule) -> bool:
    return _rule_identity(a) == _rule_identity(b)


def _row_rule(row: Any) -> Rule:
    m = row._mapping
    return Rule(**{f: m[f] for f in _RULE_FIELDS})


def _rule_values(rule: Rule, at: datetime, *, deleted: bool = False) -> dict[str, Any]:
    return _rule_dict(rule) | {"deleted": deleted, "updated_at": at}


def _need_actor(actor: Any, error: type[Exception]) -> None:
    # Every change records who made it; an anonymous change is refused, not guessed.
    if not isinstance(actor, str) or not actor.strip():
        raise error("`actor` is required: every change records who made it")


def _check_key(value: Any, what: str, error: type[Exception] = InvalidMasterData) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise error(f"{what} must be a non-empty string without surrounding spaces, not {value!r}")
    return value


def _convert_struct(item: Any, cls: type, fields: tuple[str, ...], what: str, where: str) -> Any:
    """A master-data struct from a dict (or a struct, re-validated), unknown fields rejected."""
    if isinstance(item, cls):
        item = msgspec.to_builtins(item)
    if not isinstance(item, Mapping):
        raise InvalidMasterData(f"{where}a {what} is an object, not {type(item).__name__}")
    unknown = sorted(str(k) for k in item if k not in fields)
    if unknown:
        raise InvalidMasterData(f"{where}unknown {what} field(s) {', '.join(unknown)}; fields are {', '.join(fields)}")
    try:
        return msgspec.convert(dict(item), cls)
    except msgspec.ValidationError as exc:
        raise InvalidMasterData(f"{where}{exc}") from None


def _parse_location(item: Any, where: str = "") -> Location:
    loc: Location = _convert_struct(item, Location, _LOCATION_FIELDS, "location", where)
    _check_key(loc.code, f"{where}location code")
    for group in loc.groups:
        _check_key(group, f"{where}location group")
    return loc


def _parse_channel(item: Any, where: str = "") -> Channel:
    ch: Channel = _convert_struct(item, Channel, _CHANNEL_FIELDS, "channel", where)
    _check_key(ch.name, f"{where}channel name")
    for code in ch.locations or ():
        _check_key(code, f"{where}location code")
    return ch


def _location_values(loc: Location) -> dict[str, Any]:
    return msgspec.to_builtins(loc)


def _channel_values(ch: Channel) -> dict[str, Any]:
    return msgspec.to_builtins(ch)


def _row_location(row: Any) -> Location:
    m = row._mapping
    return Location(**{f: (tuple(m[f]) if f == "groups" else m[f]) for f in _LOCATION_FIELDS})


def _row_channel(row: Any) -> Channel:
    m = row._mapping
    return Channel(
        name=m["name"],
        priority=m["priority"],
        locations=None if m["locations"] is None else tuple(m["locations"]),
        location_groups=tuple(m["location_groups"]),
        description=m["description"],
    )


def _parse_str_map(mapping: Any, what: str, value_what: str) -> dict[str, str | None]:
    """{key: value} where a None value removes the key."""
    if not isinstance(mapping, Mapping):
        raise InvalidMasterData(f"{what} is an object of {{sku: {value_what}}}, not {type(mapping).__name__}")
    out: dict[str, str | None] = {}
    for key, value in mapping.items():
        _check_key(key, f"{what}: SKU")
        if value is not None:
            _check_key(value, f"{what}[{key!r}]: {value_what}")
        out[key] = value
    return out


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


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- the store --------------------------------------------------------------------------------


class RuleStore:
    """Rules, locations, channels, SKU categories, API keys and Shopify mappings.

    `RuleStore("sqlite+aiosqlite:///var/availability.db")` or
    `RuleStore("postgresql+asyncpg://user@host/db")`; call `await start()` before use
    and `await close()` after (or use `async with`).

    `sqlite+aiosqlite:///:memory:` works for quick single-coroutine use, but it is
    one shared connection, so concurrent writers need a file (or PostgreSQL).
    """

    def __init__(self, database_url: str | URL, *, echo: bool = False) -> None:
        self.url: URL = make_url(database_url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            # Wait for another writer's lock instead of failing at once: writes are
            # short, and two processes (API and CLI) may well write at the same moment.
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # Survive a database restart without a failed request per pooled connection.
            kwargs["pool_pre_ping"] = True
        self._engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _sqlite_transaction_control(self._engine)
        self._started = False

    def __repr__(self) -> str:
        return f"RuleStore({self.url.render_as_string(hide_password=True)!r})"

    async def __aenter__(self) -> RuleStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate the database to the code's schema (`alembic upgrade head`) and create
        the store_version row. Safe to call from several processes at once and again on
        every start."""
        if self._started:
            return
        if self.is_sqlite:
            db = self.url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # the schema is Alembic's (availability/migrations/): a new or pre-migration
        # database is brought to the code's head, serialised across processes there
        from availability.migrations import upgrade  # noqa: PLC0415

        await upgrade(self._engine)
        for attempt in range(3):
            try:
                async with self._engine.connect() as conn:
                    if self.is_sqlite:
                        await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                    async with conn.begin():
                        found = await conn.scalar(select(store_version_t.c.version).where(store_version_t.c.id == 1))
                        if found is None:
                            await conn.execute(insert(store_version_t).values(id=1, version=0))
                break
            except (IntegrityError, DBAPIError):
                # Two processes creating the schema at once on PostgreSQL: the loser
                # fails on the catalog's unique index; the second attempt sees the tables.
                if attempt == 2:
                    raise
                log.info("rule store schema creation raced with another process; retrying")
        self._started = True

    async def close(self) -> None:
        await self._engine.dispose()
        self._started = False

    # --- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def _read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            if snapshot and not self.is_sqlite:
                # READ COMMITTED would let each SELECT see a different commit.
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _write(self, *, bump: bool = True) -> AsyncIterator[_Tx]:
        """One write transaction. With `bump` (every change a RuleBook depends on) the
        store_version row is incremented first, which also takes the writers' lock."""
        async with self._engine.connect() as conn:
            if self.is_sqlite:
                # Take the write lock at BEGIN: a deferred transaction that read first
                # could fail with SQLITE_BUSY when it later tries to write under WAL.
                await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            trans = await conn.begin()
            tx = _Tx(conn=conn, version=0, at=datetime.now(UTC))
            try:
                if bump:
                    tx.version = await self._bump(conn)
                yield tx
            except BaseException:
                await trans.rollback()
                raise
            if tx.changed:
                await trans.commit()
            else:
                # Nothing changed: do not move the version (caches would rebuild for nothing).
                await trans.rollback()

    async def _bump(self, conn: AsyncConnection) -> int:
        result = await conn.execute(
            update(store_version_t)
            .where(store_version_t.c.id == 1)
            .values(version=store_version_t.c.version + 1)
            .returning(store_version_t.c.version)
        )
        new = result.scalar_one_or_none()
        if new is None:
            raise RuntimeError("rule store not initialised: call `await RuleStore.start()` first")
        return int(new)

    # --- version and the compiled book --------------------------------------------------------

    async def version(self) -> int:
        """The store version: changes with every committed change to what a RuleBook is built from."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(store_version_t.c.version).where(store_version_t.c.id == 1))
        if value is None:
            raise RuntimeError("rule store not initialised: call `await RuleStore.start()` first")
        return int(value)

    async def load_book(self) -> RuleBook:
        """A `RuleBook` of the current locations, channels, live rules and SKU categories.

        With no channel configured the book's own default (`online`, every active
        location) applies; nothing is written for it, so configuring channels later
        simply replaces it.
        """
        async with self._read(snapshot=True) as conn:
            version = await conn.scalar(select(store_version_t.c.version).where(store_version_t.c.id == 1))
            locations = [_row_location(r) for r in await conn.execute(select(locations_t))]
            channels = [_row_channel(r) for r in await conn.execute(select(channels_t))]
            rules = [_row_rule(r) for r in await conn.execute(select(rules_t).where(rules_t.c.deleted.is_(False)))]
            categories = {r.sku: r.category for r in await conn.execute(select(sku_categories_t))}
        if version is None:
            raise RuntimeError("rule store not initialised: call `await RuleStore.start()` first")
        return RuleBook(
            version=int(version), locations=locations, channels=channels, rules=rules, sku_categories=categories
        )

    # --- rules --------------------------------------------------------------------------------

    async def list_rules(self, kind: str | None = None, include_deleted: bool = False) -> list[Rule]:
        query = select(rules_t).order_by(rules_t.c.id)
        if kind is not None:
            query = query.where(rules_t.c.kind == kind)
        if not include_deleted:
            query = query.where(rules_t.c.deleted.is_(False))
        async with self._read() as conn:
            return [_row_rule(r) for r in await conn.execute(query)]

    async def get_rule(self, rule_id: int) -> Rule:
        """The current state of a live rule; `UnknownRule` if it never existed or was deleted."""
        async with self._read() as conn:
            rule, deleted = await self._rule_row(conn, rule_id)
        if deleted:
            raise UnknownRule(f"rule {rule_id} was deleted (see its history to restore it)", rule_id=rule_id)
        return rule

    async def create_rule(self, fields: Mapping[str, Any], *, actor: str, reason: str = "") -> Rule:
        """Validate and store a new rule at version 1; `id`/`version` in `fields` are ignored."""
        _need_actor(actor, InvalidRule)
        draft = rule_from_fields(fields, rule_id=0, version=1)  # validate before taking the lock
        async with self._write() as tx:
            (await self._refs(tx.conn)).check_rule(draft)
            rule = msgspec.structs.replace(draft, id=await self._next_rule_id(tx.conn))
            await tx.conn.execute(insert(rules_t), [_rule_values(rule, tx.at)])
            await self._record_rule_changes(tx, [(rule.id, 1, "create", None, _rule_dict(rule))], actor, reason)
            tx.changed = True
        return rule

    async def update_rule(
        self,
        rule_id: int,
        fields: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        actor: str,
        reason: str = "",
    ) -> Rule:
        """Change some fields of a live rule, making version + 1.

        `expected_version` is the version the caller's change was based on; if the
        rule has moved on since, `StaleRuleVersion` (nothing is written). A
        `version` inside `fields` counts as `expected_version` when that is None.
        An update that changes nothing returns the current rule without a new version.
        """
        _need_actor(actor, InvalidRule)
        if isinstance(fields, Mapping):
            if fields.get("id") not in (None, rule_id):
                raise InvalidRule(f"`id` {fields['id']!r} in the fields does not match rule {rule_id}")
            body_version = fields.get("version")
            if body_version is not None:
                if expected_version is None:
                    expected_version = body_version
                elif body_version != expected_version:
                    raise InvalidRule(f"`version` {body_version!r} disagrees with expected_version {expected_version}")
        async with self._write() as tx:
            current, deleted = await self._rule_row(tx.conn, rule_id)
            if deleted:
                raise UnknownRule(f"rule {rule_id} was deleted (roll it back to restore it)", rule_id=rule_id)
            _check_expected(current, expected_version)
            new = rule_from_fields(fields, rule_id=rule_id, version=current.version + 1, base=current)
            if _same_rule(new, current):
                return current
            (await self._refs(tx.conn)).check_rule(new)
            await self._cas_update(tx, current.version, new, deleted=False)
            await self._record_rule_changes(
                tx, [(rule_id, new.version, "update", _rule_dict(current), _rule_dict(new))], actor, reason
            )
            tx.changed = True
        return new

    async def delete_rule(
        self, rule_id: int, *, expected_version: int | None = None, actor: str, reason: str = ""
    ) -> None:
        """Soft-delete a rule (version + 1, `after` = None in its history)."""
        _need_actor(actor, InvalidRule)
        async with self._write() as tx:
            current, deleted = await self._rule_row(tx.conn, rule_id)
            if deleted:
                raise UnknownRule(f"rule {rule_id} is already deleted", rule_id=rule_id)
            _check_expected(current, expected_version)
            gone = msgspec.structs.replace(current, version=current.version + 1)
            await self._cas_update(tx, current.version, gone, deleted=True)
            await self._record_rule_changes(
                tx, [(rule_id, gone.version, "delete", _rule_dict(current), None)], actor, reason
            )
            tx.changed = True

    async def rollback_rule(
        self,
        rule_id: int,
        to_version: int,
        *,
        actor: str,
        reason: str = "",
        expected_version: int | None = None,
    ) -> Rule:
        """Make the state recorded after `to_version` current again, as a new version.

        History is never rewritten: rolling back v5 to v2 makes v6 equal to v2. A
        deleted rule can be restored this way (recorded as a create). Rolling back to
        a delete is refused: use `delete_rule`.
        """
        _need_actor(actor, InvalidRule)
        async with self._write() as tx:
            current, deleted = await self._rule_row(tx.conn, rule_id)
            _check_expected(current, expected_version)
            row = (
                await tx.conn.execute(
                    select(rule_changes_t.c.after).where(
                        rule_changes_t.c.rule_id == rule_id, rule_changes_t.c.version == to_version
                    )
                )
            ).first()
            if row is None:
                raise UnknownRule(f"rule {rule_id} has no version {to_version}", rule_id=rule_id, version=to_version)
            if row.after is None:
                raise InvalidRule(f"version {to_version} of rule {rule_id} deleted it; there is no state to restore")
            target = rule_from_fields(row.after, rule_id=rule_id, version=current.version + 1)
            if not deleted and _same_rule(target, current):
                return current
            # The rule may name a location or channel that has since been removed.
            (await self._refs(tx.conn)).check_rule(target)
            await self._cas_update(tx, current.version, target, deleted=False)
            action = "create" if deleted else "update"
            before = None if deleted else _rule_dict(current)
            await self._record_rule_changes(
                tx, [(rule_id, target.version, action, before, _rule_dict(target))], actor, reason
            )
            tx.changed = True
        return target

    async def rule_history(self, rule_id: int) -> list[RuleChange]:
        """Every version of one rule, oldest first."""
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(rule_changes_t).where(rule_changes_t.c.rule_id == rule_id).order_by(rule_changes_t.c.version)
                )
            ).all()
        if not rows:
            raise UnknownRule(f"no rule {rule_id}", rule_id=rule_id)
        return [_row_change(r) for r in rows]

    async def recent_changes(self, limit: int = 100) -> list[RuleChange]:
        """The latest rule changes across all rules, newest first."""
        async with self._read() as conn:
            rows = await conn.execute(select(rule_changes_t).order_by(rule_changes_t.c.id.desc()).limit(limit))
            return [_row_change(r) for r in rows]

    async def _rule_row(self, conn: AsyncConnection, rule_id: int) -> tuple[Rule, bool]:
        row = (await conn.execute(select(rules_t).where(rules_t.c.id == rule_id))).first()
        if row is None:
            raise UnknownRule(f"no rule {rule_id}", rule_id=rule_id)
        return _row_rule(row), bool(row.deleted)

    async def _next_rule_id(self, conn: AsyncConnection) -> int:
        # Safe without a sequence: writers are serialised by the store_version lock.
        return int(await conn.scalar(select(func.coalesce(func.max(rules_t.c.id), 0)))) + 1

    async def _cas_update(self, tx: _Tx, expected: int, rule: Rule, *, deleted: bool) -> None:
        # Compare-and-set on the row itself, so the guarantee holds even for a writer
        # that did not go through this class's store_version lock.
        result = await tx.conn.execute(
            update(rules_t)
            .where(rules_t.c.id == rule.id, rules_t.c.version == expected)
            .values(**_rule_values(rule, tx.at, deleted=deleted))
        )
        if result.rowcount != 1:
            raise StaleRuleVersion(
                f"rule {rule.id} changed while this update was being applied; reload it and retry",
                rule_id=rule.id,
                expected_version=expected,
            )

    async def _record_rule_changes(
        self,
        tx: _Tx,
        changes: list[tuple[int, int, str, dict[str, Any] | None, dict[str, Any] | None]],
        actor: str,
        reason: str,
    ) -> None:
        if not changes:
            return
        await tx.conn.execute(
            insert(rule_changes_t),
            [
                {
                    "rule_id": rule_id,
                    "version": version,
                    "action": action,
                    "actor": actor,
                    "reason": reason or "",
                    "at": tx.at,
                    "store_version": tx.version,
                    "before": before,
                    "after": after,
                }
                for rule_id, version, action, before, after in changes
            ],
        )

    async def _refs(self, conn: AsyncConnection) -> _Refs:
        return _Refs(
            locations=set((await conn.execute(select(locations_t.c.code))).scalars()),
            channels=set((await conn.execute(select(channels_t.c.name))).scalars()),
        )

    # --- master data: locations ---------------------------------------------------------------

    async def list_locations(self) -> list[Location]:
        """All locations, in location priority order (the order reservations try them)."""
        async with self._read() as conn:
            rows = await conn.execute(select(locations_t).order_by(locations_t.c.priority, locations_t.c.code))
            return [_row_location(r) for r in rows]

    async def get_location(self, code: str) -> Location:
        async with self._read() as conn:
            row = (await conn.execute(select(locations_t).where(locations_t.c.code == code))).first()
        if row is None:
            raise UnknownLocation(f"unknown location {code!r}", location=code)
        return _row_location(row)

    async def upsert_location(self, location: Location | Mapping[str, Any], *, actor: str, reason: str = "") -> Location:
        """Create or replace a location. To stop selling from one, set `active=False`."""
        _need_actor(actor, InvalidMasterData)
        loc = _parse_location(location)
        async with self._write() as tx:
            await self._upsert_locations(tx, [loc], actor, reason)
        return loc

    async def delete_location(self, code: str, *, actor: str, reason: str = "") -> None:
        """Delete a location no channel or live rule refers to (`MasterDataInUse` otherwise)."""
        _need_actor(actor, InvalidMasterData)
        async with self._write() as tx:
            row = (await tx.conn.execute(select(locations_t).where(locations_t.c.code == code))).first()
            if row is None:
                raise UnknownLocation(f"unknown location {code!r}", location=code)
            users = [
                f"channel {r.name}"
                for r in await tx.conn.execute(select(channels_t.c.name, channels_t.c.locations))
                if r.locations and code in r.locations
            ]
            users += [
                f"rule {rid}"
                for rid in (
                    await tx.conn.execute(
                        select(rules_t.c.id).where(rules_t.c.location == code, rules_t.c.deleted.is_(False))
                    )
                ).scalars()
            ]
            if users:
                raise MasterDataInUse(
                    f"location {code!r} is still used by {', '.join(users)}; remove those first, "
                    "or set active=false to stop selling from it",
                    location=code,
                )
            await tx.conn.execute(delete(locations_t).where(locations_t.c.code == code))
            before = _location_values(_row_location(row))
            await self._record_master(tx, [("location", code, "delete", before, None)], actor, reason)
            tx.changed = True

    async def _upsert_locations(self, tx: _Tx, locations: list[Location], actor: str, reason: str) -> int:
        return await self._upsert_master(
            tx, "location", locations_t, "code", [_location_values(loc) for loc in locations],
            lambda row: _location_values(_row_location(row)), actor, reason,
        )

    async def _upsert_master(
        self, tx: _Tx, entity: str, table: Any, key: str, items: list[dict[str, Any]],
        row_values: Any, actor: str, reason: str,
    ) -> int:
        """Insert or update master-data rows, recording a change only where a row differs."""
        existing = {getattr(r, key): row_values(r) for r in await tx.conn.execute(select(table))}
        inserts, updates, changes = [], [], []
        for after in items:
            before = existing.get(after[key])
            if before == after:
                continue
            (inserts if before is None else updates).append(after)
            changes.append((entity, after[key], "create" if before is None else "update", before, after))
            existing[after[key]] = after
        if inserts:
            await tx.conn.execute(insert(table), inserts)
        for values in updates:
            await tx.conn.execute(update(table).where(table.c[key] == values[key]).values(**values))
        await self._record_master(tx, changes, actor, reason)
        if changes:
            tx.changed = True
        return len(changes)

    # --- master data: channels ----------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        """The channels the book sells through: the configured ones, or the default
        `online` channel when none is configured (it is not stored)."""
        async with self._read() as conn:
            rows = await conn.execute(select(channels_t).order_by(channels_t.c.priority, channels_t.c.name))
            channels = [_row_channel(r) for r in rows]
        return channels or [_DEFAULT_CHANNEL_STRUCT]

    async def get_channel(self, name: str) -> Channel:
        async with self._read() as conn:
            row = (await conn.execute(select(channels_t).where(channels_t.c.name == name))).first()
            if row is None:
                configured = await conn.scalar(select(func.count()).select_from(channels_t))
        if row is not None:
            return _row_channel(row)
        if not configured and name == DEFAULT_CHANNEL:
            return _DEFAULT_CHANNEL_STRUCT
        raise UnknownChannel(f"unknown channel {name!r}", channel=name)

    async def upsert_channel(self, channel: Channel | Mapping[str, Any], *, actor: str, reason: str = "") -> Channel:
        """Create or replace a channel; every listed location must exist (`UnknownLocation`).

        Configuring the first channel replaces the built-in default `online`
        channel; configure `online` explicitly if it should stay.
        """
        _need_actor(actor, InvalidMasterData)
        ch = _parse_channel(channel)
        async with self._write() as tx:
            known = set((await tx.conn.execute(select(locations_t.c.code))).scalars())
            for code in ch.locations or ():
                if code not in known:
                    raise UnknownLocation(
                        f"channel {ch.name!r} lists unknown location {code!r}: add the location first", location=code
                    )
            await self._upsert_channels(tx, [ch], actor, reason)
        return ch

    async def delete_channel(self, name: str, *, actor: str, reason: str = "") -> None:
        """Delete a channel no live rule refers to (`MasterDataInUse` otherwise)."""
        _need_actor(actor, InvalidMasterData)
        async with self._write() as tx:
            row = (await tx.conn.execute(select(channels_t).where(channels_t.c.name == name))).first()
            if row is None:
                hint = " (the default channel is not stored; configuring any channel replaces it)" if name == DEFAULT_CHANNEL else ""
                raise UnknownChannel(f"unknown channel {name!r}{hint}", channel=name)
            rule_ids = list(
                (
                    await tx.conn.execute(
                        select(rules_t.c.id).where(rules_t.c.channel == name, rules_t.c.deleted.is_(False))
                    )
                ).scalars()
            )
            if rule_ids:
                raise MasterDataInUse(
                    f"channel {name!r} is still used by rule(s) {', '.join(map(str, rule_ids))}; delete them first",
                    channel=name,
                )
            await tx.conn.execute(delete(channels_t).where(channels_t.c.name == name))
            before = _channel_values(_row_channel(row))
            await self._record_master(tx, [("channel", name, "delete", before, None)], actor, reason)
            tx.changed = True

    async def _upsert_channels(self, tx: _Tx, channels: list[Channel], actor: str, reason: str) -> int:
        return await self._upsert_master(
            tx, "channel", channels_t, "name", [_channel_values(ch) for ch in channels],
            lambda row: _channel_values(_row_channel(row)), actor, reason,
        )

    # --- master data: SKU categories ----------------------------------------------------------

    async def sku_categories(self) -> dict[str, str]:
        async with self._read() as conn:
            return {r.sku: r.category for r in await conn.execute(select(sku_categories_t))}

    async def set_sku_categories(
        self, mapping: Mapping[str, str | None], *, actor: str, reason: str = "", replace: bool = False
    ) -> int:
        """Set the category of the given SKUs (None removes one). With `replace`, SKUs
        not in `mapping` lose their category. Returns how many SKUs changed."""
        _need_actor(actor, InvalidMasterData)
        updates = _parse_str_map(mapping, "sku_categories", "category")
        async with self._write() as tx:
            return await self._apply_sku_categories(tx, updates, replace, actor, reason)

    async def _apply_sku_categories(
        self, tx: _Tx, updates: dict[str, str | None], replace: bool, actor: str, reason: str
    ) -> int:
        return await self._apply_key_values(
            tx, sku_categories_t, "sku", "category", "sku_categories", updates, replace, actor, reason
        )

    async def _apply_key_values(
        self,
        tx: _Tx,
        table: Any,
        key_col: str,
        value_col: str,
        entity: str,
        updates: dict[str, str | None],
        replace: bool,
        actor: str,
        reason: str,
    ) -> int:
        """Apply {key: value|None} to a two-column table as a diff, audited as one change row."""
        existing: dict[str, str] = {
            r[0]: r[1] for r in await tx.conn.execute(select(table.c[key_col], table.c[value_col]))
        }
        if replace:
            target = {k: v for k, v in updates.items() if v is not None}
        else:
            target = dict(existing)
            for k, v in updates.items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        changed = sorted(k for k in existing.keys() | target.keys() if existing.get(k) != target.get(k))
        if not changed:
            return 0
        for chunk in _chunks([k for k in changed if k in existing]):
            await tx.conn.execute(delete(table).where(table.c[key_col].in_(chunk)))
        rows = [{key_col: k, value_col: target[k]} for k in changed if k in target]
        if rows:
            await tx.conn.execute(insert(table), rows)
        before = {k: existing.get(k) for k in changed}
        after = {k: target.get(k) for k in changed}
        await self._record_master(tx, [(entity, "*", "replace" if replace else "update", before, after)], actor, reason)
        tx.changed = True
        return len(changed)

    # --- master data: import / export ---------------------------------------------------------

    async def import_master_data(self, document: Mapping[str, Any], *, actor: str, reason: str = "") -> dict[str, int]:
        """Apply a master-data document in one transaction (all of it or none of it).

        `{"locations": [...], "channels": [...], "rules": [...], "sku_categories": {...}}`,
        each item a JSON object in the field names of `Location`, `Channel`, `Rule`.
        It merges rather than replaces, and importing the same document twice changes nothing:

        - locations and channels are created or replaced by code / name;
        - a rule with an `id` updates that rule (restoring it if deleted) or is
          created with that id; a rule without one is created unless an identical
          live rule already exists;
        - `sku_categories` set categories (null removes one).

        Returns counts of what changed. Rules go in with bulk INSERTs, so thousands
        import in well under a second on SQLite.
        """
        _need_actor(actor, InvalidMasterData)
        if not isinstance(document, Mapping):
            raise InvalidMasterData(f"a master data document is an object with keys {', '.join(_DOCUMENT_KEYS)}")
        unknown = sorted(str(k) for k in document if k not in _DOCUMENT_KEYS)
        if unknown:
            raise InvalidMasterData(f"unknown key(s) {', '.join(unknown)}; a document has {', '.join(_DOCUMENT_KEYS)}")

        # Validate everything that needs no database before taking the write lock.
        locations = [_parse_location(x, f"locations[{i}]: ") for i, x in enumerate(_doc_list(document, "locations"))]
        channels = [_parse_channel(x, f"channels[{i}]: ") for i, x in enumerate(_doc_list(document, "channels"))]
        _no_duplicates([loc.code for loc in locations], "locations", "code")
        _no_duplicates([ch.name for ch in channels], "channels", "name")
        categories = _parse_str_map(document.get("sku_categories") or {}, "sku_categories", "category")
        drafts: list[tuple[int | None, Rule, str]] = []
        for i, item in enumerate(_doc_list(document, "rules")):
            where = f"rules[{i}]: "
            explicit = item.get("id") if isinstance(item, Mapping) else None
            if explicit is not None and (not isinstance(explicit, int) or isinstance(explicit, bool) or explicit < 1):
                raise InvalidRule(f"{where}`id` must be a positive integer, not {explicit!r}")
            drafts.append((explicit, rule_from_fields(item, rule_id=explicit or 0, version=1, where=where), where))
        _no_duplicates([e for e, _, _ in drafts if e is not None], "rules", "id")

        counts = {"locations": 0, "channels": 0, "rules_created": 0, "rules_updated": 0, "sku_categories": 0}
        async with self._write() as tx:
            counts["locations"] = await self._upsert_locations(tx, locations, actor, reason)
            refs = await self._refs(tx.conn)
            for i, ch in enumerate(channels):
                for code in ch.locations or ():
                    refs.check_location(code, f"channels[{i}]: ")
            counts["channels"] = await self._upsert_channels(tx, channels, actor, reason)
            refs.channels |= {ch.name for ch in channels}

            existing: dict[int, tuple[Rule, bool]] = {
                r.id: (_row_rule(r), bool(r.deleted)) for r in await tx.conn.execute(select(rules_t))
            }
            live = {_rule_identity(rule) for rule, deleted in existing.values() if not deleted}
            next_id = max([0, *existing, *(e for e, _, _ in drafts if e is not None)]) + 1
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            history: list[tuple[int, int, str, dict[str, Any] | None, dict[str, Any] | None]] = []
            for explicit, draft, where in drafts:
                refs.check_rule(draft, where)
                if explicit is not None and explicit in existing:
                    current, deleted = existing[explicit]
                    new = msgspec.structs.replace(draft, id=explicit, version=current.version + 1)
                    if not deleted and _same_rule(new, current):
                        continue
                    updates.append({"b_id": explicit, **_rule_values(new, tx.at)})
                    history.append(
                        (explicit, new.version, "create" if deleted else "update",
                         None if deleted else _rule_dict(current), _rule_dict(new))
                    )
                    counts["rules_updated"] += 1
                else:
                    if explicit is None:
                        if _rule_identity(draft) in live:
                            continue
                        rule = msgspec.structs.replace(draft, id=next_id)
                        next_id += 1
                    else:
                        rule = draft
                    live.add(_rule_identity(rule))
                    inserts.append(_rule_values(rule, tx.at))
                    history.append((rule.id, 1, "create", None, _rule_dict(rule)))
                    counts["rules_created"] += 1
            if inserts:
                await tx.conn.execute(insert(rules_t), inserts)
            if updates:
                # executemany: keys that are column names become the SET clause
                await tx.conn.execute(update(rules_t).where(rules_t.c.id == bindparam("b_id")), updates)
            await self._record_rule_changes(tx, history, actor, reason)
            if history:
                tx.changed = True
            if categories:
                counts["sku_categories"] = await self._apply_sku_categories(tx, categories, False, actor, reason)
        return counts

    async def export_master_data(self) -> dict[str, Any]:
        """The current master data and live rules as a document `import_master_data` accepts."""
        async with self._read(snapshot=True) as conn:
            locations = [_location_values(_row_location(r)) for r in await conn.execute(select(locations_t).order_by(locations_t.c.code))]
            channels = [_channel_values(_row_channel(r)) for r in await conn.execute(select(channels_t).order_by(channels_t.c.name))]
            rules = [
                {k: v for k, v in _rule_dict(_row_rule(r)).items() if k != "version"}
                for r in await conn.execute(select(rules_t).where(rules_t.c.deleted.is_(False)).order_by(rules_t.c.id))
            ]
            categories = {r.sku: r.category for r in await conn.execute(select(sku_categories_t).order_by(sku_categories_t.c.sku))}
        return {"locations": locations, "channels": channels, "rules": rules, "sku_categories": categories}

    async def master_history(
        self, entity: str | None = None, key: str | None = None, limit: int = 100
    ) -> list[MasterChange]:
        """Master-data changes, newest first, optionally for one entity type / key."""
        query = select(master_changes_t).order_by(master_changes_t.c.id.desc()).limit(limit)
        if entity is not None:
            query = query.where(master_changes_t.c.entity == entity)
        if key is not None:
            query = query.where(master_changes_t.c.key == key)
        async with self._read() as conn:
            return [
                MasterChange(**{f: r._mapping[f] for f in MasterChange.__struct_fields__})
                for r in await conn.execute(query)
            ]

    async def _record_master(
        self, tx: _Tx, changes: list[tuple[str, str, str, Any, Any]], actor: str, reason: str
    ) -> None:
        if not changes:
            return
        await tx.conn.execute(
            insert(master_changes_t),
            [
                {
                    "entity": entity,
                    "key": key,
                    "action": action,
                    "actor": actor,
                    "reason": reason or "",
                    "at": tx.at,
                    "store_version": tx.version,
                    "before": before,
                    "after": after,
                }
                for entity, key, action, before, after in changes
            ],
        )

    # --- API keys -----------------------------------------------------------------------------

    async def add_api_key(self, name: str, key_plaintext: str, scopes: Iterable[str]) -> str:
        """Store (or re-activate with new name/scopes) a key by its SHA-256; returns the hash.

        Keys do not move the store version: they are not part of a RuleBook.
        """
        _check_key(name, "API key name")
        if not isinstance(key_plaintext, str) or not key_plaintext:
            raise InvalidMasterData("an API key must be a non-empty string")
        scope_list = [scopes] if isinstance(scopes, str) else list(scopes)
        for scope in scope_list:
            _check_key(scope, "API key scope")
        key_hash = hash_api_key(key_plaintext)
        values = {"name": name, "scopes": scope_list, "active": True}
        async with self._write(bump=False) as tx:
            found = await tx.conn.scalar(select(api_keys_t.c.key_hash).where(api_keys_t.c.key_hash == key_hash))
            if found is None:
                await tx.conn.execute(insert(api_keys_t).values(key_hash=key_hash, created_at=tx.at, **values))
            else:
                await tx.conn.execute(update(api_keys_t).where(api_keys_t.c.key_hash == key_hash).values(**values))
            tx.changed = True
        return key_hash

    async def api_keys(self) -> list[tuple[str, str, list[str]]]:
        """Active keys as (key_hash, name, scopes)."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(api_keys_t.c.key_hash, api_keys_t.c.name, api_keys_t.c.scopes)
                .where(api_keys_t.c.active.is_(True))
                .order_by(api_keys_t.c.name, api_keys_t.c.created_at)
            )
            return [(r.key_hash, r.name, list(r.scopes)) for r in rows]

    async def find_api_key(self, key_plaintext: str) -> tuple[str, list[str]] | None:
        """(name, scopes) of an active key, or None."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(api_keys_t.c.name, api_keys_t.c.scopes).where(
                        api_keys_t.c.key_hash == hash_api_key(key_plaintext), api_keys_t.c.active.is_(True)
                    )
                )
            ).first()
        return (row.name, list(row.scopes)) if row else None

    async def revoke_api_key(self, name: str) -> int:
        """Deactivate every key with this name (kept, not deleted, for the record)."""
        async with self._write(bump=False) as tx:
            result = await tx.conn.execute(
                update(api_keys_t).where(api_keys_t.c.name == name, api_keys_t.c.active.is_(True)).values(active=False)
            )
            tx.changed = result.rowcount > 0
            return result.rowcount

    # --- Shopify mappings ---------------------------------------------------------------------

    async def item_mappings(self) -> dict[str, str]:
        """SKU -> Shopify InventoryItem GID."""
        async with self._read() as conn:
            return {r.sku: r.inventory_item_gid for r in await conn.execute(select(shopify_item_mappings_t))}

    async def location_mappings(self) -> list[tuple[str, str, str]]:
        """(channel, location code, Shopify Location GID), sorted."""
        t = shopify_location_mappings_t
        async with self._read() as conn:
            rows = await conn.execute(select(t).order_by(t.c.channel, t.c.location))
            return [(r.channel, r.location, r.shopify_location_gid) for r in rows]

    async def set_item_mappings(
        self, mapping: Mapping[str, str | int | None], *, actor: str = "system", reason: str = "", replace: bool = False
    ) -> int:
        """Map SKUs to InventoryItem GIDs (a numeric id is turned into a GID; None unmaps).
        Returns how many SKUs changed."""
        _need_actor(actor, InvalidMasterData)
        items = _parse_item_mappings(mapping)
        async with self._write() as tx:
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
        _need_actor(actor, InvalidMasterData)
        pairs = _parse_location_mappings(rows)
        async with self._write() as tx:
            return await self._apply_location_mappings(tx, pairs, replace, actor, reason)

    async def import_mappings_file(self, path: str | Path, *, actor: str = "system", reason: str = "") -> dict[str, int]:
        """Load Shopify mappings from a file, in one transaction.

        - CSV with header `sku,inventory_item_gid`, or `channel,location,shopify_location_gid`;
        - JSON `{"items": {sku: gid} | [{"sku", "inventory_item_gid"}], "locations":
          [{"channel", "location", "shopify_location_gid"}]}` (either key optional).

        Merges into the existing mappings; returns {"items": changed, "locations": changed}.
        """
        _need_actor(actor, InvalidMasterData)
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
        async with self._write() as tx:
            return {
                "items": await self._apply_item_mappings(tx, items, False, actor, reason) if items else 0,
                "locations": await self._apply_location_mappings(tx, pairs, False, actor, reason) if pairs else 0,
            }

    async def _apply_item_mappings(
        self, tx: _Tx, items: dict[str, str | None], replace: bool, actor: str, reason: str
    ) -> int:
        return await self._apply_key_values(
            tx, shopify_item_mappings_t, "sku", "inventory_item_gid", "item_mappings", items, replace, actor, reason
        )

    async def _apply_location_mappings(
        self, tx: _Tx, pairs: dict[tuple[str, str], str | None], replace: bool, actor: str, reason: str
    ) -> int:
        t = shopify_location_mappings_t
        refs = await self._refs(tx.conn)
        for (channel, location), gid in pairs.items():
            if gid is not None:
                refs.check_location(location, "Shopify location mapping: ")
                refs.check_channel(channel, "Shopify location mapping: ")
        existing = {(r.channel, r.location): r.shopify_location_gid for r in await tx.conn.execute(select(t))}
        if replace:
            target = {k: v for k, v in pairs.items() if v is not None}
        else:
            target = dict(existing)
            for k, v in pairs.items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        changed = sorted(k for k in existing.keys() | target.keys() if existing.get(k) != target.get(k))
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
        await self._record_master(tx, [("location_mappings", "*", action, before, after)], actor, reason)
        tx.changed = True
        return len(changed)


# --- more helpers -----------------------------------------------------------------------------


def _check_expected(current: Rule, expected: int | None) -> None:
    if expected is not None and current.version != expected:
        raise StaleRuleVersion(
            f"rule {current.id} is at version {current.version}, not {expected}: "
            "someone changed it since you loaded it; reload and reapply your change",
            rule_id=current.id,
            current_version=current.version,
            expected_version=expected,
        )


def _row_change(row: Any) -> RuleChange:
    m = row._mapping
    return RuleChange(**{f: m[f] for f in RuleChange.__struct_fields__})


def _doc_list(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key) or []
    if not isinstance(value, list):
        raise InvalidMasterData(f"`{key}` must be a list, not {type(value).__name__}")
    return value


def _no_duplicates(keys: list[Any], what: str, field: str) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise InvalidMasterData(f"{what}: {field} {key!r} appears twice in the document")
        seen.add(key)


def _parse_item_mappings(mapping: Any, where: str = "") -> dict[str, str | None]:
    if not isinstance(mapping, Mapping):
        raise InvalidMasterData(f"{where}item mappings are an object of {{sku: inventory_item_gid}}")
    out: dict[str, str | None] = {}
    for sku, gid in mapping.items():
        _check_key(sku, f"{where}item mapping SKU")
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
        _check_key(channel, f"{at}channel")
        _check_key(location, f"{at}location")
        out[(channel, location)] = None if gid in (None, "") else _shopify_gid(gid, "Location", at)
    return out


def _sqlite_transaction_control(engine: AsyncEngine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.

    The stdlib driver does not BEGIN before a SELECT, so without this the reads in
    `load_book` would each see a different moment, and "read the rule, then write
    it" could not be made atomic. (SQLAlchemy's documented recipe.) WAL lets the
    readers in other processes (every service's cache) keep reading while a planner
    writes; synchronous=NORMAL is the usual durability trade-off under WAL.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))
