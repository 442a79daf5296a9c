"""Writes prometheusrule.yaml (a Prometheus Operator PrometheusRule) from
deploy/prometheus/alerts.yml, so Kubernetes and compose run the same rules:
`python deploy/k8s/monitoring/generate.py` after changing the rules
(tests/deploy/test_k8s.py checks they are in sync)."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "prometheus" / "alerts.yml"


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # multi-line PromQL stays readable as a block, as in alerts.yml
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def render() -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "availability", "labels": {"app.kubernetes.io/name": "availability"}},
        "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]},
    }
    header = "# Generated from deploy/prometheus/alerts.yml by generate.py: do not edit here.\n"
    return header + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    (HERE / "prometheusrule.yaml").write_text(render())
    print(f"wrote {HERE / 'prometheusrule.yaml'}")
