"""Availability over HTTP: one SKU, a batch, explain; unknown channel vs unknown SKU."""

from __future__ import annotations

from tests.api.conftest import receipt

PROBLEM = "application/problem+json"


async def setup_stores(api) -> None:
    c = api.client
    for code, priority, groups in (("DC1", 1, []), ("STORE-1", 2, ["north"]), ("STORE-2", 3, ["north"])):
        kind = "warehouse" if code == "DC1" else "store"
        resp = await c.put(f"/v1/locations/{code}", json={"type": kind, "priority": priority, "groups": groups})
        assert resp.status_code == 200, resp.text
    assert (await c.put("/v1/channels/online", json={"priority": 2})).status_code == 200
    assert (await c.put("/v1/channels/pos", json={"priority": 1, "location_groups": ["north"]})).status_code == 200
    await api.seed(
        receipt("TEE", "DC1", 10),
        receipt("TEE", "STORE-1", 4),
        receipt("TEE", "STORE-2", 3),
        receipt("CAP", "STORE-2", 1),
    )


async def test_channel_total_and_breakdown_in_location_priority_order(api):
    await setup_stores(api)
    resp = await api.client.get("/v1/availability/TEE")
    assert resp.status_code == 200
    body = resp.json()
    assert (body["sku"], body["channel"], body["ats"]) == ("TEE", "online", 17)
    assert [(line["location"], line["ats"]) for line in body["locations"]] == [
        ("DC1", 10),
        ("STORE-1", 4),
        ("STORE-2", 3),
    ]
    assert body["rules_version"] == api.runtime.rules.book.version


async def test_pos_asks_for_its_store_and_nearby_stores(api):
    await setup_stores(api)
    c = api.client
    own = (await c.get("/v1/availability/TEE", params={"channel": "pos", "location": "STORE-2"})).json()
    assert own["ats"] == 3 and [line["location"] for line in own["locations"]] == ["STORE-2"]
    nearby = (await c.get("/v1/availability/TEE", params={"channel": "pos", "location_group": "north"})).json()
    assert nearby["ats"] == 7 and [line["location"] for line in nearby["locations"]] == ["STORE-1", "STORE-2"]
    # pos does not sell from the DC: nothing is offered there on that channel
    dc = (await c.get("/v1/availability/TEE", params={"channel": "pos", "location": "DC1"})).json()
    assert dc["ats"] == 0 and dc["locations"] == []


async def test_unknown_sku_is_zero_but_unknown_channel_is_404(api):
    await setup_stores(api)
    c = api.client
    resp = await c.get("/v1/availability/NEVER-SEEN")
    assert resp.status_code == 200
    assert resp.json()["ats"] == 0 and all(line["on_hand"] == 0 for line in resp.json()["locations"])

    resp = await c.get("/v1/availability/TEE", params={"channel": "marketplace"})
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert (
        problem["type"].endswith(":unknown-channel")
        and problem["status"] == 404
        and problem["channel"] == "marketplace"
    )

    resp = await c.get("/v1/availability/TEE", params={"channel": "pos", "location": "MARS"})
    assert resp.status_code == 404 and resp.json()["type"].endswith(":unknown-location")
    resp = await c.get("/v1/availability/TEE", params={"channel": "pos", "location_group": "south"})
    assert resp.status_code == 404
    # online sells from every location, listed or not yet: an unlisted code is a fair question
    resp = await c.get("/v1/availability/TEE", params={"location": "MARS"})
    assert resp.status_code == 200 and resp.json()["ats"] == 0
    resp = await c.get("/v1/availability/BAD|SKU")
    assert resp.status_code == 422 and resp.headers["content-type"].startswith(PROBLEM)


async def test_batch_answers_in_order_in_one_request(api):
    await setup_stores(api)
    resp = await api.client.post("/v1/availability/batch", json={"skus": ["CAP", "NOPE", "TEE", "CAP"]})
    assert resp.status_code == 200
    body = resp.json()
    assert [(item["sku"], item["ats"]) for item in body["items"]] == [("CAP", 1), ("NOPE", 0), ("TEE", 17)]
    pos = await api.client.post(
        "/v1/availability/batch", json={"skus": ["TEE", "CAP"], "channel": "pos", "location": "STORE-2"}
    )
    assert [(item["sku"], item["ats"]) for item in pos.json()["items"]] == [("TEE", 3), ("CAP", 1)]


async def test_batch_limits_and_malformed_input_are_4xx_problems(api):
    c = api.client
    too_many = await c.post("/v1/availability/batch", json={"skus": [f"S{i}" for i in range(501)]})
    assert too_many.status_code == 422 and "500" in too_many.json()["detail"]
    empty = await c.post("/v1/availability/batch", json={"skus": []})
    assert empty.status_code == 422
    wrong_type = await c.post("/v1/availability/batch", json={"skus": "TEE"})
    assert wrong_type.status_code == 422 and wrong_type.json()["errors"][0]["key"] == "skus"
    unknown_field = await c.post("/v1/availability/batch", json={"skus": ["A"], "chanel": "pos"})
    assert unknown_field.status_code == 422
    not_json = await c.post("/v1/availability/batch", content=b"{skus: [", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    for resp in (too_many, empty, wrong_type, unknown_field, not_json):
        assert resp.headers["content-type"].startswith(PROBLEM)
        assert {"type", "title", "status", "detail"} <= resp.json().keys()


async def test_explain_names_the_arithmetic_and_the_rules(api):
    await setup_stores(api)
    c = api.client
    safety = (await c.post("/v1/rules", json={"kind": "safety_stock", "units": 2, "location": "DC1"})).json()
    buffer = (await c.post("/v1/rules", json={"kind": "buffer", "units": 1, "channel": "online"})).json()
    resp = await c.get("/v1/availability/TEE/explain", params={"location": "DC1"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["ats"] == 7  # 10 - safety 2 = 8; online buffer 1 -> 7
    line = body["locations"][0]
    assert line["text"].startswith("DC1: on_hand 10 - safety 2")
    assert f"[rule {safety['id']} v1: location=DC1]" in line["text"]
    assert f"buffer 1 [rule {buffer['id']} v1: channel=online]" in line["text"]
    terms = {t["name"]: t for t in line["terms"]}
    assert terms["safety_stock"]["value"] == 2 and terms["safety_stock"]["rule"]["id"] == safety["id"]
    # the plain lookup agrees with the explanation
    assert (await c.get("/v1/availability/TEE", params={"location": "DC1"})).json()["ats"] == 7
