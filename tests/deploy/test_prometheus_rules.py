"""The shipped Prometheus configuration: promtool checks it and unit-tests every alert."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
RULES = sorted((ROOT / "config" / "prometheus" / "rules").glob("*.yml"))
TESTS = sorted((ROOT / "tests" / "prometheus").glob("*.test.yml"))
ALERTS = ROOT / "config" / "prometheus" / "rules" / "telemetryd-alerts.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_PREFIX = "https://github.com/telemetryd/telemetryd/blob/main/docs/runbooks.md#"


def promtool(*args: str) -> None:
    """Run promtool; fail the test with its output unless it exits 0."""
    binary = require_binary("promtool", "prometheus")
    done = subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_config_and_its_rule_files_check() -> None:
    """`promtool check config` accepts the shipped prometheus.yml together with the rule files it references."""
    promtool("check", "config", str(CONFIG.relative_to(ROOT)))


@pytest.mark.parametrize("rules", RULES, ids=lambda p: p.name)
def test_rules_check(rules: Path) -> None:
    """`promtool check rules` accepts each shipped rule file under config/prometheus/rules."""
    promtool("check", "rules", str(rules.relative_to(ROOT)))


@pytest.mark.parametrize("unit", TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(unit: Path) -> None:
    """Each tests/prometheus/*.test.yml passes `promtool test rules`."""
    promtool("test", "rules", str(unit.relative_to(ROOT)))


def test_every_alert_has_a_unit_test() -> None:
    """Every alert in telemetryd-alerts.yml appears with non-empty exp_alerts in some promtool unit test."""
    tested = {
        case["alertname"]
        for unit in TESTS
        for group in yaml.safe_load(unit.read_text()).get("tests", [])
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = sorted({rule["alert"] for rule in alert_rules()} - tested)
    assert not missing, f"alerts never shown firing in tests/prometheus: {missing}"


def test_every_alert_is_labelled_and_has_a_runbook_section() -> None:
    """Every alert has a known severity, summary, description and a runbook_url to its own `## Name` section."""
    runbooks = RUNBOOKS.read_text()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), name
        assert rule["annotations"]["runbook_url"] == RUNBOOK_PREFIX + name.lower(), name
        assert f"\n## {name}\n" in runbooks, f"docs/runbooks.md has no `## {name}` section"
