"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import pytest

from availability.domain.reservations import ReservationLine, ReservationRequest
from tests.api.conftest import receipt
from tests.conftest import differs_on_cluster


async def test_live_and_ready(api):
    assert (await api.client.get("/health/live")).json() == {"status": "ok", "checks": {}}
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "rule_store": "ok", "ledger_scripts": "ok"}


async def test_ready_is_503_when_a_dependency_fails(api, monkeypatch):
    async def unreachable():
        raise OSError("database is unreachable")

    monkeypatch.setattr(api.runtime.store, "version", unreachable)
    resp = await api.client.get("/health/ready")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable" and body["checks"]["rule_store"].startswith("error")
    assert body["checks"]["redis"] == "ok"


async def test_metrics_has_latency_per_route_template_and_ledger_gauges(api):
    await api.seed(receipt("M", "DC1", 3))
    await api.client.get("/v1/availability/M")
    await api.client.get("/v1/availability/N")
    await api.client.get("/v1/availability/M", params={"channel": "nope"})
    await api.client.post(
        "/v1/reservations",
        json={"reservation_id": "m-1", "channel": "online", "lines": [{"sku": "M", "quantity": 1}], "ttl_seconds": 60},
    )
    resp = await api.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    route = 'route="/v1/availability/{sku}"'
    assert f'availability_http_request_duration_seconds_count{{method="GET",{route},status="200"}} 2.0' in text
    assert f'availability_http_request_duration_seconds_count{{method="GET",{route},status="404"}} 1.0' in text
    assert f'availability_http_request_duration_seconds_bucket{{le="0.0001",method="GET",{route},status="200"}}' in text
    assert 'availability_api_reservations_total{outcome="held"} 1.0' in text
    assert "availability_reservations_pending_expiry 1.0" in text
    assert f"availability_rules_version {float(api.runtime.rules.book.version)}" in text
    assert "availability_dirty_pairs 1.0" in text  # M|DC1 from the receipt and the hold


@differs_on_cluster("the pipelined reader speaks to one server; on a cluster lookups read through the ledger's "
                    "cluster client (api/context.py), which the other availability tests check")
async def test_the_pipelined_reader_reads_what_the_ledger_reads(api):
    pytest.importorskip("hiredis")
    from availability.ledger.stockreader import PipelinedStockReader

    await api.seed(receipt("R1", "DC1", 3), receipt("R1", "STORE-1", 4), receipt("R2", "DC1", 1))
    await api.ledger.reserve(
        ReservationRequest("r-1", "online", [ReservationLine("R1", 2, "STORE-1")]), api.runtime.rules.book
    )
    reader = PipelinedStockReader(api.runtime.redis_url, api.ledger.keys)
    try:
        skus = ["R1", "R2", "NONE"]
        got = await asyncio.gather(reader.stock_many(skus), reader.stock_many(["R2"]), reader.stock_many(skus))
        assert got[0] == got[2] == await api.ledger.stock_many(skus)
        assert got[1] == {"R2": (await api.ledger.stock("R2"))}
    finally:
        await reader.close()
    assert isinstance(api.app.state.api.reader, PipelinedStockReader)  # the API uses it


async def test_redis_unreachable_is_503_problem(api):
    pytest.importorskip("hiredis")
    from availability.ledger.stockreader import PipelinedStockReader
    from availability.embedded_redis import free_port

    ctx = api.app.state.api
    ctx.reader = PipelinedStockReader(f"redis://127.0.0.1:{free_port()}/0", api.ledger.keys)
    resp = await api.client.get("/v1/availability/TEE")
    assert resp.status_code == 503 and resp.headers["content-type"].startswith("application/problem+json")
    assert resp.headers["retry-after"] == "1" and resp.json()["type"].endswith(":unavailable")


async def test_unknown_methods_do_not_make_new_metric_labels(api):
    await api.client.request("BREW", "/v1/availability/TEE")
    text = (await api.client.get("/metrics")).text
    assert 'method="BREW"' not in text and 'method="OTHER"' in text
