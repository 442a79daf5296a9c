"""API tests: the real app in the test's own event loop (httpx ASGITransport + the app's
lifespan), over the session's real Redis (a unique key prefix per test) and a SQLite rule
store in the test's tmp_path."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from availability.api.app import create_app
from availability.bootstrap import Runtime, open_runtime
from availability.config import Settings

ADMIN = "admin-key-0001"
READER = "reader-key-0001"
RESERVER = "reserver-key-0001"
FEEDER = "feeder-key-0001"
PLANNER = "planner-key-0001"
KEYS = [
    {"key": ADMIN, "scopes": ["admin"], "name": "admin"},
    {"key": READER, "scopes": ["read"], "name": "reader"},
    {"key": RESERVER, "scopes": ["reserve"], "name": "checkout"},
    {"key": FEEDER, "scopes": ["events"], "name": "wms"},
    {"key": PLANNER, "scopes": ["rules", "read"], "name": "planner-ann"},
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Lifespan:
    """Drives an ASGI app's lifespan from a task of its own, so a fixture may start it in
    one task and stop it in another (anyio cancel scopes must exit where they entered)."""

    def __init__(self, app) -> None:
        self.app = app
        self._to_app: asyncio.Queue = asyncio.Queue()
        self._from_app: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def _expect(self, wanted: str) -> None:
        getter = asyncio.ensure_future(self._from_app.get())
        done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            self._task.result()  # raises the app's error
            raise RuntimeError("lifespan ended early")
        message = getter.result()
        if message["type"] != wanted:
            raise RuntimeError(f"lifespan: {message}")

    async def __aenter__(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        await self._expect("lifespan.startup.complete")
        return self

    async def __aexit__(self, *exc) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._expect("lifespan.shutdown.complete")
        await self._task


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    app: Any

    @property
    def ledger(self):
        return self.runtime.ledger

    async def seed(self, *events: dict) -> None:
        """Apply wire events through POST /v1/events (direct mode)."""
        resp = await self.client.post("/v1/events", json=list(events))
        assert resp.status_code == 200, resp.text


@pytest.fixture
def make_api(redis_url, key_prefix, tmp_path):
    @asynccontextmanager
    async def factory(
        *, key: str | None = ADMIN, services: bool | list[str] = False, base_url: str = "http://api.test", **overrides
    ):
        fields: dict[str, Any] = dict(
            redis_url=redis_url,
            key_prefix=key_prefix,
            data_dir=str(tmp_path / "var"),
            database_url=f"sqlite+aiosqlite:///{tmp_path}/rules.db",
            api_keys=json.dumps(KEYS),
            events_mode="direct",
            rate_limit_per_second=0,
        )
        fields.update(overrides)
        settings = Settings(_env_file=None, **fields)
        async with open_runtime(settings) as runtime:
            app = create_app(runtime, services=services)
            async with Lifespan(app):
                transport = httpx.ASGITransport(app=app)
                headers = bearer(key) if key else {}
                async with httpx.AsyncClient(
                    transport=transport, base_url=base_url, headers=headers
                ) as client:
                    yield Api(client, runtime, app)

    return factory


@pytest.fixture
async def api(make_api):
    async with make_api() as harness:
        yield harness


def receipt(sku: str, location: str, quantity: int, event_id: str | None = None, **extra) -> dict:
    return {
        "event_id": event_id or f"rcpt-{sku}-{location}-{quantity}-{extra.get('n', 0)}",
        "type": "receipt",
        "source": "wms",
        "occurred_at": "2026-11-20T10:00:00Z",
        "sku": sku,
        "location": location,
        "quantity": quantity,
        **{k: v for k, v in extra.items() if k != "n"},
    }
