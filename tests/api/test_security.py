"""API keys and scopes, public reads, the development key, rate limits and body limits."""

from __future__ import annotations

import json

import pytest

from availability.rules.store import hash_api_key
from tests.api.conftest import ADMIN, PLANNER, READER, bearer

PROBLEM = "application/problem+json"


async def test_no_key_is_401_and_a_wrong_key_too(make_api):
    async with make_api(key=None) as api:
        c = api.client
        resp = await c.get("/v1/availability/TEE")
        assert resp.status_code == 401 and resp.headers["content-type"].startswith(PROBLEM)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get("/v1/availability/TEE", headers=bearer("not-a-key"))).status_code == 401
        assert (await c.get("/v1/availability/TEE", headers={"Authorization": "Basic eDp5"})).status_code == 401
        assert (await c.get("/v1/availability/TEE", headers={"X-API-Key": READER})).status_code == 200
        assert (await c.get("/v1/availability/TEE", headers=bearer(READER))).status_code == 200
        # operations endpoints are open
        for path in ("/health/live", "/health/ready", "/metrics", "/schema/openapi.json"):
            assert (await c.get(path)).status_code == 200, path


async def test_scopes_403_and_admin_implies_all(make_api):
    async with make_api(key=READER) as api:
        c = api.client
        resp = await c.post("/v1/reservations", json={"reservation_id": "r", "channel": "online", "lines": []})
        assert resp.status_code == 403
        assert resp.json()["required_scope"] == "reserve" and resp.json()["scopes"] == ["read"]
        assert (await c.put("/v1/locations/DC1", json={})).status_code == 403
        assert (await c.put("/v1/locations/DC1", json={}, headers=bearer(PLANNER))).status_code == 200
        assert (await c.put("/v1/locations/DC2", json={}, headers=bearer(ADMIN))).status_code == 200
        assert (await c.post("/v1/rules/preview", json={"changes": []})).status_code == 403


async def test_public_read_opens_reads_only(make_api):
    async with make_api(key=None, public_read=True) as api:
        c = api.client
        for path in (
            "/v1/availability/TEE",
            "/v1/availability/TEE/explain",
            "/v1/rules",
            "/v1/locations",
            "/v1/channels",
        ):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.post("/v1/availability/batch", json={"skus": ["TEE"]})).status_code == 200
        assert (await c.get("/v1/reservations/none")).status_code == 404  # read, and simply not there
        assert (await c.post("/v1/rules", json={"kind": "safety_stock", "units": 1})).status_code == 401
        assert (await c.post("/v1/events", json={})).status_code == 401
        # a key that is presented is still checked
        assert (await c.get("/v1/rules", headers=bearer("wrong"))).status_code == 401


async def test_keys_from_the_rule_store_are_accepted(make_api):
    async with make_api(key=None, api_keys=None) as api:
        await api.runtime.store.keys.add_api_key("checkout", "store-key-1", ["reserve", "read"])
        await api.app.state.api.keys.refresh(api.runtime.store)
        assert (await api.client.get("/v1/availability/X", headers=bearer("store-key-1"))).status_code == 200
        assert (await api.client.post("/v1/rules", json={}, headers=bearer("store-key-1"))).status_code == 403
        assert hash_api_key("store-key-1") in [h for h, _, _ in await api.runtime.store.keys.api_keys()]


async def test_without_any_key_a_dev_admin_key_is_made_in_data_dir(make_api, tmp_path):
    async with make_api(key=None, api_keys=None) as api:
        key = (tmp_path / "var" / "dev-admin-key").read_text().strip()
        assert key.startswith("dev-")
        assert ((tmp_path / "var" / "dev-admin-key").stat().st_mode & 0o777) == 0o600
        assert (await api.client.get("/v1/rules")).status_code == 401
        assert (
            await api.client.post("/v1/rules", json={"kind": "safety_stock", "units": 1}, headers=bearer(key))
        ).status_code == 201
    # the same key on the next start
    async with make_api(key=None, api_keys=None) as api:
        assert (await api.client.get("/v1/rules", headers=bearer(key))).status_code == 200


async def test_bad_api_keys_setting_fails_loudly(make_api):
    import pytest

    with pytest.raises(ValueError, match="AVAILABILITY_API_KEYS"):
        async with make_api(api_keys=json.dumps([{"key": "k", "scopes": ["superuser"]}])):
            pass


async def test_rate_limit_is_429_with_retry_after_per_key(make_api):
    # 2 per second, bursts of 2: the third request in the same half second is refused
    async with make_api(rate_limit_per_second=2) as api:
        c = api.client
        codes = [(await c.get("/v1/availability/TEE")).status_code for _ in range(6)]
        assert codes[:2] == [200, 200] and 429 in codes[2:]
        limited = await c.get("/v1/availability/TEE")
        assert limited.status_code == 429 and limited.headers["content-type"].startswith(PROBLEM)
        assert int(limited.headers["retry-after"]) >= 1
        # another key has its own bucket; operations endpoints are not limited
        assert (await c.get("/v1/availability/TEE", headers=bearer(READER))).status_code == 200
        assert (await c.get("/health/live")).status_code == 200


async def test_oversized_body_is_413_problem(make_api):
    async with make_api(max_body_bytes=2048) as api:
        big = {"skus": ["X" * 100] * 50}
        resp = await api.client.post("/v1/availability/batch", json=big)
        assert resp.status_code == 413 and resp.headers["content-type"].startswith(PROBLEM)
        resp = await api.client.post(
            "/v1/events", content=b"[" + b" " * 4096 + b"]", headers={"content-type": "application/json"}
        )
        assert resp.status_code == 413


async def test_ingest_uploads_need_the_events_scope_and_the_webhook_its_hmac(make_api):
    pytest.importorskip("availability.ingest.http")
    async with make_api(key=None) as api:
        c = api.client
        assert (await c.post("/v1/ingest/pos", content=b"{}")).status_code == 401
        assert (await c.post("/v1/ingest/pos", content=b"{}", headers=bearer(READER))).status_code == 403
        # the webhook is not behind an API key: Shopify signs it instead, and a bad signature is refused
        webhook = await c.post("/webhooks/shopify", content=b"{}", headers={"X-Shopify-Hmac-Sha256": "bad"})
        assert webhook.status_code in (401, 403) and "API key" not in webhook.text
