"""Rules over HTTP: CRUD with versions and history, stale versions, rollback, preview numbers
checked by hand, and (SKU, location) pairs marked dirty after a change."""

from __future__ import annotations

from tests.api.conftest import PLANNER, bearer, receipt

PROBLEM = "application/problem+json"


async def test_rule_crud_versions_history_and_audit(api):
    c = api.client
    created = await c.post(
        "/v1/rules",
        json={"kind": "buffer", "units": 2, "channel": "online", "reason": "peak"},
        headers=bearer(PLANNER),
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["version"] == 1 and rule["units"] == 2
    assert created.headers["etag"] == '"1"' and created.headers["location"] == f"/v1/rules/{rule['id']}"

    got = await c.get(f"/v1/rules/{rule['id']}")
    assert got.json() == rule and got.headers["etag"] == '"1"'

    updated = await c.put(
        f"/v1/rules/{rule['id']}", json={"units": 3}, headers={"If-Match": '"1"', "X-Change-Reason": "more"}
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2 and updated.json()["units"] == 3
    assert updated.json()["channel"] == "online"  # fields not sent are kept

    patched = await c.patch(f"/v1/rules/{rule['id']}", json={"note": "flash sale", "expected_version": 2})
    assert patched.status_code == 200 and patched.json()["version"] == 3

    listed = await c.get("/v1/rules", params={"kind": "buffer"})
    assert [r["id"] for r in listed.json()] == [rule["id"]]
    assert (await c.get("/v1/rules", params={"kind": "nonsense"})).status_code == 422

    history = (await c.get(f"/v1/rules/{rule['id']}/history")).json()
    assert [(h["version"], h["action"]) for h in history] == [(1, "create"), (2, "update"), (3, "update")]
    assert history[0]["actor"] == "planner-ann" and history[0]["reason"] == "peak"
    assert history[1]["actor"] == "admin" and history[1]["reason"] == "more"
    assert history[1]["before"]["units"] == 2 and history[1]["after"]["units"] == 3

    rolled = await c.post(f"/v1/rules/{rule['id']}/rollback", json={"to_version": 1, "reason": "undo"})
    assert rolled.status_code == 200 and rolled.json()["version"] == 4 and rolled.json()["units"] == 2

    deleted = await c.delete(f"/v1/rules/{rule['id']}", headers={"If-Match": '"4"'})
    assert deleted.status_code == 204
    gone = await c.get(f"/v1/rules/{rule['id']}")
    assert gone.status_code == 404 and gone.headers["content-type"].startswith(PROBLEM)
    assert len((await c.get("/v1/rules", params={"include_deleted": "true"})).json()) == 1
    assert (await c.get("/v1/rules/999/history")).status_code == 404


async def test_stale_version_is_409_and_writes_nothing(api):
    c = api.client
    rule = (await c.post("/v1/rules", json={"kind": "safety_stock", "units": 1})).json()
    assert (await c.put(f"/v1/rules/{rule['id']}", json={"units": 2, "expected_version": 1})).status_code == 200
    stale = await c.put(f"/v1/rules/{rule['id']}", json={"units": 9}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    problem = stale.json()
    assert problem["type"] == "urn:availability:problem:stale-rule-version"
    assert (problem["current_version"], problem["expected_version"]) == (2, 1)
    assert (await c.get(f"/v1/rules/{rule['id']}")).json()["units"] == 2
    assert (await c.delete(f"/v1/rules/{rule['id']}", params={"expected_version": 1})).status_code == 409
    disagree = await c.put(
        f"/v1/rules/{rule['id']}", json={"units": 3, "expected_version": 2}, headers={"If-Match": '"1"'}
    )
    assert disagree.status_code == 409  # two versions cannot both be current: one is stale
    assert (
        await c.put(f"/v1/rules/{rule['id']}", json={"units": 3}, headers={"If-Match": "banana"})
    ).status_code == 422


async def test_invalid_rules_are_422_or_404_problems(api):
    c = api.client
    cases = [
        ({"kind": "buffer", "units": 1}, 422),  # a buffer needs a channel
        ({"kind": "nonsense"}, 422),
        ({"units": 1}, 422),
        ({"kind": "safety_stock", "units": -1}, 422),
        ({"kind": "buffer", "percent": 150, "channel": "online"}, 422),
        ({"kind": "safety_stock", "units": 1, "skus": "A"}, 422),
        ({"kind": "safety_stock", "units": 1, "location": "NOWHERE"}, 404),
        ({"kind": "buffer", "units": 1, "channel": "b2b"}, 404),
    ]
    for body, status in cases:
        resp = await c.post("/v1/rules", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)
    assert (await c.put("/v1/rules/12345", json={"units": 1})).status_code == 404


async def stores_and_stock(api) -> None:
    c = api.client
    await c.put("/v1/locations/DC1", json={"priority": 1})
    await c.put("/v1/locations/STORE-1", json={"type": "store", "priority": 2})
    await c.put("/v1/channels/online", json={"priority": 2})
    await c.put("/v1/channels/pos", json={"priority": 1, "locations": ["STORE-1"]})
    await api.seed(
        receipt("A", "DC1", 10), receipt("A", "STORE-1", 4), receipt("B", "DC1", 2), receipt("C", "STORE-1", 1)
    )


async def test_preview_of_a_global_rule_matches_a_hand_computation(api):
    await stores_and_stock(api)
    rules_before = (await api.client.get("/v1/rules")).json()
    resp = await api.client.post(
        "/v1/rules/preview", json={"changes": [{"op": "create", "rule": {"kind": "safety_stock", "units": 2}}]}
    )
    assert resp.status_code == 200, resp.text
    report = resp.json()
    # before: A DC1 online 10, A STORE-1 online 4 / pos 4, B DC1 online 2, C STORE-1 online 1 / pos 1
    # after safety 2 everywhere: 8, 2 / 2, 0, 0 / 0
    assert (report["scope"], report["complete"]) == ("all", True)
    assert (report["skus_scanned"], report["pairs_scanned"]) == (3, 4)
    assert (report["values_compared"], report["values_changed"]) == (6, 6)
    assert {ch["channel"]: (ch["units_before"], ch["units_after"], ch["delta"]) for ch in report["channels"]} == {
        "online": (17, 10, -7),
        "pos": (5, 2, -3),
    }
    assert report["skus_to_zero_count"] == 3
    assert sorted((z["sku"], z["channel"], z["before"]) for z in report["skus_to_zero"]) == [
        ("B", "online", 2),
        ("C", "online", 1),
        ("C", "pos", 1),
    ]
    assert len(report["sample"]) == 6
    assert {"sku": "A", "location": "DC1", "channel": "online", "before": 10, "after": 8} in report["sample"]
    assert report["proposed"][0]["id"] < 0
    # nothing was written
    assert (await api.client.get("/v1/rules")).json() == rules_before
    assert (await api.client.get("/v1/availability/B")).json()["ats"] == 2


async def test_preview_of_a_sku_rule_reads_only_that_sku_and_limit_reports_incomplete(api):
    await stores_and_stock(api)
    c = api.client
    sku_rule = await c.post(
        "/v1/rules/preview",
        json={"changes": [{"op": "create", "rule": {"kind": "buffer", "units": 1, "channel": "online", "sku": "A"}}]},
    )
    report = sku_rule.json()
    assert (report["scope"], report["skus_scanned"], report["values_compared"], report["values_changed"]) == (
        "skus",
        1,
        3,
        2,
    )
    assert {ch["channel"]: ch["delta"] for ch in report["channels"]} == {"online": -2, "pos": 0}

    limited = (
        await c.post(
            "/v1/rules/preview",
            json={"changes": [{"op": "create", "rule": {"kind": "safety_stock", "units": 1}}], "limit": 2},
        )
    ).json()
    assert (limited["complete"], limited["skus_scanned"]) == (False, 2)

    # updating and deleting existing rules
    rule = (await c.post("/v1/rules", json={"kind": "safety_stock", "units": 3, "location": "DC1"})).json()
    undo = (await c.post("/v1/rules/preview", json={"changes": [{"op": "delete", "id": rule["id"]}]})).json()
    assert {ch["channel"]: ch["delta"] for ch in undo["channels"]} == {"online": 3 + 2, "pos": 0}  # A +3, B +2
    assert undo["deleted"] == [rule["id"]]
    tweak = (
        await c.post("/v1/rules/preview", json={"changes": [{"op": "update", "id": rule["id"], "rule": {"units": 4}}]})
    ).json()
    assert {ch["channel"]: ch["delta"] for ch in tweak["channels"]} == {"online": -1 - 0, "pos": 0}  # A -1, B already 0
    for bad, status in (
        ({"changes": []}, 422),
        ({"changes": [{"op": "update", "id": 999, "rule": {"units": 1}}]}, 404),
        ({"changes": [{"op": "create", "rule": {"kind": "buffer", "units": 1}}]}, 422),
        ({"changes": [{"op": "create"}]}, 422),
        ({"changes": [{"op": "rename", "id": 1}]}, 422),
    ):
        resp = await c.post("/v1/rules/preview", json=bad)
        assert resp.status_code == status, (bad, resp.text)


async def _marks(ledger) -> set[str]:
    """The dirty marks of every ledger partition."""
    out: set[str] = set()
    for key in ledger.keys.all_dirty():
        out |= {m.decode() for m in await ledger.redis.zrange(key, 0, -1)}
    return out


async def test_a_rule_change_marks_affected_pairs_dirty_in_the_background(make_api):
    async with make_api(services=["rules-dirty"]) as api:
        await stores_and_stock(api)
        marker = api.app.state.api.marker
        await marker.wait_idle()
        ledger = api.ledger
        await ledger.forget_dirty()

        await api.client.post("/v1/rules", json={"kind": "safety_stock", "units": 1})
        await marker.wait_idle()
        assert await _marks(ledger) == {"A|DC1", "A|STORE-1", "B|DC1", "C|STORE-1"}

        await ledger.forget_dirty()
        await api.client.post("/v1/rules", json={"kind": "buffer", "units": 1, "channel": "pos", "sku": "C"})
        await marker.wait_idle()
        assert await _marks(ledger) == {"C|STORE-1"}
        assert await marker.pending() == 0


async def test_mark_all_dirty_walks_every_stock_key_in_batches(api):
    from availability.rules.dirtying import mark_all_dirty, mark_skus_dirty

    await stores_and_stock(api)
    ledger = api.ledger
    await ledger.forget_dirty()
    assert await mark_all_dirty(api.ledger, batch=1) >= 4  # SCAN may return a key twice
    assert await ledger.dirty_count() == 4
    await ledger.forget_dirty()
    assert await mark_skus_dirty(api.ledger, ["A", "NEVER-STOCKED"]) == 2
    assert await _marks(ledger) == {"A|DC1", "A|STORE-1"}
