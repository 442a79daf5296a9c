"""Customer identity against the real Tryton: the matching rules, one party per e-mail
under racing webhooks, Shopify merges, guests, the order flow's parties, the report."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from adapters.erp.port import PartyRef
from adapters.erp.tryton.client import TrytonErp
from availability.flows.customers.flow import CustomerIntake, CustomerQueue, CustomerWorker, InvalidCustomer
from availability.flows.customers.identity import CustomerIdentity, customer_source, match_report, render_report
from availability.flows.customers.store import CustomerStore
from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker
from tests.flows_erp.helpers import order

pytestmark = pytest.mark.timeout(600)


def _customer(cid: int, email: str | None, *, phone: str | None = None, first: str = "Jane", last: str = "Doe",
              address: dict | None = None, updated: str = "2026-11-20T05:15:02-05:00") -> dict:
    return {"id": cid, "admin_graphql_api_id": f"gid://shopify/Customer/{cid}", "email": email, "phone": phone,
            "first_name": first, "last_name": last, "updated_at": updated,
            "default_address": address or {"address1": "12 Main Street", "city": "Montreal", "zip": "H2X 1Y4",
                                           "country_code": "CA"}}


async def _parties_with_email(erp: TrytonErp, email: str) -> set[int]:
    rows = await erp.call("model.party.contact_mechanism.search_read", [["type", "=", "email"],
                                                                        ["value", "=", email]], 0, None, None,
                          ["party"])
    return {r["party"] for r in rows}


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:8]


@pytest.fixture
def customer_store(order_store):
    return CustomerStore(order_store.engine)


async def test_rules_in_order_email_then_phone_then_name_and_address(erp, customer_store, shop, tag):
    ident = CustomerIdentity(customer_store, erp, default_region="CA")
    jane = _customer(1, f"jane.{tag}@example.com", phone="(514) 555-0123")
    first = await ident.resolve(customer_source(shop, "1"), _person(jane), shop=shop, payload=jane)
    assert first.rule == "new"
    # same e-mail, other case and spaces: same party, confidence 1
    by_email = await ident.party_for_order(shop, f"{shop}#1", {"email": f"  JANE.{tag}@Example.COM ",
                                                               "billing_address": {"name": "J"}})
    assert by_email == first.party_id
    # another e-mail, the same phone spelled differently
    by_phone = await ident.resolve(f"order:{shop}#2", _person({"email": f"other.{tag}@example.com",
                                                               "phone": "+1 514-555-0123"}), shop=shop, payload=None)
    assert (by_phone.party_id, by_phone.rule, by_phone.confidence) == (first.party_id, "phone", 0.9)
    # no e-mail, no phone: same name and address, written another way
    addr = {"address1": "12 main st.", "city": "Montréal", "zip": "h2x1y4", "country_code": "CA"}
    by_addr = await ident.resolve(f"order:{shop}#3", _person({"first_name": "JANE", "last_name": "doe",
                                                              "default_address": addr}), shop=shop, payload=None)
    assert (by_addr.party_id, by_addr.rule) == (first.party_id, "name_address")
    # nobody like that: a party of its own
    stranger = await ident.resolve(f"order:{shop}#4", _person(_customer(9, f"zed.{tag}@example.com", first="Zed",
                                                                        address={"address1": "1 Elm"})),
                                   shop=shop, payload=None)
    assert stranger.rule == "new" and stranger.party_id != first.party_id
    # the ERP has one party with Jane's e-mail, and it learned her other e-mail from the phone match
    assert await _parties_with_email(erp, f"jane.{tag}@example.com") == {first.party_id}
    assert await _parties_with_email(erp, f"other.{tag}@example.com") == {first.party_id}
    report = await match_report(customer_store, shop=shop)
    why = {m["source"]: m for m in report["matches"]}
    assert why[f"order:{shop}#2"]["rule"] == "phone" and "+15145550123" in why[f"order:{shop}#2"]["why"]
    assert customer_source(shop, "1") in why[f"order:{shop}#3"]["same_party_as"]
    assert "name_address" in render_report(report)


def _person(customer: dict):
    from availability.flows.customers.matching import person_from_customer

    return person_from_customer(customer)


async def test_racing_webhooks_for_one_email_make_one_party(tryton, erp, order_store, redis_client, key_prefix,
                                                            shop, tag):
    email = f"race.{tag}@example.com"
    queue = CustomerQueue(redis_client, key_prefix)
    clients = [TrytonErp(tryton.url, tryton.login, tryton.password()) for _ in range(4)]
    # four workers, each with its own connection pool to the identity map (as processes would have)
    from sqlalchemy.ext.asyncio import create_async_engine

    engines = [create_async_engine(order_store.url, connect_args={"timeout": 30}) for _ in range(4)]
    try:
        intake = CustomerIntake(CustomerStore(engines[0]), queue, shop=shop)
        for cid in range(100, 108):  # eight Shopify customers (guest checkouts turned accounts) share the e-mail
            await intake.enqueue_customer_webhook("customers/create", _customer(cid, email.upper() if cid % 2 else email))
        workers = [CustomerWorker(CustomerIdentity(CustomerStore(e), c), queue, batch=2)
                   for e, c in zip(engines, clients)]
        orders = [CustomerIdentity(CustomerStore(e), c).party_for_order(shop, f"{shop}#{n}", {"email": email})
                  for n, (e, c) in enumerate(zip(engines, clients))]
        results = await asyncio.gather(*(w.drain(timeout=120) for w in workers), *orders)
        parties = await _parties_with_email(erp, email)
        assert len(parties) == 1
        assert set(results[len(workers):]) == parties
        report = await match_report(CustomerStore(engines[0]), shop=shop)
        assert {m["party_id"] for m in report["matches"]} == parties and report["sources"] == 12
    finally:
        for c in clients:
            await c.aclose()
        for e in engines:
            await e.dispose()


async def test_merges_follow_the_resulting_customer(erp, customer_store, redis_client, key_prefix, shop, tag):
    queue = CustomerQueue(redis_client, key_prefix)
    intake = CustomerIntake(customer_store, queue, shop=shop)
    ident = CustomerIdentity(customer_store, erp)
    worker = CustomerWorker(ident, queue)
    one = _customer(201, f"one.{tag}@example.com", first="Ann", address={"address1": "1 A St", "zip": "10001"})
    two = _customer(202, f"two.{tag}@example.com", first="Ann", last="Other", address={"address1": "2 B St",
                                                                                        "zip": "10002"})
    await intake.enqueue_customer_webhook("customers/create", one)
    await intake.enqueue_customer_webhook("customers/create", two)
    await worker.drain()
    p1 = (await customer_store.get(customer_source(shop, "201"))).party_id
    p2 = (await customer_store.get(customer_source(shop, "202"))).party_id
    assert p1 != p2
    out = await intake.enqueue_customer_webhook("customers/merge", {
        "resultingCustomerId": "gid://shopify/Customer/202", "customerOneId": "gid://shopify/Customer/201",
        "customerTwoId": "gid://shopify/Customer/202"})
    assert out["merged"] == [customer_source(shop, "201")]
    await worker.drain()
    # a later order of the merged-away customer goes to the survivor's party
    later = {"email": one["email"], "customer": one}
    assert await ident.party_for_order(shop, f"{shop}#5001", later) == p2
    assert (await customer_store.get(customer_source(shop, "201"))).state == "merged"
    report = await match_report(customer_store, shop=shop)
    merged = next(m for m in report["matches"] if m["source"] == customer_source(shop, "201"))
    assert merged["rule"] == "merge" and merged["party_id"] == p2 and merged["merged_into"].endswith(":202")
    with pytest.raises(InvalidCustomer):
        await intake.enqueue_customer_webhook("customers/merge", {"customerOneId": "gid://shopify/Customer/1"})


async def test_a_merge_before_the_survivor_was_seen(erp, customer_store, redis_client, key_prefix, shop, tag):
    queue = CustomerQueue(redis_client, key_prefix)
    intake = CustomerIntake(customer_store, queue, shop=shop)
    ident = CustomerIdentity(customer_store, erp)
    await intake.enqueue_customer_webhook("customers/merge", {"resultingCustomerId": "302", "customerOneId": "301",
                                                              "customerTwoId": "302"})
    loser = _customer(301, f"early.{tag}@example.com")
    party = await ident.party_for_order(shop, f"{shop}#7", {"customer": loser, "email": loser["email"]})
    await intake.enqueue_customer_webhook("customers/create", _customer(302, f"kept.{tag}@example.com"))
    await CustomerWorker(ident, queue).drain()
    assert (await customer_store.get(customer_source(shop, "302"))).party_id == party
    assert (await customer_store.get(customer_source(shop, "301"))).party_id == party


async def test_guests_go_to_the_configured_party_or_become_parties(erp, customer_store, shop, tag):
    walk_in = CustomerIdentity(customer_store, erp, guest_party=f"Walk-in {tag}")
    a = await walk_in.party_for_order(shop, f"{shop}#11", {"email": f"g1.{tag}@example.com"})
    b = await walk_in.party_for_order(shop, f"{shop}#12", {"source_name": "pos"})
    assert a == b
    rows = await erp.call("model.party.party.search_read", [["name", "=", f"Walk-in {tag}"]], 0, None, None, ["id"])
    assert [r["id"] for r in rows] == [a]
    create = CustomerIdentity(customer_store, erp)
    known = await create.resolve(customer_source(shop, "401"), _person(_customer(401, f"known.{tag}@example.com")),
                                 shop=shop, payload=None)
    assert await create.party_for_order(shop, f"{shop}#13", {"email": f"known.{tag}@example.com"}) == known.party_id
    fresh = await create.party_for_order(shop, f"{shop}#14", {"email": f"new.{tag}@example.com"})
    anonymous = await create.party_for_order(shop, f"{shop}#15", {"source_name": "pos"})
    name_only = await create.party_for_order(shop, f"{shop}#16", {"billing_address": {"name": f"Only {tag}"}})
    assert len({known.party_id, fresh, anonymous, a, name_only}) == 5
    rows = await erp.call("model.party.party.read", [name_only], ["name"])
    assert rows[0]["name"] == f"Only {tag}"


async def test_a_lapsed_claim_is_taken_over_and_the_erp_party_adopted(erp, customer_store, shop, tag):
    email = f"crash.{tag}@example.com"
    # a worker claimed the e-mail, created the party in the ERP, then died before recording it
    assert await customer_store.claim(f"email:{email}", "email", by="dead", source="x", lease_ms=0)
    made = await erp.create_party(PartyRef(name="Crash", email=email))
    ident = CustomerIdentity(customer_store, erp, claim_lease_ms=1)
    await asyncio.sleep(0.01)
    match = await ident.resolve(customer_source(shop, "501"), _person(_customer(501, email)), shop=shop, payload=None)
    assert (match.party_id, match.rule) == (made, "erp_email")
    assert await _parties_with_email(erp, email) == {made}


async def test_the_order_flow_posts_each_sale_to_the_matched_party(erp, order_store, customer_store, redis_client,
                                                                   key_prefix, shop, tag):
    queue = OrderQueue(redis_client, key_prefix)
    intake = OrderIntake(order_store, queue, shop=shop)
    worker = OrderWorker(order_store, queue, erp)
    email = f"buyer.{tag}@example.com"
    first = order(6101, lines=[("TEE-BLK-M", 1, "10.00")], email=email)
    first["customer"] = _customer(601, email)
    second = order(6102, lines=[("CAP-RED", 1, "5.00")], email=email.upper())
    second.pop("customer", None)  # a guest checkout with the same e-mail
    for body in (first, second):
        await intake.enqueue_order_webhook("orders/create", body)
    await worker.drain()
    parties = set()
    for n in (6101, 6102):
        sale = await erp.find_sale_by_reference(f"{shop}#{n}")
        parties.add((await erp.call("model.sale.sale.read", [sale.id], ["party"]))[0]["party"])
    assert parties == await _parties_with_email(erp, email) and len(parties) == 1


async def test_simulator_customers_merge_and_orders_end_to_end(erp, order_store, customer_store, redis_client,
                                                               key_prefix, shop, tag):
    """Customers made in the simulator, their webhooks, a merge, then orders of both: the
    ERP ends with the survivor's party on every sale, and one party per e-mail."""
    from adapters.shopify.simulator import SimulatorConfig
    from adapters.shopify.simulator.state import SimulatorState

    sim = SimulatorState(SimulatorConfig())
    loc = sim.add_location("W")
    sim.stock(sim.add_item("TEE-BLK-M"), loc, 50)
    cqueue, oqueue = CustomerQueue(redis_client, key_prefix), OrderQueue(redis_client, key_prefix)
    customers = CustomerIntake(customer_store, cqueue, shop=shop)
    orders = OrderIntake(order_store, oqueue, shop=shop)
    ident = CustomerIdentity(customer_store, erp)
    cworker, oworker = CustomerWorker(ident, cqueue), OrderWorker(order_store, oqueue, erp, identity=ident)

    async def deliver(events):
        for topic, body in events:
            if topic.startswith("customers/"):
                await customers.enqueue_customer_webhook(topic, body)
            elif topic.startswith("orders/"):
                await orders.enqueue_order_webhook(topic, {**body, "financial_status": "paid",
                                                           "total_price": "10.00"})

    a, events = sim.create_customer({"email": f"a.{tag}@example.com", "last_name": "A",
                                     "address": {"address1": "1 Main St", "zip": "10001"}})
    await deliver(events)
    b, events = sim.create_customer({"email": f"b.{tag}@example.com", "phone": "+1 212 555 0188", "last_name": "B"})
    await deliver(events)
    await cworker.drain()
    order_a, events = sim.checkout([{"sku": "TEE-BLK-M", "quantity": 1}], customer_id=a["id"])
    await deliver(events)
    await oworker.drain()
    _, events = sim.merge_customers(a["id"], b["id"])  # b survives
    await deliver(events)
    await cworker.drain()
    # after the merge: an order quoting the merged-away customer, and one of the survivor
    late = {**order_a, "id": order_a["id"] + 1000, "order_number": order_a["order_number"] + 1000,
            "name": f"#{order_a['order_number'] + 1000}"}
    await deliver([("orders/create", late)])
    order_b, events = sim.checkout([{"sku": "TEE-BLK-M", "quantity": 1}], customer_id=b["id"])
    await deliver(events)
    await oworker.drain()
    survivor = (await customer_store.get(customer_source(shop, str(b["id"])))).party_id

    async def party_of(number):
        sale = await erp.find_sale_by_reference(f"{shop}#{number}")
        return (await erp.call("model.sale.sale.read", [sale.id], ["party"]))[0]["party"]

    assert await party_of(late["order_number"]) == survivor
    assert await party_of(order_b["order_number"]) == survivor
    assert len(await _parties_with_email(erp, f"b.{tag}@example.com")) == 1
    report = await match_report(customer_store, shop=shop)
    assert {m["rule"] for m in report["matches"]} >= {"new", "merge"}


def test_cli_feeds_matches_and_reports_customers(tryton, redis_url, key_prefix, tmp_path, shop, tag):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, AVAILABILITY_REDIS_URL=redis_url, AVAILABILITY_KEY_PREFIX=key_prefix,
               AVAILABILITY_DATA_DIR=str(tmp_path), AVAILABILITY_ERP_URL=tryton.url,
               AVAILABILITY_ERP_PASSWORD=tryton.password(), AVAILABILITY_ERP_SHOP=shop)
    files = []
    for cid, email in ((701, f"cli.{tag}@example.com"), (702, f"CLI.{tag}@example.com ")):
        path = tmp_path / f"c{cid}.json"
        path.write_text(json.dumps(_customer(cid, email)))
        files.append(str(path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"email": "no-id@example.com"}))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "flows",
                               "customers", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)

    fed = cli("feed", "--topic", "customers/create", *files, str(bad))
    assert fed.returncode == 1  # the one without an id is rejected, the others queued
    assert [json.loads(x)["outcome"] for x in fed.stdout.splitlines()] == ["queued", "queued", "rejected"]
    ran = cli("run", "--once")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(cli("report", "--json").stdout)
    assert report["sources"] == 2 and report["parties"] == 1
    assert sorted(m["rule"] for m in report["matches"]) == ["email", "new"]
    table = cli("report")
    assert table.returncode == 0 and "same e-mail" in table.stdout and "conf" in table.stdout


def test_worker_processes_racing_on_one_email_make_one_party(tryton, order_store, shop, tag):
    """Four processes, each its own connection to the identity map and to Tryton, ask for
    the party of one e-mail at once: one party, and every process gets it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import asyncio, sys\n"
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        "from adapters.erp.tryton.client import TrytonErp\n"
        "from availability.flows.customers.identity import CustomerIdentity\n"
        "from availability.flows.customers.store import CustomerStore\n"
        "async def main(db, url, pw, shop, email, n):\n"
        "    engine = create_async_engine(db, connect_args={'timeout': 30})\n"
        "    erp = TrytonErp(url, 'admin', pw)\n"
        "    ident = CustomerIdentity(CustomerStore(engine), erp)\n"
        "    party = await ident.party_for_order(shop, f'{shop}#{n}', {'email': email})\n"
        "    print(party)\n"
        "    await erp.aclose(); await engine.dispose()\n"
        "asyncio.run(main(*sys.argv[1:]))\n"
    )
    email = f"procs.{tag}@example.com"
    procs = [subprocess.Popen([sys.executable, "-c", code, order_store.url, tryton.url, tryton.password(), shop,
                               email if n % 2 else email.upper(), str(n)], cwd=root, env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        outs.append(int(out.strip()))
    assert len(set(outs)) == 1

    async def check():
        from adapters.erp.tryton.client import TrytonErp

        erp = TrytonErp(tryton.url, tryton.login, tryton.password())
        try:
            return await _parties_with_email(erp, email)
        finally:
            await erp.aclose()

    import asyncio as _asyncio

    assert _asyncio.run(check()) == set(outs)
