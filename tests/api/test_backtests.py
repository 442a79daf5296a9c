"""Backtests over HTTP: the contract the console is built against, scopes, bad input."""

from __future__ import annotations

import asyncio

from tests.api.conftest import PLANNER, READER, bearer, receipt


async def wait_done(client, job_id: str) -> dict:
    for _ in range(200):
        body = (await client.get(f"/v1/backtests/{job_id}")).json()
        if body["status"] != "running":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"backtest {job_id} still running")


async def test_a_backtest_runs_in_the_background_and_reports_per_channel(api):
    c = api.client
    await api.seed(receipt("A", "DC1", 4))
    for rid, quantity in (("o1", 2), ("o2", 2)):
        resp = await c.post("/v1/reservations", json={"reservation_id": rid, "channel": "online",
                                                       "lines": [{"sku": "A", "quantity": quantity}]})
        assert resp.status_code == 201, resp.text
    draft = [{"op": "create", "rule": {"kind": "buffer", "channel": "online", "units": 1}}]
    resp = await c.post("/v1/backtests", json={"days": 7, "changes": draft}, headers=bearer(PLANNER))
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["status"] == "running" and started["id"]
    assert resp.headers["location"] == f"/v1/backtests/{started['id']}"
    body = await wait_done(c, started["id"])
    assert body["status"] == "done", body
    assert body["error"] is None
    assert body["progress"] == {"done": 3, "total": 3}
    report = body["report"]
    assert (report["days"], report["entries"]) == (7, 3)
    online = next(row for row in report["channels"] if row["channel"] == "online")
    # the buffer shows 3 of 4: o1 (2) fits, then 1 shown and o2 (2) is refused
    assert online == {"channel": "online", "orders_refused": 1, "units_refused": 2, "stockouts_avoided": 1,
                      "oversells_avoided": 0, "units_unexposed": 1 + 1 + 0}
    # a reader may follow it; nothing was written to the rules
    assert (await c.get(f"/v1/backtests/{started['id']}", headers=bearer(READER))).status_code == 200
    assert (await c.get("/v1/rules")).json() == []


async def test_backtest_input_and_scopes(api):
    c = api.client
    ok = {"days": 1, "changes": []}
    assert (await c.post("/v1/backtests", json=ok, headers=bearer(READER))).status_code == 403
    for bad in ({"days": 0, "changes": []}, {"days": 32, "changes": []}, {"changes": []}, {"days": 1},
                {"days": 1, "changes": [], "extra": 1}, {"days": "7", "changes": []},
                {"days": 1, "changes": [{"op": "create"}]},
                {"days": 1, "changes": [{"op": "create", "rule": {"kind": "buffer", "channel": "nope", "units": 1}}]}):
        resp = await c.post("/v1/backtests", json=bad)
        assert 400 <= resp.status_code < 500, (bad, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    resp = await c.post("/v1/backtests", json={"days": 1, "changes": [{"op": "delete", "id": 999}]})
    assert resp.status_code == 404
    resp = await c.get("/v1/backtests/bt-unknown")
    assert resp.status_code == 404 and resp.json()["type"].endswith("unknown-backtest")


async def test_only_a_few_run_at_once_and_finished_ones_are_bounded(api):
    from availability.api.backtests import BacktestJobs, BacktestsBusy  # noqa: PLC0415
    from availability.api.preview import copy_book  # noqa: PLC0415

    jobs = BacktestJobs(max_running=1, keep_finished=2)
    book = api.runtime.rules.book
    ctx = api.app.state.api
    first = jobs.start(ctx, copy_book(book), copy_book(book), 1)
    try:
        jobs.start(ctx, copy_book(book), copy_book(book), 1)
        raise AssertionError("a second backtest started beside the first")
    except BacktestsBusy as exc:
        assert exc.status == 429
    while first.status == "running":
        await asyncio.sleep(0.01)
    for _ in range(3):
        job = jobs.start(ctx, copy_book(book), copy_book(book), 1)
        while job.status == "running":
            await asyncio.sleep(0.01)
    assert len(jobs.jobs) == 2 and all(j.status == "done" for j in jobs.jobs.values())
