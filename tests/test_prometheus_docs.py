"""
The shipped Prometheus alerting rules and Grafana dashboard (docs/, #13): promtool accepts the
rules, the alerts fire on the series Strata exports (promtool's rule unit tests), and every
metric either file names is one Strata exports.  promtool comes from Debian's ``prometheus``
package (.ci/run installs it); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from strata_twisted.core.metrics import Metrics, StoreGauges
from strata_twisted.storage.memory import MemoryStore

DOCS = Path(__file__).resolve().parent.parent / "docs"
RULES = DOCS / "prometheus" / "strata-alerts.yml"
DASHBOARD = DOCS / "grafana" / "strata-dashboard.json"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/run installs it)")
    return path


def exported_names() -> set[str]:
    """Every series name Strata's registry can export (counters with their _total)."""
    metrics = Metrics()
    store = MemoryStore(Clock())
    metrics.watch(StoreGauges(Clock(), store, store, store))
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    names.update(f.name for f in StoreGauges(Clock(), store, store, store).describe())
    return names


def named_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b(?:strata|process|python)_[a-z_]+", text))


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # down.test: its primary stops answering at minute 5.
      - series: 'strata_primary_up{{domain="down.test"}}'
        values: '1x4 0x20'
      # stuck.test: mail waits, the primary answers, nothing is delivered.
      - series: 'strata_primary_up{{domain="stuck.test"}}'
        values: '1x60'
      - series: 'strata_queue_messages{{domain="stuck.test", state="queued"}}'
        values: '7x60'
      # fine.test: mail waits but the relay delivers.
      - series: 'strata_primary_up{{domain="fine.test"}}'
        values: '1x60'
      - series: 'strata_queue_messages{{domain="fine.test", state="queued"}}'
        values: '3x60'
      - series: 'strata_relay_deliveries_total{{domain="fine.test", result="delivered"}}'
        values: '0+2x60'
      - series: 'strata_queue_oldest_message_age_seconds{{domain="down.test"}}'
        values: '86000+60x60'
    alert_rule_test:
      - eval_time: 4m
        alertname: StrataPrimaryDown
        exp_alerts: []
      - eval_time: 8m
        alertname: StrataPrimaryDown
        exp_alerts:
          - exp_labels: {{severity: warning, domain: down.test}}
            exp_annotations:
              summary: "Primary mail server of down.test is down"
              description: "Strata's monitor gets no answer from the primary of down.test; \\
                mail is queued in Strata until it is back."
      - eval_time: 20m
        alertname: StrataNoDrainProgress
        exp_alerts: []  # pending: not yet 30 minutes
      - eval_time: 45m
        alertname: StrataNoDrainProgress
        exp_alerts:
          - exp_labels: {{severity: critical, domain: stuck.test, state: queued}}
            exp_annotations:
              summary: "Queue of stuck.test does not drain"
              description: "7 messages wait for stuck.test and its primary is up, but nothing \\
                has been delivered to it for 30 minutes."
      - eval_time: 12m
        alertname: StrataQueueTooOld
        exp_alerts: []  # over a day since 7m, not yet for 10m
      - eval_time: 30m
        alertname: StrataQueueTooOld
        exp_alerts:
          - exp_labels: {{severity: warning, domain: down.test}}
            exp_annotations:
              summary: "Mail for down.test has waited over a day"
              description: "The oldest queued or held message for down.test is 1d 0h 23m 20s old."
"""


def test_the_alerts_fire_on_strata_series(tmp_path: Path) -> None:
    tests = tmp_path / "strata-alerts-test.yml"
    tests.write_text(ALERT_TESTS.format(rules=json.dumps(str(RULES))))
    result = subprocess.run([promtool(), "test", "rules", str(tests)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_names()
    rules = named_metrics(RULES.read_text())
    assert {"strata_primary_up", "strata_queue_messages"} <= rules
    assert rules <= exported, rules - exported
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = named_metrics("\n".join(exprs))
    wanted = {
        "strata_queue_messages", "strata_queue_oldest_message_age_seconds", "strata_primary_up",
        "strata_outage_active", "strata_relay_deliveries_total", "strata_logins_total",
    }  # fmt: skip
    assert wanted <= used
    assert used <= exported, used - exported
