"""Faults of the return-to-refund flow against the real Tryton: the ERP down then back
(refunds queue, stock is booked at once, credit notes post once it is back), and a worker
SIGKILLed between the ERP's credit-note create and its bookkeeping (one credit note)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.erp.tryton.client import TrytonErp
from availability.flows.returns.flow import WorkerConfig
from tests.flows_erp.helpers import kill_at_marker
from tests.flows_erp.returns_helpers import STORE, credit_notes, make_world

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]


async def test_erp_down_then_back_credits_each_refund_once(own_tryton, redis_client, key_prefix, order_store, shop):
    server = own_tryton.start()
    erp = TrytonErp(server.url, server.login, server.password(), timeout=5)
    try:
        w = await make_world(redis_client, key_prefix, order_store.url, erp, shop, ["SKU-0011", "SKU-0012"],
                             config=WorkerConfig(lease_ms=5000, retry_cap_s=0.5, erp_down_exception_after=2))
        order = w.order({"SKU-0011": 3, "SKU-0012": 3})
        await w.post_order(order)
        w.sim.refunds.mark_fulfilled(order["id"])
        server.stop()  # the ERP goes away; refunds keep arriving
        refunds = [w.refund(order, [(sku, 1, "RETURN", STORE)], amount="10.00") for sku in ("SKU-0011", "SKU-0012")]
        before = await w.stock("SKU-0011", "SKU-0012")
        await w.deliver()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(await w.store.list_exceptions(reason="erp_down")) < 2:
            await w.worker.run_once()
            await asyncio.sleep(0.1)
        down = await w.store.list_exceptions(reason="erp_down")
        assert len(down) == 2 and {e["owner"] for e in down} == {"platform"}
        assert {(await w.store.get(e["reference"])).state for e in down} == {"received"}
        # the goods came back whatever the ERP does: the stock is booked already
        def on_hand_gained(stock) -> dict[str, int]:
            return {sku: stock[(sku, "STORE-12")][0] - before.get((sku, "STORE-12"), (0, 0, 0))[0]
                    for sku in ("SKU-0011", "SKU-0012")}

        assert on_hand_gained(await w.stock("SKU-0011", "SKU-0012")) == {"SKU-0011": 1, "SKU-0012": 1}
        server.start()
        await w.worker.drain(timeout=120)
        assert on_hand_gained(await w.stock("SKU-0011", "SKU-0012")) == {"SKU-0011": 1, "SKU-0012": 1}  # not twice
        notes = await credit_notes(erp, shop)
        assert sorted(notes) == sorted(f"{shop}#refund-{r['id'].rsplit('/', 1)[1]}" for r in refunds)
        assert set(notes.values()) == {Decimal("-10.00")}
        assert not await w.store.list_exceptions(reason="erp_down")  # closed by the posting
    finally:
        await erp.aclose()


async def test_worker_killed_between_erp_create_and_bookkeeping_gives_one_credit_note(
        tryton, erp, redis_client, redis_url, key_prefix, order_store, shop, tmp_path):
    w = await make_world(redis_client, key_prefix, order_store.url, erp, shop, ["SKU-0013"])
    order = w.order({"SKU-0013": 3})
    await w.post_order(order)
    refunds = [w.refund(order, [("SKU-0013", 1, "NO_RESTOCK", None)], amount="10.00") for _ in range(2)]
    await w.deliver()
    marker = tmp_path / "created"
    lease_ms = 1500
    killed_on = await kill_at_marker(
        [sys.executable, "-m", "tests.flows_erp._returns_worker", redis_url, key_prefix, order_store.url, tryton.url,
         tryton.password(), str(marker), str(lease_ms)],
        marker, cwd=ROOT, timeout=120)
    # the ERP has the note, the flow never recorded it, its outbox message is still there
    assert (await w.store.get(killed_on)).erp_credit_note_id is None
    assert await erp.find_credit_note_by_reference(killed_on) is not None
    assert await w.queue.outbox.pending() >= 1
    await asyncio.sleep(lease_ms / 1000 + 0.2)
    await w.worker.drain(timeout=120)
    notes = await credit_notes(erp, shop)
    assert sorted(notes) == sorted(f"{shop}#refund-{r['id'].rsplit('/', 1)[1]}" for r in refunds)  # one each
    assert set(notes.values()) == {Decimal("-10.00")}
    assert len(await erp.list_credit_notes(f"{shop}#refund-")) == 2
    doc = await w.store.get(killed_on)
    assert doc.state == "credited" and doc.erp_credit_note_id is not None
    assert any("found by reference" in (h["detail"] or "") for h in await w.store.history(killed_on))


def test_cli_feeds_runs_and_shows_a_refund(tryton, redis_url, key_prefix, tmp_path, shop):
    import json

    from tests.flows_erp.returns_helpers import new_sim

    sim = new_sim(["SKU-0014"])
    sent: list = []
    sim.refunds.emit = sent.extend
    order, _ = sim.checkout([{"sku": "SKU-0014", "quantity": 2}], 7001)
    sim.refunds.mark_fulfilled(order["id"])
    sim.refunds.refund_create({"orderId": order["admin_graphql_api_id"], "refundLineItems": [
        {"lineItemId": order["line_items"][0]["admin_graphql_api_id"], "quantity": 1, "restockType": "RETURN",
         "locationId": "gid://shopify/Location/7002"}], "transactions": [
        {"orderId": order["admin_graphql_api_id"], "amount": "10.00", "gateway": "manual", "kind": "REFUND"}]})
    refund = next(p for t, p in sent if t == "refunds/create")
    (tmp_path / "order.json").write_text(json.dumps(order))
    (tmp_path / "refund.json").write_text(json.dumps(refund))
    shops = [{"name": "cli", "shop_domain": shop, "locations": {"DC1": "gid://shopify/Location/7001",
                                                               "STORE-12": "gid://shopify/Location/7002"},
              "default_location": "DC1"}]
    env = dict(os.environ, AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
               AVAILABILITY_DATA_DIR=str(tmp_path), AVAILABILITY_ERP_URL=tryton.url,
               AVAILABILITY_ERP_PASSWORD=tryton.password(), AVAILABILITY_ERP_SHOP=shop,
               AVAILABILITY_SHOPIFY_SHOPS=json.dumps(shops))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "flows", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)

    assert cli("orders", "feed", "--topic", "orders/create", str(tmp_path / "order.json")).returncode == 0
    assert cli("orders", "run", "--once").returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": 1}))  # names no order: rejected at intake, nothing queued
    fed = cli("returns", "feed", "--topic", "refunds/create", "--webhook-id", "w1", str(tmp_path / "refund.json"),
              str(bad))
    assert fed.returncode == 1, fed.stderr
    good, rejected = (json.loads(line) for line in fed.stdout.splitlines())
    assert (good["outcome"], rejected["outcome"]) == ("queued", "rejected")
    ran = cli("returns", "run", "--once")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == {"credited": 1}
    shown = json.loads(cli("returns", "show", good["key"]).stdout)
    assert shown["document"]["state"] == "credited" and shown["document"]["total_shop"] == "10.0000"
    assert [h["to_state"] for h in shown["history"]][-1] == "credited"
