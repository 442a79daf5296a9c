"""Real processes for the runtime tests: `availability serve` and CLI commands started as a
user starts them, on one data dir, with nothing on PATH (so no redis-server can be picked up)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from availability.embedded_redis import free_port, read_owner

REPO = Path(__file__).resolve().parents[2]
#: Startup and CLI bounds: generous, for a shared CI machine under load (a process that
#: dies fails the wait at once, with its log); still inside pytest's 300 s per test.
START_UP_BOUND_S = 180


class Site:
    """One working directory with its data dir, as a user's checkout has."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "var"
        self.redis_dir = self.data_dir / "redis"
        (root / "nobin").mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
        self.env.update(
            PATH=str(root / "nobin"),
            PYTHONPATH=str(REPO),
            AVAILABILITY_DATA_DIR=str(self.data_dir),
        )
        if os.environ.get("AVAILABILITY_REDIS_SERVER"):  # run these on another server version too
            self.env["AVAILABILITY_REDIS_SERVER"] = os.environ["AVAILABILITY_REDIS_SERVER"]
        self.port = 0
        self.serve_proc: subprocess.Popen | None = None

    def cli(self, *args: str, stdin: str | None = None, timeout: float = START_UP_BOUND_S) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", *args],
            cwd=self.root, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout,
        )

    def serve(self, timeout: float = START_UP_BOUND_S) -> subprocess.Popen:
        self.port = free_port()
        log = open(self.root / "serve.log", "ab")
        self.serve_proc = subprocess.Popen(
            [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "serve", "--port", str(self.port)],
            cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.serve_proc.poll() is None, self.log()
            try:
                if httpx.get(self.url("/health/ready"), timeout=2).status_code == 200:
                    return self.serve_proc
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve not ready in {timeout}s: {self.log()}")

    def stop_serve(self) -> int:
        proc = self.serve_proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        self.serve_proc = None
        return code

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def key(self) -> str:
        return (self.data_dir / "dev-admin-key").read_text().strip()

    def ats(self, sku: str) -> int:
        reply = httpx.get(self.url(f"/v1/availability/{sku}"), headers={"Authorization": f"Bearer {self.key()}"},
                          timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()["ats"]

    def ready(self) -> httpx.Response:
        return httpx.get(self.url("/health/ready"), timeout=5)

    def owner(self):
        return read_owner(self.redis_dir)

    def log(self) -> str:
        path = self.root / "serve.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def write_events(self, name: str, events: list[dict]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        return path


def receipt(event_id: str, sku: str, quantity: int, location: str = "DC1") -> dict:
    return {"event_id": event_id, "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z",
            "sku": sku, "location": location, "quantity": quantity}


def eventually(check, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(interval)


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    if s.serve_proc is not None and s.serve_proc.poll() is None:
        s.serve_proc.kill()
        s.serve_proc.wait()
