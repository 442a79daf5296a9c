"""Fixtures for the rule store tests: a SQLite file per test, and optionally PostgreSQL.

PostgreSQL tests get a database of their own (created here, dropped afterwards),
so they never see or touch anyone else's data. When the server is not reachable
they are skipped with the reason, so the suite runs on a laptop with nothing installed.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

# Let `pytest tests/rules` work from a checkout that is not pip-installed.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from availability.rules.store import RuleStore  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "AVAILABILITY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)

_pg_unreachable: str | None = None
_pg_checked = False


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None. Checked once per session."""
    global _pg_checked, _pg_unreachable
    if not _pg_checked:
        _pg_checked = True
        try:
            import asyncpg

            conn = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=3)
            await conn.close()
        except Exception as exc:  # any failure to connect means "not available here"
            safe = make_url(PG_ADMIN_URL).render_as_string(hide_password=True)
            _pg_unreachable = f"PostgreSQL not reachable at {safe}: {type(exc).__name__}: {exc}"
    return _pg_unreachable


@pytest.fixture
async def postgres_url():
    """URL of a fresh, uniquely named PostgreSQL database, dropped after the test."""
    reason = await _pg_skip_reason()
    if reason:
        pytest.skip(reason)
    import asyncpg

    name = f"availability_rules_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def sqlite_url(tmp_path):
    # A subdirectory that does not exist yet: start() must create it.
    return f"sqlite+aiosqlite:///{tmp_path}/var/rules.db"


@pytest.fixture
async def store(sqlite_url):
    s = RuleStore(sqlite_url)
    await s.start()
    yield s
    await s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request, tmp_path):
    """The same test against SQLite and (when reachable) PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/var/rules.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def any_store(any_url):
    s = RuleStore(any_url)
    await s.start()
    yield s
    await s.close()
