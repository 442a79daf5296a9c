"""End to end: a real Prometheus (Debian's `prometheus`) scrapes a running API, a running
consumer and redis_exporter, evaluates deploy/prometheus/alerts.yml, and the lag alert
fires once the consumer is stopped and events keep coming.

The rules are the real file with every `for:` shortened to 1 s and the stream-behind
threshold lowered from 60 s to 1 s, so the test takes seconds, not minutes; the
expressions, metric names and labels are the ones deployed. The lag alert measured from
outside (redis_exporter's stream and group ids) is the one that can fire with the consumer
gone: a stopped consumer reports no lag of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from availability.embedded_redis import free_port
from tests.deploy.support import DEPLOY

PROMETHEUS = shutil.which("prometheus")
REDIS_EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or REDIS_EXPORTER is None,
    reason="needs the prometheus and redis_exporter binaries (Debian: prometheus, prometheus-redis-exporter)",
)

KEY = "e2e-admin-key"
#: alert -> (text in its expr, test value): thresholds a test cannot wait for
THRESHOLDS = {"AvailabilityIngestStreamBehind": (") / 1000 > 60", ") / 1000 > 1")}


def fast_rules(path: Path) -> None:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
            if rule.get("alert") in THRESHOLDS:
                old, new = THRESHOLDS[rule["alert"]]
                assert old in rule["expr"], f"{rule['alert']} changed: update THRESHOLDS"
                rule["expr"] = rule["expr"].replace(old, new)
    path.write_text(yaml.safe_dump(doc))


class Processes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.directory / f"{name}.log", "wb")
        proc = subprocess.Popen(args, env=env, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT)
        self.running[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.running.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.directory.glob("*.log"))
        )

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


#: How long a process may take to come up: generous, for a shared CI machine under load
#: (spawned workers took 50 s at load 17 on 2 cores, see test_logs.py); a process that
#: dies fails the wait at once, with the logs.
START_UP_BOUND_S = 180


def wait_for(what: str, check, timeout: float, procs: Processes):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        dead = {name: proc.returncode for name, proc in procs.running.items() if proc.poll() is not None}
        if dead:
            pytest.fail(f"waiting for {what}: {dead} exited\n{procs.logs()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{procs.logs()}")
        time.sleep(0.2)


def test_stopping_the_consumer_fires_the_lag_alert(redis_url, key_prefix, tmp_path):
    procs = Processes(tmp_path)
    api_port, consumer_port, exporter_port, prom_port = (free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVAILABILITY_", "PROMETHEUS_MULTIPROC"))}
    env.update({
        "AVAILABILITY_REDIS_URL": redis_url,
        "AVAILABILITY_KEY_PREFIX": key_prefix,
        "AVAILABILITY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/rules.db",
        "AVAILABILITY_API_KEYS": json.dumps([{"key": KEY, "scopes": ["admin"], "name": "e2e"}]),
        "AVAILABILITY_PARTITIONS": "2",
        "AVAILABILITY_EVENTS_MODE": "stream",
        "AVAILABILITY_RECLAIM_INTERVAL_SECONDS": "0.5",
    })
    serve = [sys.executable, "-m", "availability.cli", "--log-level", "WARNING", "serve"]
    try:
        procs.start("api", serve + ["--port", str(api_port)], {
            **env, "AVAILABILITY_DATA_DIR": str(tmp_path / "api"), "AVAILABILITY_SERVICES": '["expiry", "rules-dirty"]',
        })
        procs.start("consumer", serve + ["--port", str(consumer_port)], {
            **env, "AVAILABILITY_DATA_DIR": str(tmp_path / "consumer"), "AVAILABILITY_SERVICES": '["consumer"]',
        })
        procs.start("redis-exporter", [
            REDIS_EXPORTER, "-redis.addr", redis_url.rsplit("/", 1)[0],
            "-check-streams", f"{key_prefix}:events:*", "-web.listen-address", f"127.0.0.1:{exporter_port}",
        ])
        fast_rules(tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(tmp_path / "alerts.yml")],
            "scrape_configs": [
                {"job_name": "availability-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
                {"job_name": "availability-consumer", "static_configs": [{"targets": [f"127.0.0.1:{consumer_port}"]}]},
                {"job_name": "redis", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
            ],
        }))
        procs.start("prometheus", [
            PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ])
        prom = f"http://127.0.0.1:{prom_port}"
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)

        def query(expr: str) -> list:
            return httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]

        def firing() -> set[str]:
            alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

        def receipt(n: int) -> dict:
            return {"event_id": f"e2e-{n}", "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z",
                    "sku": "E2E-SKU", "location": "DC1", "quantity": 1}

        for name in ("api", "consumer"):
            port = api_port if name == "api" else consumer_port
            wait_for(f"{name} ready", lambda: httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200,
                     START_UP_BOUND_S, procs)

        # Healthy: an event goes through, every target is scraped, the stream is caught up.
        assert api.post("/v1/events", json=[receipt(0)]).status_code == 202
        wait_for("the consumer to apply the first event",
                 lambda: api.get("/v1/availability/E2E-SKU").json()["ats"] > 0, 30, procs)
        wait_for("all three targets up", lambda: len(query("up == 1")) == 3, 30, procs)
        delivered = f'redis_stream_group_last_delivered_id{{group="ledger", stream=~"{key_prefix}:events:.*"}} > 0'
        wait_for("redis_exporter to see the group's delivery", lambda: query(delivered), 30, procs)
        wait_for("the consumer's own lag gauge", lambda: query('availability_ingest_lag{job="availability-consumer"}'), 30, procs)
        # (AvailabilityConsumerAbsent may have fired before the first scrape: it must clear.)
        lag_alerts = {"AvailabilityIngestStreamBehind", "AvailabilityConsumerAbsent"}
        wait_for("no lag alert while the consumer runs", lambda: not firing() & lag_alerts, 30, procs)

        # The consumer stops; events keep arriving for more than the (test) threshold.
        procs.stop("consumer")
        time.sleep(2.5)
        assert api.post("/v1/events", json=[receipt(n) for n in range(1, 11)]).status_code == 202
        fired = wait_for("AvailabilityIngestStreamBehind to fire",
                         lambda: "AvailabilityIngestStreamBehind" in firing() and firing(), 30, procs)
        assert "AvailabilityConsumerAbsent" in fired
        (behind,) = [a for a in httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
                     if a["labels"]["alertname"] == "AvailabilityIngestStreamBehind"]
        assert behind["labels"]["stream"].startswith(f"{key_prefix}:events:")
        assert behind["annotations"]["runbook_url"] == "docs/runbooks/ingest.md#stream-behind"
        # Nothing was applied while the consumer was away (the ledger still shows one receipt).
        assert api.get("/v1/availability/E2E-SKU").json()["ats"] == 1
    finally:
        procs.stop_all()
