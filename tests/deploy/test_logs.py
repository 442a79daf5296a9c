"""AVAILABILITY_LOG_FORMAT=json: every line a process writes is one JSON object with the
correlation id; checked on the formatter and on a real `availability serve` with two
workers of its default server (Granian) and of uvicorn, as compose runs the API (the format
must reach the server's own loggers and the worker processes). The same server answers the image's Docker HEALTHCHECK script."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from availability.embedded_redis import free_port
from tests.deploy.support import DEPLOY
from availability.flows.machinery import current_correlation_id
from availability.logs import JsonFormatter, log_config


def _record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord("availability.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_json_line_has_the_fields_and_the_correlation_id():
    formatter = JsonFormatter()
    line = json.loads(formatter.format(_record("pushed %d levels", 3, sku_count=2)))
    assert line["level"] == "WARNING" and line["logger"] == "availability.test"
    assert line["message"] == "pushed 3 levels"
    assert line["correlation_id"] is None
    assert line["sku_count"] == 2
    assert line["time"].endswith("+00:00")
    token = current_correlation_id.set("c0ffee")
    try:
        assert json.loads(formatter.format(_record("inside a unit of work")))["correlation_id"] == "c0ffee"
    finally:
        current_correlation_id.reset(token)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        text = formatter.format(_record("failed", exc_info=sys.exc_info()))
    assert "\n" not in text, "one record, one line"
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_text_stays_the_default():
    assert log_config()["formatters"]["default"] == {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}


#: generous: only a start-up that hangs gets this far, however loaded the machine (two
#: spawned workers took 50 s at load 17 on 2 cores); within pytest's 300 s per test
START_UP_BOUND_S = 240
SHUTDOWN_BOUND_S = 45


def _healthcheck(port: int, path: str) -> int:
    script = DEPLOY / "docker" / "healthcheck.py"
    env = {**os.environ, "AVAILABILITY_PORT": str(port)}
    return subprocess.run([sys.executable, str(script), path], env=env, capture_output=True, timeout=30).returncode


ACCESS_LOGGER = {"granian": "granian.access", "uvicorn": "uvicorn.access"}


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_serve_with_json_logs_writes_only_json_lines(redis_url, key_prefix, tmp_path, server):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
    env.update({
        "AVAILABILITY_LOG_FORMAT": "json",
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": key_prefix,
        "AVAILABILITY_DATA_DIR": str(tmp_path / "var"),
        "AVAILABILITY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/rules.db",
        "AVAILABILITY_SERVICES": '["expiry"]',
    })
    # Output to a file, not a pipe: nothing reads a pipe until the server stops, and the
    # access lines of the readiness polls of a slow start-up would fill it and block the server.
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "availability.cli", "serve", "--port", str(port), "--workers", "2", "--access-log",
             "--server", server],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        # Start-up time is not what this test checks: wait while the server is alive, with a
        # bound only a hung start-up reaches (two workers importing the app on a loaded CI).
        deadline = time.monotonic() + START_UP_BOUND_S
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"serve not ready in {START_UP_BOUND_S} s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        httpx.get(f"http://127.0.0.1:{port}/health/live")
        assert _healthcheck(port, "/health/live") == 0
        assert _healthcheck(port, "/health/no-such-route") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_BOUND_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("serve did not stop on SIGTERM") from None
    output = log_path.read_text()
    assert _healthcheck(port, "/health/live") == 1, "a stopped server is unhealthy"
    lines = [line for line in output.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n{output[-3000:]}") from None
    assert all("correlation_id" in r for r in records)
    loggers = {r["logger"] for r in records}
    assert ACCESS_LOGGER[server] in loggers, loggers  # the server's own loggers, from the worker processes
    assert "availability.api" in loggers, loggers
    assert any("GET /health/live" in r["message"] for r in records)
    assert not any("color_message" in r for r in records)
