"""The API as `availability serve` runs it (ServedApp under Granian's RSGI interface, the
default, or under uvicorn; background services included) on a free port, in a thread with
its own event loop, over the session's Redis (a unique key prefix) and a SQLite store in a
temporary directory: for tests that talk to it over real HTTP (schemathesis, generated
clients). One admin key, KEY; no rate limit."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

from availability.api.app import ServedApp
from availability.config import Settings
from availability.embedded_redis import free_port

if TYPE_CHECKING:
    from availability.api.rsgi import RsgiServedApp

KEY = "fuzz-admin-key"
#: Start-up bound of the server thread: generous for a shared CI machine under load; a thread
#: that dies (its start-up raised) fails the wait at once, with what it raised.
START_UP_BOUND_S = 180


@contextmanager
def running(config: Settings, name: str = "api-server", server: str = "granian") -> Iterator[int]:
    """ServedApp(config) under `server` (granian: RSGI, as `availability serve` runs it by
    default; or uvicorn) on a free port in a thread; yields the port."""
    if server == "granian":
        with serving_rsgi(config, name) as (port, _app):
            yield port
        return
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(ServedApp(config), host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    failed: list[BaseException] = []
    thread = threading.Thread(target=_recording(server.run, failed), name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_UP_BOUND_S
    while not server.started:
        if not thread.is_alive():
            pytest.fail(f"the API server stopped before it started: {failed!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"the API server did not start in {START_UP_BOUND_S}s")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextmanager
def serving_rsgi(config: Settings, name: str = "rsgi-server") -> Iterator[tuple[int, "RsgiServedApp"]]:
    """Granian's embedded server (one worker, on the thread's own loop) over RsgiServedApp;
    yields the port and the app (its `.served.app` is the Litestar app inside)."""
    from granian.constants import Interfaces
    from granian.server.embed import Server

    from availability.api.rsgi import RsgiServedApp

    port = free_port()
    app = RsgiServedApp(ServedApp(config))
    ready = threading.Event()
    holder: dict = {}

    async def main() -> None:
        await app.startup()
        server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.RSGI, log_level="warning")
        holder["loop"], holder["server"] = asyncio.get_running_loop(), server
        ready.set()
        try:
            await server.serve()
        finally:
            await app.shutdown()

    failed: list[BaseException] = []
    thread = threading.Thread(target=_recording(lambda: asyncio.run(main()), failed), name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_UP_BOUND_S
    while not ready.wait(0.05):
        if not thread.is_alive():
            pytest.fail(f"the API server stopped before it started: {failed!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"the API server did not start in {START_UP_BOUND_S}s")
    if not _listening(port, thread, deadline - time.monotonic()):
        pytest.fail(f"the API server did not listen: {failed!r}" if not thread.is_alive()
                    else f"the API server did not listen in {START_UP_BOUND_S}s")
    try:
        yield port, app
    finally:
        holder["loop"].call_soon_threadsafe(holder["server"].stop)
        thread.join(timeout=20)


def _recording(run, failed: list[BaseException]):
    """`run`, keeping what it raised in `failed` (a thread's exception is otherwise only
    printed), so a start-up wait can say why the server died."""

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            failed.append(exc)
            raise

    return target


def _listening(port: int, thread: threading.Thread, timeout: float = START_UP_BOUND_S) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def served_settings(redis_url: str, data_dir, prefix: str, keys: list[dict], **extra) -> Settings:
    """Settings of a served test app: the session's Redis under a fresh key prefix, a SQLite
    store in `data_dir`, these API keys, events applied directly, no rate limit."""
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        key_prefix=f"{prefix}{uuid.uuid4().hex[:8]}",
        data_dir=str(data_dir),
        database_url=f"sqlite+aiosqlite:///{data_dir}/rules.db",
        api_keys=json.dumps(keys),
        events_mode="direct",
        rate_limit_per_second=0,
        **extra,
    )


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    keys = [{"key": KEY, "scopes": ["admin"], "name": "fuzzer"}]
    config = served_settings(redis_url, tmp_path_factory.mktemp("fuzz"), "fz", keys)
    with running(config, "fuzz-server") as port:
        yield f"http://127.0.0.1:{port}"
