"""Faults against the real Tryton: ERP down then back, a worker SIGKILLed mid-post, and
reconciliation before and after a sale is deleted behind the flow's back."""

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
from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker, WorkerConfig
from availability.flows.orders.reconcile import reconcile
from tests.flows_erp.helpers import expected_total, kill_at_marker, order

# generous: the first test of a run may build the Tryton database (minutes on a busy machine)
pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]


async def test_erp_down_then_back_posts_each_order_once(own_tryton, redis_client, key_prefix, order_store, shop):
    server = own_tryton.start()
    erp = TrytonErp(server.url, server.login, server.password(), timeout=5)
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    worker = OrderWorker(order_store, queue, erp, config=WorkerConfig(lease_ms=5000, retry_cap_s=0.5,
                                                                      erp_down_exception_after=2))
    try:
        bodies = [order(n, lines=[("SKU-0008", n - 8000, "4.00")]) for n in range(8001, 8006)]
        await intake.enqueue_order_webhook("orders/create", bodies[0])
        await worker.drain()
        server.stop()  # the ERP goes away; orders keep arriving
        for body in bodies[1:]:
            await intake.enqueue_order_webhook("orders/create", body)
            await intake.enqueue_order_webhook("orders/paid", body)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await worker.run_once()
            if len([e for e in await order_store.list_exceptions(reason="erp_down")]) == 4:
                break
            await asyncio.sleep(0.1)
        down = await order_store.list_exceptions(reason="erp_down")
        assert sorted(e["reference"] for e in down) == sorted(f"{shop}#{n}" for n in range(8002, 8006))
        assert {(await order_store.get(e["reference"])).state for e in down} == {"received"}
        server.start()  # back, same port
        await worker.drain(timeout=60)
        sales = await erp.list_sales(f"{shop}#")
        assert sorted(s.reference for s in sales) == sorted(f"{shop}#{n}" for n in range(8001, 8006))
        assert all(s.state == "processing" for s in sales)
        assert not await order_store.list_exceptions(reason="erp_down")  # closed by the posting
        report = await reconcile(order_store, erp, shop=shop)
        assert report["drift"] == 0 and report["orders_checked"] == 5
    finally:
        await erp.aclose()


@pytest.mark.parametrize("killed_after", ["create_sales", "confirm_sales"])
async def test_worker_killed_mid_batch_gives_one_sale_per_order(
        tryton, erp, redis_client, redis_url, key_prefix, order_store, shop, tmp_path, killed_after):
    """SIGKILLed right after the batch's ERP create (nothing recorded), or after its confirm
    (recorded as posted, not as confirmed): the survivor looks the batch up by reference
    and ends with one sale per order, each confirmed once."""
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    bodies = {n: order(n, lines=[("SKU-0009", 1, "6.00"), ("SKU-0010", 2, "1.50")]) for n in range(9001, 9004)}
    for body in bodies.values():
        await intake.enqueue_order_webhook("orders/create", body)
    marker = tmp_path / "created"
    lease_ms = 1500
    killed_on = await kill_at_marker(
        [sys.executable, "-m", "tests.flows_erp._worker", redis_url, key_prefix, order_store.url, tryton.url,
         tryton.password(), str(marker), str(lease_ms), killed_after],
        marker, cwd=ROOT, timeout=60)
    before = {s.reference: s for s in await erp.list_sales(f"{shop}#")}
    assert sorted(before) == sorted(f"{shop}#{n}" for n in bodies)  # the whole batch in one create
    killed_doc = await order_store.get(killed_on)
    if killed_after == "create_sales":
        # the ERP has the sales, the flow never recorded them, their outbox messages are still there
        assert killed_doc.erp_sale_id is None and killed_doc.state == "received"
        assert {s.state for s in before.values()} == {"quotation"}
    else:
        assert killed_doc.erp_sale_id == before[killed_on].id and killed_doc.state == "posted"
        assert {s.state for s in before.values()} == {"processing"}
    assert await queue.outbox.pending() == len(bodies)
    await asyncio.sleep(lease_ms / 1000 + 0.2)
    survivor = OrderWorker(order_store, queue, erp, config=WorkerConfig(lease_ms=lease_ms))
    await survivor.drain(timeout=60)
    sales = await erp.list_sales(f"{shop}#")
    assert sorted(s.reference for s in sales) == sorted(f"{shop}#{n}" for n in bodies)  # one each
    assert {s.id for s in sales} == {s.id for s in before.values()}  # the same sales, adopted
    for sale in sales:
        assert sale.state == "processing"
        assert sale.total == expected_total(bodies[int(sale.reference.rsplit("#", 1)[1])]) == Decimal("9.00")
    doc = await order_store.get(killed_on)
    assert doc.state == "confirmed" and doc.erp_sale_id == before[killed_on].id
    if killed_after == "create_sales":
        assert any("found by reference" in (h["detail"] or "") for h in await order_store.history(killed_on))


async def test_reconcile_reports_a_sale_deleted_behind_the_flows_back(redis_client, key_prefix, order_store, erp,
                                                                      shop):
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    worker = OrderWorker(order_store, queue, erp, config=WorkerConfig(lease_ms=5000))
    await intake.enqueue_order_webhook("orders/create", order(9501, lines=[("SKU-0011", 1, "2.00")], paid=False))
    await intake.enqueue_order_webhook("orders/create", order(9502, lines=[("SKU-0011", 2, "2.00")]))
    await worker.drain()
    clean = await reconcile(order_store, erp, shop=shop)
    assert clean["drift"] == 0 and clean["orders_checked"] == 2
    victim = await erp.find_sale_by_reference(f"{shop}#9501")
    await erp.delete_sale(victim.id)
    report = await reconcile(order_store, erp, shop=shop)
    assert report["drift"] == 1 and [r["reference"] for r in report["missing"]] == [f"{shop}#9501"]


def test_cli_feeds_orders_and_lists_exceptions(tryton, redis_url, key_prefix, tmp_path, shop):
    import json

    env = dict(os.environ, AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
               AVAILABILITY_DATA_DIR=str(tmp_path), AVAILABILITY_ERP_URL=tryton.url,
               AVAILABILITY_ERP_PASSWORD=tryton.password(), AVAILABILITY_ERP_SHOP=shop)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(order(9601, lines=[("SKU-0012", 1, "3.00")])))
    bad.write_text(json.dumps(order(9602, lines=[("NO-SUCH-SKU", 1, "3.00")])))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "availability.cli", "--log-level", "WARNING", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)

    fed = cli("flows", "orders", "feed", "--topic", "orders/create", str(good), str(bad))
    assert fed.returncode == 0, fed.stderr
    assert [json.loads(line)["outcome"] for line in fed.stdout.splitlines()] == ["queued", "queued"]
    ran = cli("flows", "orders", "run", "--once")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == {"confirmed": 1, "exception": 1}
    listed = cli("flows", "exceptions", "list")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["reference"], r["reason"]) for r in rows] == [(f"{shop}#9602", "unknown_sku")]
    resolved = cli("flows", "exceptions", "resolve", str(rows[0]["id"]), "--note", "SKU retired")
    assert resolved.returncode == 0 and cli("flows", "exceptions", "list").stdout == ""
    rec = cli("flows", "reconcile", "orders")
    assert rec.returncode == 0, rec.stdout + rec.stderr


def test_cli_runs_the_embedded_tryton_when_no_erp_is_configured(erp_template, redis_url, key_prefix, tmp_path):
    import json

    from tests.flows_erp.conftest import copy_home

    copy_home(erp_template, tmp_path)  # what `availability erp init` leaves under the data dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_ERP")}
    env.update(AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
               AVAILABILITY_DATA_DIR=str(tmp_path), AVAILABILITY_ERP_SHOP="embedded-shop")
    body = tmp_path / "order.json"
    body.write_text(json.dumps(order(9701, lines=[("SKU-0013", 1, "3.00")])))
    base = [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "flows", "orders"]
    fed = subprocess.run([*base, "feed", "--topic", "orders/create", str(body)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert fed.returncode == 0, fed.stderr
    ran = subprocess.run([*base, "run", "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == {"confirmed": 1}


class SlowProxy:
    """A loopback TCP proxy in front of Tryton that holds the answer to every request
    naming `slow_method` for `delay` seconds: the request reaches the ERP (and commits
    there) but the flow's client times out first."""

    def __init__(self, port: int, slow_method: bytes, delay: float) -> None:
        self.target = port
        self.slow_method = slow_method
        self.delay = delay
        self.enabled = False
        self.server = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        slow_answer = asyncio.Event()

        async def pipe(src, dst, upstream: bool) -> None:
            try:
                while data := await src.read(65536):
                    if upstream and self.enabled and self.slow_method in data:
                        slow_answer.set()
                    if not upstream and slow_answer.is_set():
                        slow_answer.clear()
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    async def stop(self) -> None:
        self.server.close()


async def test_a_slow_erp_that_commits_after_the_client_gave_up_still_makes_one_sale(
        tryton, erp, redis_client, key_prefix, order_store, shop):
    proxy = SlowProxy(tryton.port, b"model.sale.sale.create", delay=2.0)
    base = await proxy.start()
    slow_erp = TrytonErp(f"{base}/availability/", tryton.login, tryton.password(), timeout=1.0)
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    worker = OrderWorker(order_store, queue, slow_erp, config=WorkerConfig(lease_ms=5000, retry_cap_s=0.3))
    try:
        await intake.enqueue_order_webhook("orders/create", order(9801, lines=[("SKU-0014", 2, "5.00")]))
        proxy.enabled = True  # the create's answer arrives after the client's 1 s timeout
        await worker.run_once()
        doc = await order_store.get(f"{shop}#9801")
        assert doc.state == "received" and doc.reason == "erp_down" and doc.erp_sale_id is None
        await asyncio.sleep(1.5)
        assert await erp.find_sale_by_reference(f"{shop}#9801") is not None  # it committed all the same
        await worker.drain(timeout=60)  # still slow on creates: the retry must not create again
        sales = await erp.list_sales(f"{shop}#")
        assert [s.reference for s in sales] == [f"{shop}#9801"]
        assert sales[0].total == Decimal("10.00")
        # The 1 s client timeout covers the confirm too: on a loaded machine Tryton's confirm
        # (shipment and invoice) can outlast it, commit all the same, and process the sale a
        # moment after the retry adopted it. One sale is the property; processing follows.
        deadline = asyncio.get_running_loop().time() + 30
        while sales[0].state != "processing" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            sales = await erp.list_sales(f"{shop}#")
        assert [s.reference for s in sales] == [f"{shop}#9801"] and sales[0].state == "processing"
        assert (await order_store.get(f"{shop}#9801")).state == "confirmed"
    finally:
        await slow_erp.aclose()
        await proxy.stop()
