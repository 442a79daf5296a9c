"""deploy/prometheus/alerts.yml: `promtool check rules`, `promtool test rules` over
deploy/prometheus/tests/*.yml, every alert fired by at least one of those tests, and every
runbook_url pointing at a heading that exists in docs/runbooks/."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.support import DEPLOY, ROOT

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; .ci/run does it)"
)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_promtool
def test_promtool_checks_the_rules():
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    assert RULE_TESTS
    result = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_broken_expectation_fails_promtool(tmp_path):
    # The unit tests can fail: the same test with a wrong expected label does.
    test = yaml.safe_load((PROMETHEUS / "tests" / "ingest.yml").read_text())
    test["rule_files"] = [str(RULES)]
    test["tests"] = test["tests"][:1]
    test["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["partition"] = "4"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(test))
    assert _promtool("test", "rules", str(path)).returncode != 0


def test_every_alert_is_fired_by_a_unit_test():
    fired = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = {a["alert"] for a in alerts()} - fired
    assert not missing, f"alerts no promtool test sees firing: {sorted(missing)}"


def _anchors(markdown: str) -> set[str]:
    # GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens.
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists():
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert alert["annotations"]["summary"], name
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.startswith("docs/runbooks/"), f"{name}: {url}"
        page = ROOT / path
        assert page.is_file(), f"{name}: {path} does not exist"
        if anchor:
            assert anchor in _anchors(page.read_text()), f"{name}: no heading #{anchor} in {path}"
