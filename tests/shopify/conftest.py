"""Fixtures for the Shopify adapter tests: the simulator on a free port (real HTTP, in a
background thread), a seeded shop, a raw GraphQL helper and a webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from adapters.shopify.simulator import FaultConfig, SimulatorConfig, SimulatorServer

SET_MUTATION = """mutation Set($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input)%s {
    inventoryAdjustmentGroup { id reason referenceDocumentUri
      changes { name delta quantityAfterChange item { id } location { id } } }
    userErrors { code field message }
  }
}"""

LEVELS_QUERY = """query Levels($id: ID!, $first: Int!, $after: String) {
  inventoryItem(id: $id) {
    id
    inventoryLevels(first: $first, after: $after) {
      edges { cursor node { location { id } quantities(names: ["available"]) { name quantity } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


# One sync client for raw requests: httpx.post() would build a client (and an SSL
# context) per call, ~30 ms each.
HTTP = httpx.Client(timeout=10)


def eventually(fn, timeout: float = 5.0, interval: float = 0.01):
    """Poll ``fn`` until it returns something truthy (work finishing in another thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def set_mutation(key: str | None) -> str:
    return SET_MUTATION % (f' @idempotent(key: "{key}")' if key is not None else "")


def set_input(quantities: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    inp = {
        "name": "available",
        "reason": "correction",
        "referenceDocumentUri": "gid://availability/Push/test",
        "quantities": quantities,
    }
    inp.update(overrides)
    return {"input": inp}


def entry(item: str, loc: str, quantity: int, **extra: Any) -> dict[str, Any]:
    return {"inventoryItemId": item, "locationId": loc, "quantity": quantity, **extra}


@dataclass
class Shop:
    sim: SimulatorServer
    items: list[str]
    locations: list[str]

    @property
    def state(self):
        return self.sim.state

    def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """One raw GraphQL POST (sync)."""
        return HTTP.post(
            self.sim.graphql_url(version),
            json={"query": query, "variables": variables or {}},
            headers={"X-Shopify-Access-Token": token if token is not None else self.sim.config.access_token},
            timeout=10,
        )

    async def agql(
        self,
        client: httpx.AsyncClient,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        version: str | None = None,
    ) -> httpx.Response:
        return await client.post(
            self.sim.graphql_url(version),
            json={"query": query, "variables": variables or {}},
            headers={"X-Shopify-Access-Token": self.sim.config.access_token},
        )


@pytest.fixture(scope="session")
def _stopping_servers():
    """Servers told to stop; joined once at the end. A uvicorn shutdown takes ~0.2 s of
    ticks, so waiting for each in its own test's teardown would dominate the run."""
    stopping: list[SimulatorServer] = []
    yield stopping
    for s in stopping:
        s.stop()


@pytest.fixture
def sim_factory(_stopping_servers):
    servers: list[SimulatorServer] = []

    def make(faults: FaultConfig | None = None, **config: Any) -> SimulatorServer:
        server = SimulatorServer(SimulatorConfig(faults=faults or FaultConfig(), **config))
        server.start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        # Quiet it at once (no background writer or webhooks leaking into later tests),
        # then let it finish shutting down in the background.
        s.state.set_faults(external_writer_interval_s=0.0)
        s.state.configure_webhook(None)
        s.request_stop()
        _stopping_servers.append(s)


@pytest.fixture
def shop_factory(sim_factory):
    def make(n_items: int = 3, n_locations: int = 2, available: int = 5, **config: Any) -> Shop:
        sim = sim_factory(**config)
        items, locations = sim.state.seed_catalog(n_items, n_locations, available)
        return Shop(sim, items, locations)

    return make


@pytest.fixture
def shop(shop_factory) -> Shop:
    return shop_factory()


# ------------------------------------------------------------------ webhook receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    url: str
    received: list[Received] = field(default_factory=list)
    # Status codes to answer, in order; 200 once exhausted (to test retries).
    script: list[int] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} webhooks, got {len(self.received)}")
                self.cond.wait(left)
            return list(self.received)


@pytest.fixture
def webhook_receiver():
    receiver_ref: dict[str, WebhookReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (stdlib name)
            r = receiver_ref["r"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with r.cond:
                status = r.script.pop(0) if r.script else 200
                r.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                r.cond.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/webhooks/shopify")
    receiver_ref["r"] = receiver
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
