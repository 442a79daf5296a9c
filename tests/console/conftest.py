"""Console tests: the real app (same harness as tests/api) over the session's real Redis and
a SQLite rule store in tmp_path, driven as a browser would: form posts, a session cookie.

The client talks to https://console.test because the session cookie is `Secure`: an
http:// origin would (rightly) never send it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from availability.bootstrap import Runtime
from tests.api.conftest import ADMIN, bearer, make_api  # noqa: F401  (make_api: the fixture, shared)

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


@dataclass
class Console:
    client: httpx.AsyncClient
    runtime: Runtime
    app: Any
    csrf: str = ""

    async def login(self, key: str) -> httpx.Response:
        resp = await self.client.post("/console/login", data={"api_key": key})
        if resp.status_code == 303:
            page = await self.client.get("/console/rules")
            found = CSRF.search(page.text)
            self.csrf = found.group(1) if found else ""
        return resp

    async def post(self, path: str, data: dict | None = None, **kwargs) -> httpx.Response:
        return await self.client.post(path, data={"_csrf": self.csrf, **(data or {})}, **kwargs)

    async def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The JSON API with the admin key (to seed stock and rules)."""
        return await self.client.request(method, path, headers=bearer(ADMIN), **kwargs)

    async def seed_stock(self, *rows: tuple[str, str, int]) -> None:
        events = [
            {"event_id": f"seed-{sku}-{loc}", "type": "snapshot", "source": "erp", "occurred_at": "2026-11-20T10:00:00Z",
             "sku": sku, "location": loc, "quantity": qty}
            for sku, loc, qty in rows
        ]
        resp = await self.api("POST", "/v1/events", json=events)
        assert resp.status_code == 200, resp.text


@pytest.fixture
async def console(make_api):
    async with make_api(key=None, base_url="https://console.test") as api:
        api.client.headers["Accept"] = "text/html,application/xhtml+xml"  # as a browser asks
        yield Console(api.client, api.runtime, api.app)
