"""Alembic migrations are the schema: a migrated database matches the code's metadata
(so a table or column added without a migration fails here), on SQLite and PostgreSQL;
a database made by `create_all` before migrations is adopted; concurrent starts migrate once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from availability import migrations
from availability.rules.store import RuleStore

ROOT = Path(__file__).resolve().parents[2]


def _diff(conn, metadata=None) -> list:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(ctx, metadata if metadata is not None else migrations.target_metadata())


async def test_a_migrated_database_has_exactly_the_codes_schema(any_url):
    engine = create_async_engine(any_url)
    try:
        assert await migrations.upgrade(engine) == migrations.head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            # the check can fail: a table the code defines without a migration is found
            extra = MetaData()
            for md in migrations.target_metadata():
                for table in md.tables.values():
                    table.to_metadata(extra)
            Table("added_without_a_migration", extra, Column("id", Integer, primary_key=True))
            diff = await conn.run_sync(_diff, extra)
            assert [d[0] for d in diff] == ["add_table"] and diff[0][1].name == "added_without_a_migration"
        # and again at head: nothing to do, same revision
        assert await migrations.upgrade(engine) == migrations.head_revision()
    finally:
        await engine.dispose()


async def test_a_database_made_by_create_all_before_migrations_is_adopted(any_url):
    from availability.flows.orders.store import metadata as orders
    from availability.rules.models import Base

    if any_url.startswith("sqlite"):
        Path(any_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(any_url)
    try:
        async with engine.begin() as conn:  # what the code did before this change
            await conn.run_sync(Base.metadata.create_all)
            await conn.run_sync(orders.create_all)
            await conn.execute(text("INSERT INTO sku_categories (sku, category) VALUES ('TEE', 'tops')"))
    finally:
        await engine.dispose()
    store = RuleStore(any_url)
    await store.start()
    try:
        async with store.db._engine.connect() as conn:
            assert await conn.run_sync(migrations.current_revision) == migrations.head_revision()
            assert await conn.run_sync(_diff) == []
            assert "customer_keys" in await conn.run_sync(lambda c: inspect(c).get_table_names())
            assert (await conn.execute(text("SELECT category FROM sku_categories WHERE sku = 'TEE'"))).scalar() == "tops"
    finally:
        await store.close()


def test_processes_starting_at_once_migrate_one_sqlite_database_once(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    code = ("import asyncio, sys; from availability.rules.store import RuleStore\n"
            "async def main():\n    s = RuleStore(sys.argv[1]); await s.start(); await s.close()\n"
            "asyncio.run(main())")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stderr=subprocess.PIPE)
             for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path}/shared.db")
    with engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head_revision()
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert _diff(conn) == []
    engine.dispose()


@pytest.mark.parametrize("revision", ["0001"])
async def test_upgrade_stops_at_a_named_revision_and_goes_on_from_there(tmp_path, revision):
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/step.db")
    try:
        assert await migrations.upgrade(engine, revision) == revision
        async with engine.connect() as conn:
            assert "customers" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert await migrations.upgrade(engine) == migrations.head_revision()
    finally:
        await engine.dispose()


#: an exception row's columns and their bind names, for the raw INSERTs into old tables
EXCEPTION_COLUMNS = "reference, reason, owner, detail, status, created_ms, resolved_ms, resolved_by, note"
EXCEPTION_VALUES = ", ".join(f":{c.strip()}" for c in EXCEPTION_COLUMNS.split(","))


def _exception_row(reference: str, reason: str, status: str = "open") -> dict:
    return {"reference": reference, "reason": reason, "owner": "finance", "detail": f"{reason} of {reference}",
            "status": status, "created_ms": 1_700_000_000_000, "resolved_ms": None, "resolved_by": None, "note": None}


async def test_0004_moves_every_flows_exceptions_into_flow_exceptions(any_url):
    """Rows of the three old exception tables survive the move: the order flow's keep their
    ids, the returns' and finance's (with their documents) follow; downgrading moves them back."""
    if any_url.startswith("sqlite"):
        Path(any_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(any_url)
    try:
        assert await migrations.upgrade(engine, "0003") == "0003"
        async with engine.begin() as conn:
            for i, ref in ((7, "shop#1001"), (9, "shop#1002")):
                await conn.execute(text(f"INSERT INTO order_exceptions (id, flow, {EXCEPTION_COLUMNS}) VALUES (:id, 'orders', {EXCEPTION_VALUES})"),
                                   {"id": i, **_exception_row(ref, "unknown_sku")})
            await conn.execute(text(f"INSERT INTO return_exceptions (flow, {EXCEPTION_COLUMNS}) VALUES ('returns', {EXCEPTION_VALUES})"),
                               _exception_row("shop#refund-1", "amount_mismatch", status="resolved"))
            await conn.execute(text(f"INSERT INTO finance_exceptions (flow, documents, {EXCEPTION_COLUMNS}) "
                                    f"VALUES ('finance', :documents, {EXCEPTION_VALUES})"),
                               {"documents": '{"payout": "gid://shopify/ShopifyPaymentsPayout/5", "fee": "0.59"}',
                                **_exception_row("shop#payout-5", "payout_unbalanced")})
        assert await migrations.upgrade(engine) == migrations.head_revision()
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            assert "flow_exceptions" in tables and not {"order_exceptions", "return_exceptions",
                                                        "finance_exceptions"} & set(tables)
            rows = (await conn.execute(text("SELECT id, flow, reference, reason, status FROM flow_exceptions "
                                            "ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [
                (7, "orders", "shop#1001", "unknown_sku", "open"), (9, "orders", "shop#1002", "unknown_sku", "open"),
                (10, "returns", "shop#refund-1", "amount_mismatch", "resolved"),
                (11, "finance", "shop#payout-5", "payout_unbalanced", "open")]
            assert await conn.run_sync(_diff) == []
        # the stores read them through the shared queue, each its own flow's
        from availability.flows.finance.store import FinanceStore
        from availability.flows.orders.store import OrderStore
        from availability.flows.returns.store import ReturnStore

        finance, orders, returns = FinanceStore(any_url), OrderStore(any_url), ReturnStore(any_url)
        try:
            [payout] = await finance.list_exceptions()
            assert payout["documents"] == {"payout": "gid://shopify/ShopifyPaymentsPayout/5", "fee": "0.59"}
            assert [e["id"] for e in await orders.list_exceptions()] == [7, 9]
            assert await orders.get_exception(11) is None and (await finance.get_exception(11))["flow"] == "finance"
            assert [e["reference"] for e in await returns.list_exceptions(status=None)] == ["shop#refund-1"]
            # a new exception takes the next id (PostgreSQL: the sequence moved past the copied ids)
            assert await orders.open_exception("shop#1003", "unknown_sku", "no product") == 12
        finally:
            for store in (finance, orders, returns):
                await store.close()
        from alembic import command

        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(migrations.alembic_config(c), "0003"))
        async with engine.connect() as conn:
            back = {t: (await conn.execute(text(f"SELECT reference FROM {t} ORDER BY id"))).scalars().all()
                    for t in ("order_exceptions", "return_exceptions", "finance_exceptions")}
            assert back == {"order_exceptions": ["shop#1001", "shop#1002", "shop#1003"],
                            "return_exceptions": ["shop#refund-1"], "finance_exceptions": ["shop#payout-5"]}
    finally:
        await engine.dispose()


async def test_0005_moves_the_fulfilment_flows_exceptions_into_flow_exceptions(any_url):
    """Open and resolved rows of `fulfilment_exceptions` move in as flow `fulfilment` (the
    shipment as the reference, the order among the documents) after the rows already there;
    the fulfilment store reads them as before; downgrading moves them back."""
    if any_url.startswith("sqlite"):
        Path(any_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(any_url)
    try:
        assert await migrations.upgrade(engine, "0004") == "0004"
        async with engine.begin() as conn:
            await conn.execute(text(f"INSERT INTO flow_exceptions (flow, {EXCEPTION_COLUMNS}) VALUES ('orders', {EXCEPTION_VALUES})"),
                               _exception_row("shop#1001", "unknown_sku"))
            for sid, status in (("wms:ACME3PL:X-1", "open"), ("erp:41", "resolved")):
                await conn.execute(text(f"INSERT INTO fulfilment_exceptions (shipment_id, {EXCEPTION_COLUMNS}) "
                                        f"VALUES (:shipment_id, {EXCEPTION_VALUES})"),
                                   {"shipment_id": sid, **_exception_row("shop#1002", "unknown_order", status)})
        assert await migrations.upgrade(engine) == migrations.head_revision()
        async with engine.connect() as conn:
            assert "fulfilment_exceptions" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
            rows = (await conn.execute(text("SELECT id, flow, reference, status FROM flow_exceptions ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [(1, "orders", "shop#1001", "open"),
                                                (2, "fulfilment", "wms:ACME3PL:X-1", "open"),
                                                (3, "fulfilment", "erp:41", "resolved")]
            assert await conn.run_sync(_diff) == []
        from availability.flows.fulfilment.store import FulfilmentStore
        from availability.flows.orders.store import OrderStore

        fulfilment, orders = FulfilmentStore(any_url), OrderStore(any_url)
        try:
            [open_one] = await fulfilment.list_exceptions()
            assert (open_one["id"], open_one["shipment_id"], open_one["order"]) == (2, "wms:ACME3PL:X-1", "shop#1002")
            assert [e["id"] for e in await orders.list_exceptions()] == [1]
            assert await fulfilment.get_exception(1) is None
            assert await fulfilment.open_exception("wms:ACME3PL:X-2", "shop#1003", "line_not_open", "5 > 2")
        finally:
            for store in (fulfilment, orders):
                await store.close()
        from alembic import command

        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(migrations.alembic_config(c), "0004"))
        async with engine.connect() as conn:
            back = (await conn.execute(text("SELECT id, shipment_id, reference, status FROM fulfilment_exceptions "
                                            "ORDER BY id"))).all()
            assert [tuple(r) for r in back] == [(2, "wms:ACME3PL:X-1", "shop#1002", "open"),
                                                (3, "erp:41", "shop#1002", "resolved"),
                                                (4, "wms:ACME3PL:X-2", "shop#1003", "open")]
            left = (await conn.execute(text("SELECT flow FROM flow_exceptions"))).scalars().all()
            assert left == ["orders"]
    finally:
        await engine.dispose()
