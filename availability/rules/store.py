"""The rule and master-data store: versioned, audited, SQLite or PostgreSQL.

Planners change rules rarely; every request reads them. So this store is built
for correct, audited writes and one cheap "has anything changed?" read:

- Every write goes through `StoreDatabase.write` (`availability.rules.database`),
  which moves the single-row `store_version` counter first and so serialises
  writers: read-validate-write sequences (compare-and-set on a rule version,
  "does this location exist", "max id + 1") cannot interleave, and a cache in any
  process knows it must rebuild when the counter moves.
- Rule updates are compare-and-set on the rule's own `version`: of two planners
  who both loaded version 3, the first to save makes version 4 and the second
  gets `StaleRuleVersion` instead of silently overwriting it.
- Every change appends a history row with who, when (UTC), why and the full
  before/after state; rules are soft-deleted so their history and ids survive
  and a rollback can restore a deleted rule.
- `load_book()` reads the version and every row in one snapshot (REPEATABLE
  READ on PostgreSQL; one read transaction under WAL on SQLite), so the
  `RuleBook` it returns is exactly the state at `book.version`.

API keys (`store.keys`, `keys_store.py`) and Shopify mappings (`store.mappings`,
`mappings_store.py`) share this store's database but have their own classes.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

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
from availability.rules.database import MasterChange, StoreDatabase, Tx, check_key, need_actor
from availability.rules.errors import InvalidMasterData, MasterDataInUse
from availability.rules.keys_store import ApiKeyStore, hash_api_key
from availability.rules.mappings_store import ShopifyMappingStore
from availability.rules.models import (
    channels_t,
    locations_t,
    master_changes_t,
    rule_changes_t,
    rules_t,
    sku_categories_t,
    store_version_t,
)

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
    check_key(loc.code, f"{where}location code")
    for group in loc.groups:
        check_key(group, f"{where}location group")
    return loc


def _parse_channel(item: Any, where: str = "") -> Channel:
    ch: Channel = _convert_struct(item, Channel, _CHANNEL_FIELDS, "channel", where)
    check_key(ch.name, f"{where}channel name")
    for code in ch.locations or ():
        check_key(code, f"{where}location code")
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
        check_key(key, f"{what}: SKU")
        if value is not None:
            check_key(value, f"{what}[{key!r}]: {value_what}")
        out[key] = value
    return out



# --- the store --------------------------------------------------------------------------------


class RuleStore:
    """Rules, locations, channels and SKU categories; `keys` and `mappings` over the same database.

    `RuleStore("sqlite+aiosqlite:///var/availability.db")` or
    `RuleStore("postgresql+asyncpg://user@host/db")`; call `await start()` before use
    and `await close()` after (or use `async with`).

    `sqlite+aiosqlite:///:memory:` works for quick single-coroutine use, but it is
    one shared connection, so concurrent writers need a file (or PostgreSQL).
    """

    def __init__(self, database_url: str | URL, *, echo: bool = False) -> None:
        self.db = StoreDatabase(database_url, echo=echo)
        self.url: URL = self.db.url
        self.is_sqlite = self.db.is_sqlite
        # Same database and transactions, their own homes: keys are the API's, mappings the Shopify push's.
        self.keys = ApiKeyStore(self.db)
        self.mappings = ShopifyMappingStore(self.db)

    def __repr__(self) -> str:
        return f"RuleStore({self.url.render_as_string(hide_password=True)!r})"


    async def __aenter__(self) -> RuleStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the missing tables and the store_version row (`StoreDatabase.start`)."""
        await self.db.start()

    async def close(self) -> None:
        await self.db.close()

    async def version(self) -> int:
        """The store version: changes with every committed change to what a RuleBook is built from."""
        return await self.db.version()


    async def load_book(self) -> RuleBook:
        """A `RuleBook` of the current locations, channels, live rules and SKU categories.

        With no channel configured the book's own default (`online`, every active
        location) applies; nothing is written for it, so configuring channels later
        simply replaces it.
        """
        async with self.db.read(snapshot=True) as conn:
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
        async with self.db.read() as conn:
            return [_row_rule(r) for r in await conn.execute(self._rules_query(kind, include_deleted))]

    @staticmethod
    def _rules_query(kind: str | None = None, include_deleted: bool = False):
        query = select(rules_t).order_by(rules_t.c.id)
        if kind is not None:
            query = query.where(rules_t.c.kind == kind)
        if not include_deleted:
            query = query.where(rules_t.c.deleted.is_(False))
        return query

    async def get_rule(self, rule_id: int) -> Rule:
        """The current state of a live rule; `UnknownRule` if it never existed or was deleted."""
        async with self.db.read() as conn:
            rule, deleted = await self._rule_row(conn, rule_id)
        if deleted:
            raise UnknownRule(f"rule {rule_id} was deleted (see its history to restore it)", rule_id=rule_id)
        return rule

    async def create_rule(self, fields: Mapping[str, Any], *, actor: str, reason: str = "") -> Rule:
        """Validate and store a new rule at version 1; `id`/`version` in `fields` are ignored."""
        need_actor(actor, InvalidRule)
        draft = rule_from_fields(fields, rule_id=0, version=1)  # validate before taking the lock
        async with self.db.write() as tx:
            (await self.db.refs(tx.conn)).check_rule(draft)
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
        need_actor(actor, InvalidRule)
        if isinstance(fields, Mapping):
            if fields.get("id") not in (None, rule_id):
                raise InvalidRule(f"`id` {fields['id']!r} in the fields does not match rule {rule_id}")
            body_version = fields.get("version")
            if body_version is not None:
                if expected_version is None:
                    expected_version = body_version
                elif body_version != expected_version:
                    raise InvalidRule(f"`version` {body_version!r} disagrees with expected_version {expected_version}")
        async with self.db.write() as tx:
            current, deleted = await self._rule_row(tx.conn, rule_id)
            if deleted:
                raise UnknownRule(f"rule {rule_id} was deleted (roll it back to restore it)", rule_id=rule_id)
            _check_expected(current, expected_version)
            new = rule_from_fields(fields, rule_id=rule_id, version=current.version + 1, base=current)
            if _same_rule(new, current):
                return current
            (await self.db.refs(tx.conn)).check_rule(new)
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
        need_actor(actor, InvalidRule)
        async with self.db.write() as tx:
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
        need_actor(actor, InvalidRule)
        async with self.db.write() as tx:
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
            (await self.db.refs(tx.conn)).check_rule(target)
            await self._cas_update(tx, current.version, target, deleted=False)
            action = "create" if deleted else "update"
            before = None if deleted else _rule_dict(current)
            await self._record_rule_changes(
                tx, [(rule_id, target.version, action, before, _rule_dict(target))], actor, reason
            )
            tx.changed = True
        return target

    async def apply_changes(
        self, changes: Sequence[Mapping[str, Any]], *, actor: str, reason: str = ""
    ) -> list[RuleChange]:
        """Several creates, updates and deletes as one change: one transaction, one store version.

        Each change is `{"op": "create", "rule": {fields}}`, `{"op": "update", "id": n,
        "rule": {fields to change}, "expected_version": v?}` or `{"op": "delete", "id": n,
        "expected_version": v?}` (the shape of a what-if draft or a CSV import). All of it
        is applied or none: a stale version or a bad field anywhere writes nothing. Each
        rule still gets its own version and history row, all with the same reason and
        store version, so the change can be found (and each rule rolled back) as one.
        Changes that would change nothing are skipped; returns the history rows written.
        """
        need_actor(actor, InvalidRule)
        if not changes:
            raise InvalidRule("no changes to apply")
        history: list[tuple[int, int, str, dict[str, Any] | None, dict[str, Any] | None]] = []
        async with self.db.write() as tx:
            refs = await self.db.refs(tx.conn)
            next_id = await self._next_rule_id(tx.conn)
            touched: set[int] = set()
            for index, change in enumerate(changes):
                where = f"changes[{index}]: "
                op = change.get("op")
                fields = change.get("rule") or {}
                if op == "create":
                    rule = rule_from_fields(fields, rule_id=next_id, version=1, where=where)
                    refs.check_rule(rule, where)
                    next_id += 1
                    await tx.conn.execute(insert(rules_t), [_rule_values(rule, tx.at)])
                    history.append((rule.id, 1, "create", None, _rule_dict(rule)))
                    continue
                if op not in ("update", "delete"):
                    raise InvalidRule(f"{where}`op` is create, update or delete, not {op!r}")
                rule_id = change.get("id")
                if not isinstance(rule_id, int) or isinstance(rule_id, bool):
                    raise InvalidRule(f"{where}an {op} needs the rule's `id`")
                if rule_id in touched:
                    # Two edits of one rule in one change would make the second's expected version meaningless.
                    raise InvalidRule(f"{where}rule {rule_id} is changed twice; merge the two changes")
                touched.add(rule_id)
                current, deleted = await self._rule_row(tx.conn, rule_id)
                if deleted:
                    raise UnknownRule(f"{where}rule {rule_id} was deleted", rule_id=rule_id)
                _check_expected(current, change.get("expected_version"))
                if op == "delete":
                    gone = msgspec.structs.replace(current, version=current.version + 1)
                    await self._cas_update(tx, current.version, gone, deleted=True)
                    history.append((rule_id, gone.version, "delete", _rule_dict(current), None))
                    continue
                new = rule_from_fields(fields, rule_id=rule_id, version=current.version + 1, base=current, where=where)
                if _same_rule(new, current):
                    continue
                refs.check_rule(new, where)
                await self._cas_update(tx, current.version, new, deleted=False)
                history.append((rule_id, new.version, "update", _rule_dict(current), _rule_dict(new)))
            await self._record_rule_changes(tx, history, actor, reason)
            tx.changed = bool(history)
            version = tx.version
        return [
            RuleChange(
                rule_id=rule_id, version=v, action=action, actor=actor, reason=reason or "",  # type: ignore[arg-type]
                at=tx.at, before=before, after=after, store_version=version if history else 0,
            )
            for rule_id, v, action, before, after in history
        ]

    async def rule_history(self, rule_id: int) -> list[RuleChange]:
        """Every version of one rule, oldest first."""
        async with self.db.read() as conn:
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
        async with self.db.read() as conn:
            return await self._recent(conn, limit)

    async def rules_and_recent_changes(self, limit: int = 10) -> tuple[list[Rule], list[RuleChange]]:
        """The live rules and the latest `limit` changes, in one read (the console's rules
        table): one connection and transaction instead of two, and one snapshot."""
        async with self.db.read(snapshot=True) as conn:
            rules = [_row_rule(r) for r in await conn.execute(self._rules_query())]
            return rules, await self._recent(conn, limit)

    @staticmethod
    async def _recent(conn: AsyncConnection, limit: int) -> list[RuleChange]:
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

    async def _cas_update(self, tx: Tx, expected: int, rule: Rule, *, deleted: bool) -> None:
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
        tx: Tx,
        changes: list[tuple[int, int, str, dict[str, Any] | None, dict[str, Any] | None]],
        actor: str,
        reason: str,
    ) -> None:
        await self.db.audit(
            tx, rule_changes_t,
            [{"rule_id": i, "version": v, "action": a, "before": b, "after": af} for i, v, a, b, af in changes],
            actor, reason,
        )

    # --- master data: locations ---------------------------------------------------------------

    async def list_locations(self) -> list[Location]:
        """All locations, in location priority order (the order reservations try them)."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(locations_t).order_by(locations_t.c.priority, locations_t.c.code))
            return [_row_location(r) for r in rows]

    async def get_location(self, code: str) -> Location:
        async with self.db.read() as conn:
            row = (await conn.execute(select(locations_t).where(locations_t.c.code == code))).first()
        if row is None:
            raise UnknownLocation(f"unknown location {code!r}", location=code)
        return _row_location(row)

    async def upsert_location(self, location: Location | Mapping[str, Any], *, actor: str, reason: str = "") -> Location:
        """Create or replace a location. To stop selling from one, set `active=False`."""
        need_actor(actor, InvalidMasterData)
        loc = _parse_location(location)
        async with self.db.write() as tx:
            await self._upsert_locations(tx, [loc], actor, reason)
        return loc

    async def delete_location(self, code: str, *, actor: str, reason: str = "") -> None:
        """Delete a location no channel or live rule refers to (`MasterDataInUse` otherwise)."""
        need_actor(actor, InvalidMasterData)
        async with self.db.write() as tx:
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
            await self.db.record_master(tx, [("location", code, "delete", before, None)], actor, reason)
            tx.changed = True

    async def _upsert_locations(self, tx: Tx, locations: list[Location], actor: str, reason: str) -> int:
        return await self._upsert_master(
            tx, "location", locations_t, "code", [_location_values(loc) for loc in locations],
            lambda row: _location_values(_row_location(row)), actor, reason,
        )

    async def _upsert_master(
        self, tx: Tx, entity: str, table: Any, key: str, items: list[dict[str, Any]],
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
        await self.db.record_master(tx, changes, actor, reason)
        if changes:
            tx.changed = True
        return len(changes)

    # --- master data: channels ----------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        """The channels the book sells through: the configured ones, or the default
        `online` channel when none is configured (it is not stored)."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(channels_t).order_by(channels_t.c.priority, channels_t.c.name))
            channels = [_row_channel(r) for r in rows]
        return channels or [_DEFAULT_CHANNEL_STRUCT]

    async def get_channel(self, name: str) -> Channel:
        async with self.db.read() as conn:
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
        need_actor(actor, InvalidMasterData)
        ch = _parse_channel(channel)
        async with self.db.write() as tx:
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
        need_actor(actor, InvalidMasterData)
        async with self.db.write() as tx:
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
            await self.db.record_master(tx, [("channel", name, "delete", before, None)], actor, reason)
            tx.changed = True

    async def _upsert_channels(self, tx: Tx, channels: list[Channel], actor: str, reason: str) -> int:
        return await self._upsert_master(
            tx, "channel", channels_t, "name", [_channel_values(ch) for ch in channels],
            lambda row: _channel_values(_row_channel(row)), actor, reason,
        )

    # --- master data: SKU categories ----------------------------------------------------------

    async def sku_categories(self) -> dict[str, str]:
        async with self.db.read() as conn:
            return {r.sku: r.category for r in await conn.execute(select(sku_categories_t))}

    async def set_sku_categories(
        self, mapping: Mapping[str, str | None], *, actor: str, reason: str = "", replace: bool = False
    ) -> int:
        """Set the category of the given SKUs (None removes one). With `replace`, SKUs
        not in `mapping` lose their category. Returns how many SKUs changed."""
        need_actor(actor, InvalidMasterData)
        updates = _parse_str_map(mapping, "sku_categories", "category")
        async with self.db.write() as tx:
            return await self._apply_sku_categories(tx, updates, replace, actor, reason)

    async def _apply_sku_categories(
        self, tx: Tx, updates: dict[str, str | None], replace: bool, actor: str, reason: str
    ) -> int:
        return await self.db.apply_key_values(
            tx, sku_categories_t, "sku", "category", "sku_categories", updates, replace, actor, reason
        )

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
        need_actor(actor, InvalidMasterData)
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
        async with self.db.write() as tx:
            counts["locations"] = await self._upsert_locations(tx, locations, actor, reason)
            refs = await self.db.refs(tx.conn)
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
        async with self.db.read(snapshot=True) as conn:
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
        async with self.db.read() as conn:
            return [
                MasterChange(**{f: r._mapping[f] for f in MasterChange.__struct_fields__})
                for r in await conn.execute(query)
            ]


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
