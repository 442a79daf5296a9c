"""POST /v1/events: direct mode applies and reports each event; stream mode queues; bad events are 422."""

from __future__ import annotations

from tests.api.conftest import FEEDER, READER, bearer, receipt

PROBLEM = "application/problem+json"


async def test_direct_mode_applies_once_and_reports_each_status(make_api):
    async with make_api(key=FEEDER) as api:
        c = api.client
        events = [receipt("TEE", "DC1", 5, event_id="e-1"), receipt("TEE", "DC1", 2, event_id="e-2")]
        first = await c.post("/v1/events", json=events)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["mode"] == "direct" and body["received"] == 2
        assert [r["status"] for r in body["results"]] == ["applied", "applied"]
        again = (await c.post("/v1/events", json=events[0])).json()  # a single object is fine too
        assert again["results"] == [{"event_id": "e-1", "status": "duplicate"}]
        stock = await api.ledger.stock("TEE")
        assert stock["DC1"].on_hand == 7
        assert (await c.get("/v1/availability/TEE")).status_code == 403  # events scope only


async def test_invalid_events_are_422_naming_the_event_and_nothing_is_applied(api):
    c = api.client
    good = receipt("TEE", "DC1", 1, event_id="ok-1")
    negative = receipt("TEE", "DC1", -4, event_id="neg-1")
    resp = await c.post("/v1/events", json=[good, negative])
    assert resp.status_code == 422 and resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert problem["type"].endswith(":invalid-event") and problem["event_id"] == "neg-1"
    assert "negative" in problem["detail"]
    assert (await api.ledger.stock("TEE")) == {}

    missing = {k: v for k, v in good.items() if k != "sku"}
    resp = await c.post("/v1/events", json=[good, missing])
    assert resp.status_code == 422 and "sku" in resp.json()["detail"] and "$[1]" in resp.json()["detail"]
    bad_type = dict(good, type="teleport")
    assert (await c.post("/v1/events", json=bad_type)).status_code == 422
    for raw in (b"", b"[]", b"{", b"42"):
        resp = await c.post("/v1/events", content=raw, headers={"content-type": "application/json"})
        assert resp.status_code == 422, (raw, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)


async def test_more_than_the_maximum_is_422(make_api):
    async with make_api(events_max=3) as api:
        events = [receipt("S", "DC1", 1, event_id=f"e{i}") for i in range(4)]
        resp = await api.client.post("/v1/events", json=events)
        assert resp.status_code == 422 and resp.json()["max_events"] == 3


async def test_stream_mode_queues_for_the_consumer(make_api):
    async with make_api(events_mode="stream") as api:
        from availability.ingest.streams import StreamNames

        resp = await api.client.post("/v1/events", json=[receipt("Q", "DC1", 3, event_id="q-1")])
        assert resp.status_code == 202 and resp.json() == {"mode": "stream", "received": 1}
        names = StreamNames.from_settings(api.runtime.settings)
        lengths = [await api.runtime.redis.xlen(stream) for stream in names.all_partitions()]
        assert sum(lengths) == 1
        assert await api.ledger.stock("Q") == {}  # the consumer applies it, not the request


async def test_events_need_the_events_scope(make_api):
    async with make_api(key=READER) as api:
        resp = await api.client.post("/v1/events", json=receipt("S", "DC1", 1))
        assert resp.status_code == 403
        assert (
            await api.client.post("/v1/events", json=receipt("S", "DC1", 1), headers=bearer(FEEDER))
        ).status_code == 200
