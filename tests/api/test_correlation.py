"""A correlation id per HTTP request: taken from the caller's header when sane, else made;
on every JSON log line the request writes, and echoed in the response."""

from __future__ import annotations

import io
import json
import logging

from availability.logs import JsonFormatter


def _json_log(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())  # formats at emit time, inside the request
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, out


async def _logging_ready_check(api, monkeypatch, name):
    """/health/ready reads the rule store's version: make that write a log line."""
    logger, out = _json_log(name)
    original = api.runtime.store.version

    async def version():
        logger.info("reading the rule store version")
        return await original()

    monkeypatch.setattr(api.runtime.store, "version", version)
    return out


async def test_the_callers_id_is_on_the_log_line_and_echoed(api, monkeypatch):
    out = await _logging_ready_check(api, monkeypatch, "tests.correlation.given")
    resp = await api.client.get("/health/ready", headers={"X-Correlation-Id": "order-4711.retry-2"})
    assert resp.status_code == 200
    assert resp.headers["x-correlation-id"] == "order-4711.retry-2"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["message"], d["correlation_id"]) for d in lines] == [("reading the rule store version", "order-4711.retry-2")]


async def test_x_request_id_is_taken_and_an_insane_id_is_replaced(api, monkeypatch):
    out = await _logging_ready_check(api, monkeypatch, "tests.correlation.replaced")
    resp = await api.client.get("/health/ready", headers={"X-Request-Id": "req-1"})
    assert resp.headers["x-correlation-id"] == "req-1"
    resp = await api.client.get("/health/ready", headers={"X-Correlation-Id": 'a b"\\' + "x" * 300})
    made = resp.headers["x-correlation-id"]
    assert len(made) == 32 and made.isalnum()
    resp = await api.client.get("/health/ready")
    assert resp.headers["x-correlation-id"] not in (made, "req-1")
    ids = [json.loads(line)["correlation_id"] for line in out.getvalue().splitlines()]
    assert ids == ["req-1", made, resp.headers["x-correlation-id"]]


async def test_refused_and_unknown_requests_echo_an_id_too(api):
    refused = await api.client.post("/v1/reservations", json={}, headers={"X-Correlation-Id": "c-401", "Authorization": "Bearer not-a-key"})
    assert refused.status_code == 401 and refused.headers["x-correlation-id"] == "c-401"
    missing = await api.client.get("/no/such/route", headers={"X-Correlation-Id": "c-404"})
    assert missing.status_code == 404 and missing.headers["x-correlation-id"] == "c-404"
