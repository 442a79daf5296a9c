"""Schema of the SQL store, as Alembic migrations (this package is the script location).

Every table the code defines lives in one of the `MetaData`s `target_metadata()` lists;
`versions/` holds the migrations that create and change them. The service and the CLI
call `upgrade(engine)` when they open the store (instead of `metadata.create_all`), so a
database is always at the newest revision ("head") of the code that opened it.

A database made by `create_all` before migrations existed has the tables but no
`alembic_version` row. The baseline (0001) creates only the tables that are missing, so
upgrading such a database adopts its tables as they are (the code changed no column
before migrations existed) and records the revision; nothing has to be stamped by hand.

Several processes may open one database at once: on PostgreSQL the upgrade holds an
advisory transaction lock, on SQLite a lock file beside the database (plus a lock per
event loop for stores of one process), so one process migrates and the others then find
the database at head.

Adding a table or a column: change the model, then write a migration
(`availability db revision -m "what"` autogenerates one against a migrated scratch
database; review it). tests/runtime/test_migrations.py fails when the code's metadata
and the migrated schema differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)
# Alembic narrates every step at INFO; `upgrade` logs the one line that matters
logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPT_LOCATION = Path(__file__).resolve().parent
#: any constant: the key of PostgreSQL's advisory lock taken while migrating
_PG_LOCK_KEY = 0x617661696C  # "avail"
_loop_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()


def target_metadata() -> list[MetaData]:
    """Every MetaData whose tables the migrations manage (add a new store's here)."""
    from availability.flows.customers.store import metadata as customers  # noqa: PLC0415
    from availability.flows.documents import metadata as shared  # noqa: PLC0415
    from availability.flows.finance.store import metadata as finance  # noqa: PLC0415
    from availability.flows.fulfilment.store import metadata as fulfilment  # noqa: PLC0415
    from availability.flows.orders.store import metadata as orders  # noqa: PLC0415
    from availability.flows.returns.store import metadata as returns  # noqa: PLC0415
    from availability.rules.models import Base  # noqa: PLC0415

    return [Base.metadata, orders, shared, customers, fulfilment, returns, finance]


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config  # noqa: PLC0415

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Upgrade over a (sync) connection already in a transaction; the caller commits."""
    from alembic import command  # noqa: PLC0415

    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext  # noqa: PLC0415

    return MigrationContext.configure(connection).get_current_revision()


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The code's newest revision (read once per process: the scripts ship with the code)."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _sqlite_file(engine: AsyncEngine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    db = engine.url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


@contextlib.asynccontextmanager
async def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_name(path.name + ".migrate-lock"), "a+")  # noqa: SIM115
    try:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Bring the database to `revision` (default: the code's head); returns the revision
    it is at afterwards. Safe to call from several processes at once and on every start."""
    loop = asyncio.get_running_loop()
    lock = _loop_locks.setdefault(loop, asyncio.Lock())
    sqlite_file = _sqlite_file(engine)
    async with lock, (_file_lock(sqlite_file) if sqlite_file else contextlib.nullcontext()):
        async with engine.connect() as conn:
            async with conn.begin():
                if engine.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                before = await conn.run_sync(current_revision)
                if before != head_revision() or revision != "head":
                    await conn.run_sync(upgrade_connection, revision)
                after = await conn.run_sync(current_revision)
    if before != after:
        log.info("database %s migrated from %s to %s", engine.url.render_as_string(hide_password=True),
                 before or "(none)", after)
    return after


def describe() -> dict[str, Any]:
    return {"script_location": str(SCRIPT_LOCATION), "head": head_revision()}
