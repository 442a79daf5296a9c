"""Grafana dashboards (deploy/grafana/dashboards/*.json): generated from
deploy/grafana/generate.py, well formed, every query valid PromQL (checked by promtool), and
every metric a dashboard or an alert rule uses exists in the service's real /metrics page
(or, for redis_*, in redis_exporter's)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY

from availability.api.app import create_app
from availability.bootstrap import open_runtime
from availability.config import Settings
from availability.embedded_redis import free_port
from tests.api.conftest import Lifespan
from tests.deploy.metrics import (
    NOT_YET_EXPORTED,
    REDIS_EXPORTER,
    alert_exprs,
    dashboard_exprs,
    exposed_names,
    label_problems,
    page_labels,
    registry_labels,
    used_names,
)
from tests.deploy.support import DEPLOY

PROMTOOL = shutil.which("promtool")
REDIS_EXPORTER_BIN = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")


def _generator():
    spec = importlib.util.spec_from_file_location("dashboards_generate", DEPLOY / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_match_the_generator():
    rendered = _generator().render()
    on_disk = {p.name: p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert on_disk == rendered, "run `python deploy/grafana/generate.py` and commit the JSON"


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource():
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    uids = set()
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["uid"] not in uids
        uids.add(doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in doc["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == source["uid"]
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_the_dashboards_cover_what_operators_look_at():
    exprs = dashboard_exprs()
    text = {name: " ".join(e) for name, e in exprs.items()}
    assert "availability_ingest_lag" in text["availability-ingest.json"]
    assert "availability_ingest_events_applied_total" in text["availability-ingest.json"]
    assert 'route="/v1/availability/{sku}"' in text["availability-api.json"]
    assert "availability_api_reservations_total" in text["availability-api.json"]
    assert "availability_shopify_push_lag_seconds_bucket" in text["availability-shopify.json"]
    assert "availability_shopify_coalescing_ratio" in text["availability-shopify.json"]
    assert "availability_shopify_calls_total" in text["availability-shopify.json"]
    assert "redis_memory_used_bytes" in text["availability-redis.json"]
    assert "redis_commands_processed_total" in text["availability-redis.json"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = []
    for name, exprs in dashboard_exprs().items():
        for i, expr in enumerate(exprs):
            concrete = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
            rules.append({"record": f"dashboard:{name.removesuffix('.json').replace('-', '_')}:{i}", "expr": concrete})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
async def metrics_page(redis_url, key_prefix, tmp_path):
    """The /metrics page of the app with every background service (one-node `serve`),
    after a lookup, a reservation and an event, over the session's real Redis."""
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        key_prefix=key_prefix,
        data_dir=str(tmp_path / "var"),
        database_url=f"sqlite+aiosqlite:///{tmp_path}/rules.db",
        api_keys=json.dumps([{"key": "ops", "scopes": ["admin"], "name": "ops"}]),
        rate_limit_per_second=0,
    )
    async with open_runtime(settings) as runtime:
        app = create_app(runtime, services=True)
        async with Lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api.test", headers={"Authorization": "Bearer ops"}
            ) as client:
                await client.get("/v1/availability/TEE-BLK-M")
                await client.post(
                    "/v1/reservations",
                    json={"reservation_id": "r-1", "channel": "online", "lines": [{"sku": "TEE-BLK-M", "quantity": 1}]},
                )
                resp = await client.get("/metrics")
                assert resp.status_code == 200
                registries = [REGISTRY, app.state.api.metrics.registry]
                return resp.text, {**page_labels(resp.text), **registry_labels(registries)}


async def test_every_metric_used_exists_in_the_services_metrics(metrics_page):
    exposed = exposed_names(metrics_page[0])
    ours = {n for n in used_names() if not n.startswith("redis_")}
    missing = ours - exposed - NOT_YET_EXPORTED
    assert not missing, f"used by deploy/ but not in /metrics: {sorted(missing)}"
    # the check can fail: a name the service does not export is caught
    assert "availability_no_such_metric_total" not in exposed


async def test_every_label_used_exists_on_its_metric(metrics_page):
    _, labels = metrics_page
    exprs = [e for exprs in dashboard_exprs().values() for e in exprs] + alert_exprs()
    assert not label_problems(exprs, labels)
    # the check can fail: a misspelt label is caught
    assert label_problems(["max by (partiton) (availability_ingest_lag)"], labels)
    assert label_problems(['availability_ingest_lag{partion="1"}'], labels)


def test_redis_metrics_used_are_the_listed_redis_exporter_ones():
    used = {n for n in used_names() if n.startswith("redis_")}
    assert used <= REDIS_EXPORTER, f"add to REDIS_EXPORTER after checking redis_exporter exports it: {used - REDIS_EXPORTER}"


@pytest.mark.skipif(REDIS_EXPORTER_BIN is None, reason="redis_exporter not installed (Debian: prometheus-redis-exporter)")
async def test_redis_exporter_exports_the_listed_metrics(redis_url, redis_client, key_prefix):
    stream = f"{key_prefix}:events:{{p0}}"  # a partition stream (keys.event_stream)
    await redis_client.xadd(stream, {"event": "{}"})
    await redis_client.xgroup_create(stream, "ledger", id="0")
    port = free_port()
    address = redis_url.rsplit("/", 1)[0]
    proc = subprocess.Popen(
        [REDIS_EXPORTER_BIN, "-redis.addr", address, "-check-streams", f"{key_prefix}:events:*",
         "-web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        text = await _get_when_up(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        await redis_client.delete(stream)
    exposed = exposed_names(text)
    assert REDIS_EXPORTER <= exposed, f"not exported by redis_exporter: {sorted(REDIS_EXPORTER - exposed)}"
    exprs = [e for exprs in dashboard_exprs().values() for e in exprs] + alert_exprs()
    assert not label_problems(exprs, page_labels(text)), "labels the redis_* metrics do not have"


async def _get_when_up(url: str, timeout: float = 15.0) -> str:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                resp = await client.get(url)
                if resp.status_code == 200 and "redis_up 1" in resp.text:
                    return resp.text
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer with redis_up 1")
            await asyncio.sleep(0.1)
