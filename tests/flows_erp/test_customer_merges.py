"""Shopify customer merges reach the real Tryton: the merged-away customer's party is
replaced by the kept one with Tryton's own party replacement (inactive, `replaced_by` the
kept party, its sales moved over), exactly once: a second delivery of the merge changes
nothing, and a worker that died after the ERP replaced the party leaves no second
replacement behind."""

from __future__ import annotations

import uuid

import pytest

from availability.flows.customers.flow import CustomerIntake, CustomerQueue, CustomerWorker
from availability.flows.customers.identity import CustomerIdentity, customer_source, match_report
from availability.flows.customers.store import CustomerStore
from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker
from tests.flows_erp.helpers import order

pytestmark = pytest.mark.timeout(600)

MERGE = {"resultingCustomerId": "gid://shopify/Customer/802", "customerOneId": "gid://shopify/Customer/801",
         "customerTwoId": "gid://shopify/Customer/802"}


def _customer(cid: int, email: str, first: str, last: str, street: str) -> dict:
    return {"id": cid, "admin_graphql_api_id": f"gid://shopify/Customer/{cid}", "email": email, "first_name": first,
            "last_name": last, "updated_at": "2026-11-20T05:15:02-05:00",
            "default_address": {"address1": street, "city": "Boston", "zip": "02110", "country_code": "US"}}


class Shop:
    def __init__(self, erp, order_store, redis_client, key_prefix, shop):
        self.shop = shop
        self.store = CustomerStore(order_store.engine)
        self.queue = CustomerQueue(redis_client, key_prefix)
        self.intake = CustomerIntake(self.store, self.queue, shop=shop)
        self.identity = CustomerIdentity(self.store, erp)
        self.worker = CustomerWorker(self.identity, self.queue)
        oqueue = OrderQueue(redis_client, key_prefix)
        self.orders = OrderIntake(order_store, oqueue, shop=shop)
        self.order_worker = OrderWorker(order_store, oqueue, erp, identity=self.identity)

    async def party(self, cid: int) -> int:
        return (await self.store.get(customer_source(self.shop, str(cid)))).party_id

    async def post(self, number: int, customer: dict | None, email: str) -> None:
        body = order(number, lines=[("TEE-BLK-M", 1, "10.00")], email=email)
        if customer is None:
            body.pop("customer", None)  # a guest checkout
        else:
            body["customer"] = customer
        await self.orders.enqueue_order_webhook("orders/create", body)
        await self.order_worker.drain(timeout=120)


async def _parties(erp, ids: list[int]) -> dict[int, dict]:
    rows = await erp.call("model.party.party.read", ids, ["id", "active", "replaced_by", "write_date"])
    return {r["id"]: r for r in rows}


async def _sale_parties(erp, reference: str) -> tuple[int, int, int]:
    sale = await erp.find_sale_by_reference(reference)
    row = (await erp.call("model.sale.sale.read", [sale.id], ["party", "invoice_party", "shipment_party"]))[0]
    return row["party"], row["invoice_party"] or row["party"], row["shipment_party"] or row["party"]


@pytest.fixture
def tagged():
    return uuid.uuid4().hex[:8]


async def test_a_merge_replaces_the_merged_away_party_in_tryton_once(erp, order_store, redis_client, key_prefix,
                                                                     shop, tagged):
    flows = Shop(erp, order_store, redis_client, key_prefix, shop)
    one = _customer(801, f"ann.one.{tagged}@example.com", "Ann", "One", "1 Harbor St")
    two = _customer(802, f"ann.two.{tagged}@example.com", "Ann", "Other", "2 Wharf St")  # another name
    for body in (one, two):
        await flows.intake.enqueue_customer_webhook("customers/create", body)
    await flows.worker.drain()
    lost, kept = await flows.party(801), await flows.party(802)
    assert lost != kept
    await flows.post(8101, one, one["email"])  # a sale of the customer about to be merged away
    assert await _sale_parties(erp, f"{shop}#8101") == (lost, lost, lost)

    out = await flows.intake.enqueue_customer_webhook("customers/merge", MERGE)
    assert out["merged"] == [customer_source(shop, "801")]
    await flows.worker.drain()

    parties = await _parties(erp, [lost, kept])
    # (Tryton's booleans come back as 0 / 1 on SQLite)
    assert not parties[lost]["active"] and parties[lost]["replaced_by"] == kept
    assert parties[kept]["active"] and not parties[kept]["replaced_by"]
    assert await _sale_parties(erp, f"{shop}#8101") == (kept, kept, kept)  # Tryton moved the sale
    # its contact mechanisms moved over too, deactivated (the kept party's own stay as they were)
    mechanisms = await erp.call("model.party.contact_mechanism.search_read",
                                [["value", "=", one["email"]], ["active", "in", [True, False]]], 0, None, None,
                                ["party", "active"])
    assert [(m["party"], bool(m["active"])) for m in mechanisms] == [(kept, False)]
    # the identity map follows: the merged-away customer, and a guest order with its e-mail
    assert await flows.party(801) == kept
    assert (await flows.store.key(f"email:{one['email']}"))["party_id"] == kept
    await flows.post(8102, None, one["email"])
    assert (await _sale_parties(erp, f"{shop}#8102"))[0] == kept
    report = await match_report(flows.store, shop=shop)
    why = next(m for m in report["matches"] if m["source"] == customer_source(shop, "801"))["why"]
    assert f"ERP party {lost} replaced by {kept}" in why

    # Shopify delivers the merge again (another webhook id): nothing changes in the ERP
    before = await _parties(erp, [lost, kept])
    again = await flows.intake.enqueue_customer_webhook("customers/merge", MERGE,
                                                        {"X-Shopify-Webhook-Id": f"again-{tagged}"})
    assert again["outcome"] == "merged"
    await flows.worker.drain()
    assert await _parties(erp, [lost, kept]) == before
    assert await erp.replace_party(lost, kept) is False
    assert await _sale_parties(erp, f"{shop}#8101") == (kept, kept, kept)


async def test_a_worker_that_died_after_the_erp_replaced_the_party_replaces_nothing_twice(
        erp, order_store, redis_client, key_prefix, shop, tagged):
    flows = Shop(erp, order_store, redis_client, key_prefix, shop)
    one = _customer(801, f"bo.one.{tagged}@example.com", "Bo", "One", "1 Harbor St")
    two = _customer(802, f"bo.two.{tagged}@example.com", "Bo", "Two", "2 Wharf St")
    for body in (one, two):
        await flows.intake.enqueue_customer_webhook("customers/create", body)
    await flows.worker.drain()
    lost, kept = await flows.party(801), await flows.party(802)
    await flows.intake.enqueue_customer_webhook("customers/merge", MERGE)
    survivor = await flows.store.get(customer_source(shop, "802"))
    assert survivor.state == "received"  # the replacement is due: durable in SQL, not only in Redis
    # a worker made the ERP call and died before its bookkeeping
    assert await erp.replace_party(lost, kept) is True
    stamp = (await _parties(erp, [lost]))[lost]["write_date"]
    await flows.worker.drain()
    assert (await _parties(erp, [lost]))[lost]["write_date"] == stamp
    assert await flows.party(801) == kept
    assert (await flows.store.get(customer_source(shop, "802"))).state == "matched"
    why = next(m for m in (await match_report(flows.store, shop=shop))["matches"]
               if m["source"] == customer_source(shop, "801"))["why"]
    assert f"ERP party {lost} already replaced by {kept}" in why
