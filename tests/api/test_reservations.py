"""Reservations over HTTP: lifecycle, 409 naming the short lines, idempotent replay, bad input."""

from __future__ import annotations

import asyncio

from tests.api.conftest import RESERVER, bearer, receipt

PROBLEM = "application/problem+json"


def order(rid: str, *lines, channel: str = "online", ttl: int | None = None) -> dict:
    body: dict = {"reservation_id": rid, "channel": channel, "lines": [dict(line) for line in lines]}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    return body


async def stocked(api) -> None:
    c = api.client
    await c.put("/v1/locations/DC1", json={"priority": 1})
    await c.put("/v1/locations/STORE-12", json={"type": "store", "priority": 2})
    await api.seed(
        receipt("TEE-BLK-M", "DC1", 3), receipt("TEE-BLK-M", "STORE-12", 5), receipt("CAP-RED", "STORE-12", 1)
    )


async def test_reserve_commit_and_release_lifecycle(api):
    await stocked(api)
    c = api.client
    resp = await c.post(
        "/v1/reservations",
        json=order(
            "ord-1001", {"sku": "TEE-BLK-M", "quantity": 2}, {"sku": "CAP-RED", "quantity": 1, "location": "STORE-12"}
        ),
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert resp.headers["location"] == "/v1/reservations/ord-1001"
    assert body["status"] == "held"
    assert [(a["location"], a["quantity"]) for a in body["lines"][0]["allocations"]] == [("DC1", 2)]
    assert [(a["location"], a["quantity"]) for a in body["lines"][1]["allocations"]] == [("STORE-12", 1)]
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 6

    got = await c.get("/v1/reservations/ord-1001")
    assert got.status_code == 200 and got.json()["lines"] == body["lines"]

    committed = await c.post("/v1/reservations/ord-1001/commit")
    assert committed.status_code == 200 and committed.json()["status"] == "committed"
    again = await c.post("/v1/reservations/ord-1001/commit")
    assert again.status_code == 200 and again.json()["status"] == "committed"
    # an order cancelled after it was placed gives its allocated units back
    cancelled = await c.post("/v1/reservations/ord-1001/release")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "released"
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 8
    refused = await c.post("/v1/reservations/ord-1001/commit")
    assert refused.status_code == 409 and refused.json()["type"].endswith(":reservation-conflict")

    second = await c.post("/v1/reservations", json=order("ord-1002", {"sku": "TEE-BLK-M", "quantity": 4}))
    assert second.status_code == 201
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 4
    released = await c.post("/v1/reservations/ord-1002/release")
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 8
    cannot = await c.post("/v1/reservations/ord-1002/commit")
    assert cannot.status_code == 409


async def test_short_lines_are_named_and_nothing_is_held(api):
    await stocked(api)
    c = api.client
    resp = await c.post(
        "/v1/reservations",
        json=order("ord-2", {"sku": "TEE-BLK-M", "quantity": 2}, {"sku": "CAP-RED", "quantity": 3}),
    )
    assert resp.status_code == 409
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert problem["type"] == "urn:availability:problem:insufficient-stock"
    assert problem["short_lines"] == [{"sku": "CAP-RED", "requested": 3, "available": 1, "location": None}]
    assert "CAP-RED" in problem["detail"]
    # all or nothing: the tee line was not kept
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 8
    assert (await c.get("/v1/reservations/ord-2")).status_code == 404


async def test_replay_answers_the_same_reservation_with_200(api):
    await stocked(api)
    c = api.client
    request = order("ord-3", {"sku": "TEE-BLK-M", "quantity": 5}, ttl=900)
    first = await c.post("/v1/reservations", json=request)
    replay = await c.post("/v1/reservations", json=request)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert first.json()["expires_at_ms"] == first.json()["created_at_ms"] + 900_000
    # held once, not twice
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 3
    other = await c.post("/v1/reservations", json=order("ord-3", {"sku": "TEE-BLK-M", "quantity": 1}))
    assert other.status_code == 409 and other.json()["type"].endswith(":reservation-conflict")


async def test_concurrent_reservations_never_oversell(api):
    await api.seed(receipt("HOT", "DC1", 25))
    c = api.client
    results = await asyncio.gather(
        *(c.post("/v1/reservations", json=order(f"hot-{i}", {"sku": "HOT", "quantity": 1})) for i in range(60))
    )
    codes = [r.status_code for r in results]
    assert codes.count(201) == 25 and codes.count(409) == 35
    assert (await c.get("/v1/availability/HOT")).json()["ats"] == 0


async def test_bad_reservation_input_is_4xx_problem_never_500(api):
    await stocked(api)
    c = api.client
    await c.put("/v1/channels/online", json={})
    await c.put("/v1/channels/pos", json={"locations": ["STORE-12"]})
    cases = [
        (order("x", {"sku": "TEE-BLK-M", "quantity": 0}), 422),
        (order("x", {"sku": "TEE-BLK-M", "quantity": -3}), 422),
        (order("x"), 422),
        (order("x|y", {"sku": "TEE-BLK-M", "quantity": 1}), 422),
        (order("x", {"sku": "TEE-BLK-M", "quantity": 1}, ttl=0), 422),
        (order("x", {"sku": "TEE-BLK-M", "quantity": 1, "location": "DC1"}, channel="pos"), 422),
        ({"reservation_id": "x", "channel": "online", "lines": [{"sku": "A", "qty": 1}]}, 422),
        ({"reservation_id": "x", "channel": "online", "lines": "A"}, 422),
        ({"reservation_id": "x", "channel": "online", "lines": [{"sku": "A", "quantity": 10**30}]}, 422),
        (order("x", {"sku": "TEE-BLK-M", "quantity": 1}, channel="b2b"), 404),
    ]
    for body, status in cases:
        resp = await c.post("/v1/reservations", json=body)
        assert resp.status_code == status, (body, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)
    for raw in (b"", b"[", b"null", b'"text"', b"\xff\xfe"):
        resp = await c.post("/v1/reservations", content=raw, headers={"content-type": "application/json"})
        assert 400 <= resp.status_code < 500, (raw, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)
    assert (await c.get("/v1/reservations/nope")).status_code == 404
    assert (await c.post("/v1/reservations/nope/commit")).status_code == 404


async def test_reserve_scope_is_enough_to_reserve_but_not_to_change_rules(make_api):
    async with make_api(key=RESERVER) as api:
        resp = await api.client.post("/v1/reservations", json=order("r", {"sku": "NONE", "quantity": 1}))
        assert resp.status_code == 409  # authorised; simply nothing in stock
        denied = await api.client.post("/v1/rules", json={"kind": "safety_stock", "units": 1})
        assert denied.status_code == 403
        assert denied.json()["required_scope"] == "rules"
        assert (await api.client.get("/v1/rules", headers=bearer(RESERVER))).status_code == 403


async def test_an_id_that_is_not_header_safe_is_percent_encoded_in_location(api):
    # "ñ😀" in a latin-1 Location header was a 500 while the units stayed held
    await stocked(api)
    c = api.client
    resp = await c.post("/v1/reservations", json=order("ñ😀 x", {"sku": "TEE-BLK-M", "quantity": 2}))
    assert resp.status_code == 201, resp.text
    location = resp.headers["location"]
    assert location == "/v1/reservations/%C3%B1%F0%9F%98%80%20x"
    assert resp.json()["reservation_id"] == "ñ😀 x"
    replay = await c.post("/v1/reservations", json=order("ñ😀 x", {"sku": "TEE-BLK-M", "quantity": 2}))
    assert replay.status_code == 200 and replay.headers["location"] == location
    # the Location is where the reservation is
    assert (await c.get(location)).json()["reservation_id"] == "ñ😀 x"
    released = await c.post(location + "/release")
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert (await c.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 8
    slash = await c.post("/v1/reservations", json=order("a/b?c#d", {"sku": "TEE-BLK-M", "quantity": 1}))
    assert slash.status_code == 201 and slash.headers["location"] == "/v1/reservations/a%2Fb%3Fc%23d"


async def test_ttl_absent_is_the_default_null_never_expires(api):
    await stocked(api)
    c = api.client
    default = (await c.post("/v1/reservations", json=order("d", {"sku": "TEE-BLK-M", "quantity": 1}))).json()
    assert default["expires_at_ms"] == default["created_at_ms"] + api.runtime.settings.reservation_default_ttl_seconds * 1000
    body = order("n", {"sku": "TEE-BLK-M", "quantity": 1})
    body["ttl_seconds"] = None
    never = (await c.post("/v1/reservations", json=body)).json()
    assert never["expires_at_ms"] is None and never["status"] == "held"


async def test_a_retry_while_an_unfinished_attempt_holds_the_id_is_409_with_retry_after(api):
    await stocked(api)
    ledger = api.runtime.ledger
    # an attempt that has written its intent and not finished (its process is gone)
    await ledger._intent("begin", "ord-9", "deadbeef", 30_000, b'["online",[],0,0,[]]', 0)
    resp = await api.client.post("/v1/reservations", json=order("ord-9", {"sku": "TEE-BLK-M", "quantity": 1}))
    assert resp.status_code == 409 and resp.json()["type"].endswith(":reservation-in-progress")
    assert 1 <= int(resp.headers["retry-after"]) <= 30
    assert (await api.client.get("/v1/availability/TEE-BLK-M")).json()["ats"] == 8  # nothing held
    commit = await api.client.post("/v1/reservations/ord-9/commit")
    assert commit.status_code == 409
