"""The API as `availability serve` runs it (ServedApp under uvicorn, background services
included) on a free port, in a thread with its own event loop, over the session's Redis (a
unique key prefix) and a SQLite store in a temporary directory: for tests that talk to it
over real HTTP (schemathesis, generated clients). One admin key, KEY; no rate limit."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from availability.api.app import ServedApp
from availability.config import Settings
from availability.embedded_redis import free_port

KEY = "fuzz-admin-key"


@contextmanager
def running(config: Settings, name: str = "api-server") -> Iterator[int]:
    """ServedApp(config) under uvicorn on a free port in a thread; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(ServedApp(config), host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the API server did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz")
    config = Settings(
        _env_file=None,
        redis_url=redis_url,
        key_prefix=f"fz{uuid.uuid4().hex[:8]}",
        data_dir=str(data_dir),
        database_url=f"sqlite+aiosqlite:///{data_dir}/rules.db",
        api_keys=json.dumps([{"key": KEY, "scopes": ["admin"], "name": "fuzzer"}]),
        events_mode="direct",
        rate_limit_per_second=0,
    )
    with running(config, "fuzz-server") as port:
        yield f"http://127.0.0.1:{port}"
