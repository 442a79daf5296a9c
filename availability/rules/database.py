"""The one SQL database behind the rule store, the API-key store and the Shopify mappings.

Three stores share these tables (`availability.rules.models`) and this class's engine,
transactions and audit trail, each in its own module:

- `availability.rules.store.RuleStore`: rules and master data (locations, channels,
  SKU categories): what a `RuleBook` is built from;
- `availability.rules.keys_store.ApiKeyStore`: API keys with scopes;
- `availability.rules.mappings_store.ShopifyMappingStore`: SKU and location mappings
  to Shopify GIDs.

What they share, and why it lives here once:

- Every write runs in one transaction that first increments the single-row
  `store_version` counter. Taking that row first serialises writers on
  PostgreSQL (row lock) just as SQLite's write lock does (`BEGIN IMMEDIATE`), so
  read-validate-write sequences cannot interleave, and a cache in any process
  knows it must rebuild when the counter moves. A write that turns out to change
  nothing is rolled back, so the counter only moves for real changes.
- Master-data and mapping changes append to one audit table (`master_changes`) with
  who, when (UTC), why and the before/after.

The database URL is passed in by the caller (configuration lives elsewhere);
this module never reads the environment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from availability.domain.errors import UnknownChannel, UnknownLocation
from availability.domain.rules import DEFAULT_CHANNEL, Rule
from availability.rules.errors import InvalidMasterData
from availability.rules.models import channels_t, locations_t, master_changes_t, store_version_t

log = logging.getLogger("availability.rules.store")

__all__ = ["StoreDatabase", "MasterChange", "Tx", "Refs", "need_actor", "check_key", "chunks", "merged"]

#: rows per DELETE ... WHERE key IN (...), well under SQLite's bound-parameter limit
CHUNK = 500


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



@dataclass
class Tx:
    """An open write transaction: its connection, the store version it will commit
    as, one timestamp for every history row it writes, and whether anything changed."""

    conn: AsyncConnection
    version: int
    at: datetime
    changed: bool = False


@dataclass
class Refs:
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



def need_actor(actor: Any, error: type[Exception]) -> None:
    # Every change records who made it; an anonymous change is refused, not guessed.
    if not isinstance(actor, str) or not actor.strip():
        raise error("`actor` is required: every change records who made it")


def check_key(value: Any, what: str, error: type[Exception] = InvalidMasterData) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise error(f"{what} must be a non-empty string without surrounding spaces, not {value!r}")
    return value



def chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]



def merged(existing: dict[Any, Any], updates: dict[Any, Any], replace: bool) -> tuple[dict[Any, Any], list[Any]]:
    """`existing` with `updates` applied (None removes a key; `replace` drops what updates do
    not name), and the sorted keys whose value differs: the diff a mapping write records."""
    if replace:
        target = {k: v for k, v in updates.items() if v is not None}
    else:
        target = dict(existing)
        for k, v in updates.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
    return target, sorted(k for k in existing.keys() | target.keys() if existing.get(k) != target.get(k))


class StoreDatabase:
    """The engine, schema, transactions and audit trail every store in this package writes through.

    `StoreDatabase("sqlite+aiosqlite:///var/availability.db")` or
    `StoreDatabase("postgresql+asyncpg://user@host/db")`; `await start()` before use,
    `await close()` after. `RuleStore` opens one and hands it to the key and mapping stores.

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
        return f"StoreDatabase({self.url.render_as_string(hide_password=True)!r})"

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
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            if snapshot and not self.is_sqlite:
                # READ COMMITTED would let each SELECT see a different commit.
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self, *, bump: bool = True) -> AsyncIterator[Tx]:
        """One write transaction. With `bump` (every change a RuleBook depends on) the
        store_version row is incremented first, which also takes the writers' lock."""
        async with self._engine.connect() as conn:
            if self.is_sqlite:
                # Take the write lock at BEGIN: a deferred transaction that read first
                # could fail with SQLITE_BUSY when it later tries to write under WAL.
                await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            trans = await conn.begin()
            tx = Tx(conn=conn, version=0, at=datetime.now(UTC))
            try:
                if bump:
                    tx.version = await self.bump(conn)
                yield tx
            except BaseException:
                await trans.rollback()
                raise
            if tx.changed:
                await trans.commit()
            else:
                # Nothing changed: do not move the version (caches would rebuild for nothing).
                await trans.rollback()

    async def bump(self, conn: AsyncConnection) -> int:
        result = await conn.execute(
            update(store_version_t)
            .where(store_version_t.c.id == 1)
            .values(version=store_version_t.c.version + 1)
            .returning(store_version_t.c.version)
        )
        new = result.scalar_one_or_none()
        if new is None:
            raise RuntimeError("rule store not initialised: call `await StoreDatabase.start()` first")
        return int(new)



    async def version(self) -> int:
        """The store version: changes with every committed change to what a RuleBook is built from."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(store_version_t.c.version).where(store_version_t.c.id == 1))
        if value is None:
            raise RuntimeError("rule store not initialised: call `await StoreDatabase.start()` first")
        return int(value)


    async def refs(self, conn: AsyncConnection) -> Refs:
        """Known location codes and channel names, read inside the caller's transaction."""
        return Refs(
            locations=set((await conn.execute(select(locations_t.c.code))).scalars()),
            channels=set((await conn.execute(select(channels_t.c.name))).scalars()),
        )



    async def record_master(
        self, tx: Tx, changes: list[tuple[str, str, str, Any, Any]], actor: str, reason: str
    ) -> None:
        await self.audit(
            tx, master_changes_t,
            [{"entity": e, "key": k, "action": a, "before": b, "after": af} for e, k, a, b, af in changes],
            actor, reason,
        )

    async def audit(self, tx: Tx, table: Any, rows: list[dict[str, Any]], actor: str, reason: str) -> None:
        """Append history rows to `table`, each stamped with who, why, when and the store version."""
        if not rows:
            return
        stamp = {"actor": actor, "reason": reason or "", "at": tx.at, "store_version": tx.version}
        await tx.conn.execute(insert(table), [row | stamp for row in rows])

    async def apply_key_values(
        self,
        tx: Tx,
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
        target, changed = merged(existing, updates, replace)
        if not changed:
            return 0
        for chunk in chunks([k for k in changed if k in existing]):
            await tx.conn.execute(delete(table).where(table.c[key_col].in_(chunk)))
        rows = [{key_col: k, value_col: target[k]} for k in changed if k in target]
        if rows:
            await tx.conn.execute(insert(table), rows)
        before = {k: existing.get(k) for k in changed}
        after = {k: target.get(k) for k in changed}
        await self.record_master(tx, [(entity, "*", "replace" if replace else "update", before, after)], actor, reason)
        tx.changed = True
        return len(changed)




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
