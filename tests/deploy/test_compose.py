"""deploy/compose.yaml, its Redis Cluster variant, the Dockerfile and the Prometheus config:
structure checked against the code (no Docker engine runs here). Each availability service
runs a real CLI command with real settings; mounts point at files that exist; Prometheus
scrapes services that exist; the container entrypoint refuses the embedded Redis."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import DEPLOY, ROOT, assert_cli_command, assert_settings, interpolate

ROLES = {
    "api": ["expiry", "rules-dirty"],  # README's API-only node
    "consumer": ["consumer"],
    "publisher": ["publisher"],
    "flows": ["flows"],
}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def availability_services(compose):
    return {name: s for name, s in compose["services"].items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def test_the_roles_dependencies_and_observability_are_services(compose):
    assert {"api", "consumer", "publisher", "redis", "postgres", "redis-exporter", "prometheus", "grafana"} <= set(
        compose["services"]
    )


def test_each_role_runs_a_real_command_with_real_settings(compose):
    services = availability_services(compose)
    assert set(ROLES) <= set(services)
    for name, service in services.items():
        assert service["build"]["context"] == ".."
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert_cli_command(service["command"])
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        settings = assert_settings(env)
        assert settings.redis_url == "redis://redis:6379/0", f"{name}: containers never use the embedded Redis"
        assert settings.resolved_database_url().startswith("postgresql+asyncpg://"), name
        if name in ROLES:
            assert settings.services == ROLES[name], f"{name} runs {settings.services}"
            assert service["command"][0] == "serve", "a role needs serve's /health and /metrics"
    api = services["api"]
    assert assert_settings({k: interpolate(str(v)) for k, v in api["environment"].items()}).events_mode == "stream"


def test_redis_keeps_an_append_only_file_and_never_evicts(compose):
    command = [interpolate(str(c)) for c in compose["services"]["redis"]["command"]]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2]))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction", "an evicted stock key is lost stock"
    assert options["--maxmemory"], "a limit, so the memory alert has a denominator"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_bind_mounts_exist_and_named_volumes_are_declared(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"


def test_prometheus_scrapes_every_role_and_the_redis_exporter(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"] if v.startswith("."))
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for role in ROLES:
        (sd,) = jobs[f"availability-{role}"]["dns_sd_configs"]
        assert sd["names"] == [role] and sd["port"] == 8000
    (static,) = jobs["redis"]["static_configs"]
    host, port = static["targets"][0].split(":")
    assert host in compose["services"] and port == "9121"
    exporter_env = compose["services"]["redis-exporter"]["environment"]
    assert exporter_env["REDIS_EXPORTER_CHECK_STREAMS"] == "av:events:*", "the lag seen from outside the consumer"


def test_grafana_is_provisioned_with_the_dashboards(compose):
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/availability.yml").read_text())
    (entry,) = provider["providers"]
    assert mounts["./grafana/dashboards"] == entry["options"]["path"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def test_the_cluster_variant_says_it_is_not_usable_yet_and_is_well_formed(compose):
    text = (DEPLOY / "compose.redis-cluster.yaml").read_text()
    assert "issue 15" in text
    variant = yaml.safe_load(text)
    nodes = [n for n in variant["services"] if n.startswith("redis-node-")]
    assert len(nodes) == 6
    for node in nodes:
        command = variant["services"][node]["command"]
        options = dict(zip(command[1::2], command[2::2]))
        assert options["--cluster-enabled"] == "yes" and options["--appendonly"] == "yes"
        assert options["--maxmemory-policy"] == "noeviction"
    init = variant["services"]["redis-cluster-init"]
    assert set(init["depends_on"]) == set(nodes)
    # The roles are untouched by the variant: they keep the standalone Redis.
    assert not set(variant["services"]) & set(availability_services(compose))


def test_dockerfile_is_multi_stage_non_root_with_a_health_check():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\n?.*availability-healthcheck\", \"/health/live\"", text, re.M)
    assert re.search(r"AVAILABILITY_REDIS_URL=redis://", text)
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the build context"


def _entrypoint(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(DEPLOY / "docker" / "entrypoint.sh"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_entrypoint_refuses_to_run_without_an_external_redis():
    refused = _entrypoint({"AVAILABILITY_REDIS_URL": ""}, "serve")
    assert refused.returncode == 64
    assert "AVAILABILITY_REDIS_URL is empty" in refused.stderr
    ran = _entrypoint({"AVAILABILITY_REDIS_URL": "redis://127.0.0.1:1/0"}, "--help")
    assert ran.returncode == 0 and "serve" in ran.stdout


def test_the_env_example_names_every_required_variable(compose):
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (DEPLOY / "compose.yaml").read_text()))
    example = (DEPLOY / "env.example").read_text()
    for name in required:
        assert re.search(rf"^{name}=", example, re.M), f"env.example does not set {name}"
    keys = re.search(r"^AVAILABILITY_API_KEYS='(.*)'$", example, re.M).group(1)  # single quotes: literal
    assert isinstance(json.loads(keys), list)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_prometheus_config(tmp_path):
    # The config as Prometheus sees it in the container: alerts.yml at its mounted path.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
