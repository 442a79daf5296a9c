"""The flows' exception queue over HTTP: list with filters, retry, resolve, replay, their
scopes and 4xx answers, the OpenAPI shapes; and the customer match report route."""

from __future__ import annotations

from availability.flows.orders.flow import OrderQueue
from availability.flows.orders.store import OrderStore
from tests.api.conftest import READER, bearer

SHOP = "retailco.myshopify.com"


async def _park(store: OrderStore, number: int, reason: str, *, state: str = "exception") -> int:
    ref = f"{SHOP}#{number}"
    await store.receive(reference=ref, shop=SHOP, topic="orders/create", payload={"order_number": number,
                        "updated_at": "2026-11-20T05:15:02-05:00"}, paid=True, cancelled=False, correlation_id="c")
    await store.transition(ref, state, detail=reason)
    return await store.open_exception(ref, reason, f"{reason} on {ref}")


async def test_people_list_retry_resolve_and_replay_exceptions(make_api, tmp_path, redis_client, key_prefix):
    async with make_api() as api:
        store = await OrderStore(api.runtime.settings.resolved_database_url()).open()
        try:
            sku = await _park(store, 1, "unknown_sku")
            loc = await _park(store, 2, "unknown_location")
            val = await _park(store, 3, "erp_validation")
            down = await _park(store, 4, "erp_down", state="received")
            done = await _park(store, 5, "edited_after_confirmation", state="confirmed")
            c = api.client

            page = (await c.get("/v1/flows/exceptions")).json()
            assert [e["id"] for e in page["exceptions"]] == [sku, loc, val, down, done]
            owners = {e["reason"]: e["owner"] for e in page["exceptions"]}
            assert owners == {"unknown_sku": "commerce", "unknown_location": "operations",
                              "erp_validation": "finance", "erp_down": "platform",
                              "edited_after_confirmation": "operations"}
            assert [e["id"] for e in (await c.get("/v1/flows/exceptions?owner=operations")).json()["exceptions"]] \
                == [loc, done]
            assert [e["id"] for e in (await c.get("/v1/flows/exceptions?reason=erp_down&flow=orders"))
                    .json()["exceptions"]] == [down]
            two = (await c.get("/v1/flows/exceptions?limit=2")).json()
            assert len(two["exceptions"]) == 2 and two["next"] == loc
            assert (await c.get(f"/v1/flows/exceptions?after={loc}&limit=1")).json()["exceptions"][0]["id"] == val

            # retry: closed, the order back to received and marked for the worker
            r = await c.post(f"/v1/flows/exceptions/{sku}/retry")
            assert r.status_code == 202 and r.json() == {"id": sku, "reference": f"{SHOP}#1", "outcome": "retrying"}
            assert (await store.get(f"{SHOP}#1")).state == "received"
            queue = OrderQueue(redis_client, key_prefix)
            assert sum(await queue.work.pending()) >= 1
            assert (await c.post(f"/v1/flows/exceptions/{sku}/retry")).status_code == 409  # closed already

            r = await c.post(f"/v1/flows/exceptions/{val}/resolve", json={"note": "credited by hand"})
            assert r.status_code == 200 and r.json()["outcome"] == "resolved"
            got = (await c.get(f"/v1/flows/exceptions/{val}")).json()
            assert got["status"] == "resolved" and got["note"] == "credited by hand" and got["resolved_by"] == "admin"
            assert (await c.post(f"/v1/flows/exceptions/{val}/resolve", json={})).status_code == 409
            assert [e["id"] for e in (await c.get("/v1/flows/exceptions?open=false")).json()["exceptions"]] == [sku, val]
            assert len((await c.get("/v1/flows/exceptions?all=true")).json()["exceptions"]) == 5

            # replay works on a resolved one too; not on an order already confirmed
            assert (await c.post(f"/v1/flows/exceptions/{val}/replay")).status_code == 202
            assert (await store.get(f"{SHOP}#3")).state == "received"
            r = await c.post(f"/v1/flows/exceptions/{done}/replay")
            assert r.status_code == 409 and r.json()["type"].endswith("not-replayable")

            # bad ids, bad bodies, bad filters: 4xx problems, never a 500
            r = await c.get("/v1/flows/exceptions/999999")
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
            assert (await c.post("/v1/flows/exceptions/999999/retry")).status_code == 404
            assert (await c.post("/v1/flows/exceptions/abc/retry")).status_code in (400, 404)
            assert (await c.post(f"/v1/flows/exceptions/{loc}/resolve", json={"nope": 1})).status_code in (400, 422)
            assert (await c.post(f"/v1/flows/exceptions/{loc}/resolve", content=b"{")).status_code == 400
            assert (await c.get("/v1/flows/exceptions?limit=0")).status_code in (400, 422)
            assert (await c.get("/v1/flows/exceptions?after=-1")).status_code in (400, 422)
            assert (await c.get("/v1/flows/exceptions?open=maybe")).status_code in (400, 422)
            assert (await c.get("/v1/flows/exceptions?reason=DROP%20TABLE")).status_code in (400, 422)

            # scopes: a reader lists, only `flows` (or admin) acts
            reader = bearer(READER)
            assert (await c.get("/v1/flows/exceptions", headers=reader)).status_code == 200
            assert (await c.post(f"/v1/flows/exceptions/{loc}/retry", headers=reader)).status_code == 403
            assert (await c.get("/v1/flows/exceptions", headers={"Authorization": ""})).status_code == 401

            report = (await c.get("/v1/flows/customers/matches")).json()
            assert report == {"sources": 0, "parties": 0, "by_rule": {}, "matches": []}

            schema = (await c.get("/schema/openapi.json")).json()
            for path in ("/v1/flows/exceptions", "/v1/flows/exceptions/{exception_id}/retry",
                         "/v1/flows/exceptions/{exception_id}/resolve", "/v1/flows/exceptions/{exception_id}/replay",
                         "/v1/flows/customers/matches"):
                assert path in schema["paths"], path
            assert "404" in schema["paths"]["/v1/flows/exceptions/{exception_id}/retry"]["post"]["responses"]
            assert "ExceptionPage" in schema["components"]["schemas"]
        finally:
            await store.close()


async def test_fulfilment_exceptions_are_listed_retried_and_resolved_on_the_desk(make_api, redis_client, key_prefix):
    """A 945 the fulfilment flow cannot post (its order unknown, more units than open) is on
    `GET /v1/flows/exceptions` with the other flows' (one id space), and retry / resolve
    over the API reach the shipment; replay stays the order flow's."""
    from availability.flows.fulfilment.flow import fulfilment_queue
    from availability.flows.fulfilment.mapping import Shipment
    from availability.flows.fulfilment.store import FulfilmentStore

    async with make_api() as api:
        url = api.runtime.settings.resolved_database_url()
        orders, fulfilment = await OrderStore(url).open(), await FulfilmentStore(url).open()
        try:
            sku = await _park(orders, 1, "unknown_sku")
            parked = {}
            for sid, reason in (("wms:ACME3PL:X-1", "unknown_order"), ("wms:ACME3PL:X-2", "line_not_open")):
                assert await fulfilment.receive(Shipment(sid, "wms", f"{SHOP}#7", (("TEE-BLK-M", 5),)), "c")
                await fulfilment.transition(sid, "exception", detail=reason)
                assert await fulfilment.open_exception(sid, f"{SHOP}#7", reason, f"{reason} of {sid}")
                parked[reason] = (await fulfilment.list_exceptions(reason=reason))[0]["id"]
            c = api.client

            page = (await c.get("/v1/flows/exceptions")).json()["exceptions"]
            assert [(e["id"], e["flow"]) for e in page] == [(sku, "orders"), (parked["unknown_order"], "fulfilment"),
                                                            (parked["line_not_open"], "fulfilment")]
            mine = (await c.get("/v1/flows/exceptions?flow=fulfilment&owner=operations")).json()["exceptions"]
            assert [(e["reference"], e["reason"], e["documents"]) for e in mine] == [
                ("wms:ACME3PL:X-1", "unknown_order", {"order": f"{SHOP}#7"}),
                ("wms:ACME3PL:X-2", "line_not_open", {"order": f"{SHOP}#7"})]

            # retry: closed, the shipment back to received, its order marked for the fulfilment worker
            r = await c.post(f"/v1/flows/exceptions/{parked['unknown_order']}/retry")
            assert r.status_code == 202 and r.json()["reference"] == "wms:ACME3PL:X-1"
            assert (await fulfilment.get("wms:ACME3PL:X-1")).state == "received"
            assert sum(await fulfilment_queue(redis_client, key_prefix).work.pending()) >= 1
            assert (await c.post(f"/v1/flows/exceptions/{parked['unknown_order']}/retry")).status_code == 409

            r = await c.post(f"/v1/flows/exceptions/{parked['line_not_open']}/resolve", json={"note": "shipped by hand"})
            assert r.status_code == 200 and r.json()["outcome"] == "resolved"
            assert await fulfilment.list_exceptions() == []
            [got] = await fulfilment.list_exceptions(status="resolved", reason="line_not_open")
            assert (got["shipment_id"], got["order"], got["note"]) == ("wms:ACME3PL:X-2", f"{SHOP}#7", "shipped by hand")
            assert (await fulfilment.get("wms:ACME3PL:X-2")).state == "exception"  # resolving posts nothing

            r = await c.post(f"/v1/flows/exceptions/{parked['line_not_open']}/replay")
            assert r.status_code == 409 and r.json()["type"].endswith("not-replayable")
            # the order flow's queue is untouched by the fulfilment rows
            assert [e["id"] for e in await orders.list_exceptions()] == [sku]
        finally:
            await orders.close()
            await fulfilment.close()
