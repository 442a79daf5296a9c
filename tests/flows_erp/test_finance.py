"""Shopify Payments payouts into a real Tryton: one journal entry per payout, reconciled."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from availability.flows.finance import mapping
from availability.flows.finance.reconcile import reconcile
from availability.flows.finance.store import FinanceStore
from tests.flows_erp.finance_helpers import activity, credit_note, finance_flow, month_start, post_orders, simulator

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def sim():
    server = simulator()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def finance_store(tmp_path):
    store = await FinanceStore(f"sqlite+aiosqlite:///{tmp_path}/finance.db").open()
    yield store
    await store.close()


async def _entries(erp, shop) -> list:
    return await erp.list_journal_entries(f"{shop}#payout-")


async def test_a_month_of_payouts_posts_and_reconciles_to_zero_drift(sim, erp, finance_store, order_store,
                                                                    redis_client, key_prefix, shop):
    made = activity(sim, 30, orders_per_day=1, refund_every=4)
    await post_orders(made["orders"], order_store, redis_client, key_prefix, erp, shop)
    for refund in made["refunds"]:  # what the refund flow does: one credit note per refund
        await credit_note(erp, shop, refund)
    flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop)
    polled = await flow.poll(issued_from=month_start())
    await flow.drain()

    assert polled["payouts"] == len(made["payouts"]) == 30
    counts = await finance_store.counts()
    assert counts == {"posted": 28, "reversed": 1, "scheduled": 1}, counts
    entries = await _entries(erp, shop)
    refs = [e.reference for e in entries]
    assert len(refs) == len(set(refs)) == 29 + 1  # one per payout that moved money, one reversal
    assert all(e.state == "posted" for e in entries)
    # a payout entry: charges credited to clearing, fees and the net debited, balanced
    first = await finance_store.get(f"gid://shopify/ShopifyPaymentsPayout/{made['payouts'][0]['id']}")
    entry = next(e for e in entries if e.id == first.entry_id)
    by_account = entry.balance_by_account()
    assert by_account[mapping.BANK] == Decimal(first.net) > 0
    assert by_account[mapping.FEES] > 0 and by_account[mapping.CLEARING] < 0
    assert sum(by_account.values()) == 0
    types = set(made["transactions"])
    assert {"CHARGE", "REFUND", "DISPUTE_WITHDRAWAL", "ADJUSTMENT", "RESERVED_FUNDS_WITHDRAWAL",
            "RESERVED_FUNDS_REVERSAL", "PAYOUT_FAILURE"} <= types
    assert await finance_store.transaction_count() == sum(
        1 for p in made["payouts"] if p["status"] != "SCHEDULED"
        for _ in sim.state.payments.payout(p["id"]).transaction_ids)

    for i in range(30):
        report = await reconcile(finance_store, erp, flow.payments, shop=shop, day=month_start() + dt.timedelta(days=i))
        assert report["drift"] == 0, report["mismatches"]
    assert not await finance_store.list_exceptions()


async def test_an_altered_fee_is_caught_and_routed_to_finance(sim, erp, finance_store, order_store, redis_client,
                                                              key_prefix, shop):
    made = activity(sim, 3, orders_per_day=2, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                    fail_payout_on=None)
    await post_orders(made["orders"], order_store, redis_client, key_prefix, erp, shop)
    flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop)
    await flow.poll(issued_from=month_start())
    await flow.drain()
    day = month_start()
    assert (await reconcile(finance_store, erp, flow.payments, shop=shop, day=day))["drift"] == 0

    payout = sim.state.payments.payout(made["payouts"][0]["id"])
    charge = sim.state.payments.transaction(payout.transaction_ids[0])
    sim.state.payments.alter_fee(charge.id, charge.fee + Decimal("1.00"))  # Shopify now says a dollar more
    report = await reconcile(finance_store, erp, flow.payments, shop=shop, day=day)
    kinds = {row["kind"] for row in report["mismatches"]}
    assert kinds == {"payout_net_mismatch", "erp_amount_mismatch"}, report["mismatches"]
    fee_rows = [r for r in report["mismatches"] if r["kind"] == "erp_amount_mismatch"]
    assert {r["documents"]["account"] for r in fee_rows} == {mapping.FEES, mapping.BANK}
    open_ = await finance_store.list_exceptions()
    assert {e["reason"] for e in open_} == kinds and {e["owner"] for e in open_} == {"finance"}
    assert all(f"gid://shopify/ShopifyPaymentsBalanceTransaction/{charge.id}" in e["documents"]["transactions"]
               for e in open_)
    # the other days are untouched
    assert (await reconcile(finance_store, erp, flow.payments, shop=shop, day=day + dt.timedelta(days=1)))["drift"] == 0


async def test_a_payout_whose_transactions_do_not_add_up_waits_then_posts(sim, erp, finance_store, redis_client,
                                                                          key_prefix, shop):
    made = activity(sim, 3, orders_per_day=2, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                    fail_payout_on=None)
    payments = sim.state.payments
    payout = payments.payout(made["payouts"][0]["id"])
    charge = payments.transaction(payout.transaction_ids[0])
    right = charge.fee
    payments.alter_fee(charge.id, right + Decimal("0.50"))  # a listing that disagrees with the payout
    flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop, unbalanced_exception_after=2)
    for _ in range(2):
        await flow.poll(issued_from=month_start())
        await flow.drain()
    doc = await finance_store.get(f"gid://shopify/ShopifyPaymentsPayout/{payout.id}")
    assert doc.state == "unbalanced" and doc.entry_id is None
    assert [e["reason"] for e in await finance_store.list_exceptions()] == ["payout_unbalanced"]
    assert len(await erp.find_journal_entries(mapping.payout_reference(shop, str(payout.id)))) == 0
    payments.alter_fee(charge.id, right)  # Shopify's listing is whole again
    await flow.poll(issued_from=month_start())
    await flow.drain()
    assert (await finance_store.get(doc.payout_id)).state == "posted"
    assert not await finance_store.list_exceptions()  # closed by the posting


async def test_duplicate_polls_and_racing_workers_change_nothing(sim, erp, finance_store, redis_client, key_prefix,
                                                                 shop):
    made = activity(sim, 5, orders_per_day=2, refund_every=3, fail_payout_on=1, dispute_on=None)
    flows = [finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop) for _ in range(3)]
    await flows[0].poll(issued_from=month_start())
    await asyncio.gather(*(f.drain() for f in flows))
    before = sorted((e.reference, e.id) for e in await _entries(erp, shop))
    txns = await finance_store.transaction_count()
    history = {d.payout_id: len(await finance_store.history(d.payout_id)) for d in await finance_store.documents()}
    # the same payouts seen again and again, every payout woken by hand, three workers at once
    for _ in range(3):
        await flows[1].poll(issued_from=month_start())
    await flows[0].queue.wake([d.payout_id for d in await finance_store.documents()])
    await asyncio.gather(*(f.drain() for f in flows))
    assert sorted((e.reference, e.id) for e in await _entries(erp, shop)) == before
    assert len(before) == len([p for p in made["payouts"] if p["status"] != "SCHEDULED"]) + 1  # + the reversal
    assert await finance_store.transaction_count() == txns
    assert {d.payout_id: len(await finance_store.history(d.payout_id))
            for d in await finance_store.documents()} == history


async def test_erp_down_then_back_posts_each_payout_once(sim, own_tryton, finance_store, redis_client, key_prefix,
                                                         shop):
    from adapters.erp.tryton.client import TrytonErp

    made = activity(sim, 4, orders_per_day=1, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                    fail_payout_on=None)
    erp = TrytonErp(own_tryton.url, own_tryton.login, own_tryton.password(), timeout=5)
    try:
        flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop, erp_down_exception_after=2)
        await flow.poll(issued_from=month_start())
        for _ in range(4):  # the ERP is not running yet
            await flow.run_once()
            await asyncio.sleep(0.6)
            await flow.queue.promote_due_retries()
        docs = await finance_store.documents(states=["pending"])
        assert docs and all(d.attempts >= 1 and d.reason == "erp_down" for d in docs)
        assert {e["reason"] for e in await finance_store.list_exceptions()} == {"erp_down"}
        assert {e["owner"] for e in await finance_store.list_exceptions()} == {"platform"}
        own_tryton.start()
        await flow.drain(timeout=120)
        entries = await _entries(erp, shop)
        moved = [p for p in made["payouts"] if p["status"] != "SCHEDULED"]
        assert len(entries) == len({e.reference for e in entries}) == len(moved)
        assert not await finance_store.list_exceptions()
    finally:
        await erp.aclose()


async def test_worker_killed_mid_post_leaves_one_journal_entry(sim, tryton, erp, finance_store, tmp_path,
                                                               redis_url, redis_client, key_prefix, shop):
    made = activity(sim, 3, orders_per_day=1, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                    fail_payout_on=None)
    marker = tmp_path / "posted"
    db_url = f"sqlite+aiosqlite:///{tmp_path}/finance.db"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen([sys.executable, "-m", "tests.flows_erp._finance_worker", redis_url, key_prefix, db_url,
                              tryton.url, tryton.password(), sim.base_url, shop, str(marker),
                              month_start().isoformat()], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the worker died before posting"
            assert time.monotonic() < deadline, "the worker never posted"
            await asyncio.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)  # after the ERP posted, before the flow recorded it
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    killed_ref = marker.read_text()
    # the second worker sees the first's outbox message once its lease lapses (2 s)
    flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop, lease_ms=2000)
    await asyncio.sleep(2.2)
    await flow.poll(issued_from=month_start())
    await flow.drain()
    entries = await _entries(erp, shop)
    moved = [p for p in made["payouts"] if p["status"] != "SCHEDULED"]
    assert len(entries) == len({e.reference for e in entries}) == len(moved)
    assert len(await erp.find_journal_entries(killed_ref)) == 1
    killed = next(d for d in await finance_store.documents() if mapping.payout_reference(shop, str(d.legacy_id)) == killed_ref)
    assert killed.state == "posted"
    assert any("found by reference" in (h["detail"] or "") or h["to_state"] == "posted"
               for h in await finance_store.history(killed.payout_id))


async def test_cli_posts_and_reconciles_a_day_and_exits_1_on_drift(sim, tryton, erp, order_store, redis_url,
                                                                   redis_client, key_prefix, tmp_path, shop):
    import json

    made = activity(sim, 2, orders_per_day=1, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                    fail_payout_on=None)
    await post_orders(made["orders"], order_store, redis_client, key_prefix, erp, shop)
    env = dict(os.environ, AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
               AVAILABILITY_DATA_DIR=str(tmp_path / "cli"), AVAILABILITY_ERP_URL=tryton.url,
               AVAILABILITY_ERP_PASSWORD=tryton.password(), AVAILABILITY_ERP_SHOP=shop,
               AVAILABILITY_SHOPIFY_URL=sim.base_url, AVAILABILITY_SHOPIFY_TOKEN=sim.config.access_token)
    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "availability.cli", "--log-level", "WARNING", *args], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)

    day = month_start().isoformat()
    ran = await asyncio.to_thread(cli, "flows", "finance", "run", "--once", "--since", day)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1])["states"] == {"posted": 1, "scheduled": 1}
    clean = await asyncio.to_thread(cli, "flows", "reconcile", "finance", "--day", day)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "drift: 0" in clean.stdout and "captured payments" in clean.stdout
    charge = sim.state.payments.payout(made["payouts"][0]["id"]).transaction_ids[0]
    sim.state.payments.alter_fee(charge, Decimal("9.99"))
    drifted = await asyncio.to_thread(cli, "flows", "reconcile", "finance", "--day", day, "--json")
    assert drifted.returncode == 1
    report = json.loads(drifted.stdout)
    assert report["drift"] >= 2 and {m["kind"] for m in report["mismatches"]} == {"payout_net_mismatch",
                                                                                   "erp_amount_mismatch"}
    listed = await asyncio.to_thread(cli, "flows", "finance", "exceptions", "list")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows and {r["owner"] for r in rows} == {"finance"}
    bad = await asyncio.to_thread(cli, "flows", "reconcile", "finance", "--day", "yesterday")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


async def test_a_transaction_already_posted_with_another_payout_parks_the_payout(sim, erp, finance_store,
                                                                                 redis_client, key_prefix, shop):
    from sqlalchemy import insert

    from availability.flows.finance.store import transactions

    made = activity(sim, 2, orders_per_day=1, refund_every=0, dispute_on=None, reserve_on=None, adjust_on=None,
                    fail_payout_on=None)
    first = sim.state.payments.payout(made["payouts"][0]["id"])
    txn_id = f"gid://shopify/ShopifyPaymentsBalanceTransaction/{first.transaction_ids[0]}"
    async with finance_store.engine.begin() as conn:  # as if an earlier payout had carried it
        await conn.execute(insert(transactions).values(
            transaction_id=txn_id, payout_id="gid://shopify/ShopifyPaymentsPayout/1", type="CHARGE", amount="10.00",
            fee="0.59", net="9.41", processed_at="2026-01-01T00:00:00Z"))
    flow = finance_flow(finance_store, redis_client, key_prefix, erp, sim, shop)
    await flow.poll(issued_from=month_start())
    await flow.drain()
    doc = await finance_store.get(f"gid://shopify/ShopifyPaymentsPayout/{first.id}")
    assert doc.state == "exception" and doc.entry_id is None
    [exc] = await finance_store.list_exceptions()
    assert exc["reason"] == "transaction_in_two_payouts" and exc["owner"] == "finance"
    assert exc["documents"]["posted_with"] == {txn_id: "gid://shopify/ShopifyPaymentsPayout/1"}
    assert not await erp.find_journal_entries(mapping.payout_reference(shop, str(first.id)))
