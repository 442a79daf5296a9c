"""deploy/k8s: the base and the production overlay render (tests/deploy/kustomize.py, a
minimal kustomize), every object validates against the Kubernetes schemas (the
`kubernetes-validate` package, strict: unknown fields fail), and the wiring is right:
probes on the real health routes, real CLI commands and settings, selectors that select."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy.support import DEPLOY, assert_cli_command, assert_settings

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
ROLES = {"api", "consumer", "publisher", "flows"}


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def rendered(request):
    return kustomize.build(K8S / request.param)


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_object_validates_against_the_schemas(rendered):
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_secret_example_validates_and_is_not_rendered(rendered):
    (secret,) = kustomize.load_docs(K8S / "base" / "secret.example.yaml")
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)
    assert not by_kind(rendered, "Secret"), "secrets come from the cluster's secret manager, not from git"


def test_each_role_is_a_deployment_with_probes_resources_and_config(rendered):
    deployments = by_kind(rendered, "Deployment")
    configmaps = by_kind(rendered, "ConfigMap")
    (secret,) = kustomize.load_docs(K8S / "base" / "secret.example.yaml")
    assert {d.removeprefix("availability-") for d in deployments} == ROLES
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: resources.{kind}"
        assert_cli_command(container["args"])
        # Config from the ConfigMap, secrets from the Secret; together they make valid settings.
        sources = container["envFrom"]
        config_name = next(s["configMapRef"]["name"] for s in sources if "configMapRef" in s)
        secret_name = next(s["secretRef"]["name"] for s in sources if "secretRef" in s)
        assert config_name in configmaps
        assert secret_name == secret["metadata"]["name"]
        env = {**configmaps[config_name]["data"], **secret["stringData"]}
        env.update({e["name"]: e["value"] for e in container.get("env", [])})
        settings = assert_settings(env)
        assert settings.redis_url, "containers never start the embedded Redis"
        assert settings.port == port
        role = name.removeprefix("availability-")
        expected = {"api": ["expiry", "rules-dirty"], "consumer": ["consumer"], "publisher": ["publisher"],
                    "flows": ["flows"]}[role]
        assert settings.services == expected, f"{name} runs {settings.services}"


def test_disruption_budgets_and_the_api_autoscaler_select_the_right_pods(rendered):
    deployments = by_kind(rendered, "Deployment")
    budgets = by_kind(rendered, "PodDisruptionBudget")
    (hpa,) = by_kind(rendered, "HorizontalPodAutoscaler").values()
    assert "replicas" not in deployments["availability-api"]["spec"], "the HPA owns the API's replica count"
    for name, deployment in deployments.items():
        replicas = hpa["spec"]["minReplicas"] if name == "availability-api" else deployment["spec"]["replicas"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"PDB {name} selects no pod of its Deployment"
        if "minAvailable" in budgets[name]["spec"]:
            assert budgets[name]["spec"]["minAvailable"] < replicas, f"PDB {name} blocks every drain"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "availability-api"}
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (service,) = by_kind(rendered, "Service").values()
    api_labels = deployments["availability-api"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_labels.items()


def test_the_production_overlay_applies_its_namespace_image_and_patches():
    docs = kustomize.build(K8S / "overlays" / "production")
    assert all(d["metadata"].get("namespace") == "availability" for d in docs if d["kind"] != "Namespace")
    deployments = by_kind(docs, "Deployment")
    assert {c["image"] for c in kustomize.containers(docs)} == {"ghcr.io/example/availability:0.1.0"}
    api = deployments["availability-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == "1"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live", "the patch merged, not replaced"
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["availability-api"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert by_kind(docs, "PodDisruptionBudget")["availability-api"]["spec"]["minAvailable"] == 2
    assert deployments["availability-consumer"]["spec"]["replicas"] == 4
    assert by_kind(docs, "ConfigMap")["availability-config"]["data"]["AVAILABILITY_PORT"] == "8000"


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(kustomize.Unsupported):
        kustomize.build(tmp_path)


# --- Prometheus Operator objects (deploy/k8s/monitoring): CRDs, so no Kubernetes schema;
# checked against what they must agree with instead.


def _monitoring():
    docs = kustomize.build(K8S / "monitoring")
    return by_kind(docs, "PodMonitor")["availability"], by_kind(docs, "PrometheusRule")["availability"]


def test_the_prometheus_rule_is_the_alert_file():
    spec = importlib.util.spec_from_file_location("monitoring_generate", K8S / "monitoring" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (K8S / "monitoring" / "prometheusrule.yaml").read_text() == module.render(), (
        "run `python deploy/k8s/monitoring/generate.py`"
    )
    _, rule = _monitoring()
    assert rule["metadata"]["namespace"] == "availability"
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]


def test_the_pod_monitor_names_jobs_as_the_alerts_expect():
    monitor, rule = _monitoring()
    deployments = by_kind(kustomize.build(K8S / "base"), "Deployment")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (relabel,) = endpoint["relabelings"]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    exprs = " ".join(r["expr"] for group in rule["spec"]["groups"] for r in group["rules"])
    jobs_in_rules = set(re.findall(r'job="(availability-[a-z]+)"', exprs))
    for alternatives in re.findall(r'job=~"availability-\(([a-z|]+)\)"', exprs):
        jobs_in_rules |= {f"availability-{name}" for name in alternatives.split("|")}
    assert len(jobs_in_rules) == 4, jobs_in_rules
    produced = set()
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        # Prometheus relabelling: a full-match regex on the source label, then the replacement
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        match = re.fullmatch(relabel["regex"], component)
        assert match, f"{component} is not relabelled"
        produced.add(match.expand(relabel["replacement"].replace("$1", r"\1")))
    assert jobs_in_rules == produced
