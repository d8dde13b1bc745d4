"""The metric catalogue, the alert rules and the dashboards agree with the code: every metric the code
defines is in the metrics reference page with its type and labels, every expression uses only catalogued
metrics, promtool accepts the rules and their unit tests pass; and the phase and stagnation rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.metric_defs import ROOT, metric_defs
from trainer.phase import PHASES, phase_of, stagnant_cycles

PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "histogram_quantile",
    "time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "deriv",
    "clamp_min",
    "clamp_max",
    "topk",
    "bottomk",
    "vector",
    "scalar",
    "abs",
    "delta",
    "label_replace",
    "group_left",
    "group_right",
    "sort",
    "sort_desc",
    "offset",
    "bool",
    "le",
    "changes",
    "resets",
    "last_over_time",
    "absent",
}


def catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metrics reference page (docs/reference/metrics.md, generated): name -> (type, labels)."""
    text = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    out = {}
    for line in text.splitlines():
        m = re.match(r"\| `(flywheel_\w+)` \| (\w+) \| [^|]* \| ([^|]*) \| [^|]+ \| .+ \| `[^`]+` \|$", line)
        if m:
            out[m.group(1)] = (m.group(2), tuple(x.strip() for x in m.group(3).split(",") if x.strip()))
    return out


def series_names() -> set[str]:
    names = set()
    for d in metric_defs().values():
        names |= d.series()
    return names | {"up"}


def metrics_in(expr: str) -> set[str]:
    """The metric names an expression reads (label names inside braces and function names left out)."""
    bare = re.sub(r"\{[^}]*\}", "", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    bare = re.sub(r'"[^"]*"', "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    return {
        w
        for w in re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b", bare)
        if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", w) and (w.startswith("flywheel_") or w == "up")
    }


def test_every_metric_the_code_defines_is_catalogued_with_its_type_and_labels():
    defs, cat = metric_defs(), catalogue()
    assert len(defs) > 70
    missing = sorted(set(defs) - set(cat))
    assert not missing, f"not in the metrics reference page: {missing} (run `python -m flywheel.reference`)"
    stale = sorted(set(cat) - set(defs))
    assert not stale, f"catalogued but defined nowhere: {stale}"
    for name, d in defs.items():
        assert cat[name] == (d.kind, d.labels), name
        assert d.help, f"{name} has no help text"
        assert not {"user_id", "request_id", "prompt", "response", "session_id", "email"} & set(d.labels), name


def test_alert_rules_use_only_catalogued_metrics_and_cover_the_issue():
    import yaml

    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    known = series_names()
    for alert, expr in exprs.items():
        used = metrics_in(expr)
        assert used, (alert, expr)
        assert used <= known, (alert, used - known)
    diagnoses = {r["labels"].get("diagnosis") for g in rules["groups"] for r in g["rules"]}
    assert {"filter_too_strict", "review_backed_up", "feedback_too_sparse", "quality_flat"} <= diagnoses
    assert {"FlywheelAcceptanceDrop", "FlywheelDeadLetters", "FlywheelNoCandidates", "FlywheelConsumerLag"} <= set(
        exprs
    )
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert {j["job_name"] for j in config["scrape_configs"]} == {
        "flywheel-worker",
        "flywheel-review",
        "flywheel-datasets",
        "flywheel-trainer",
    }


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/bootstrap.sh installs Debian's prometheus)",
)
def test_promtool_checks_the_config_and_rules_and_their_unit_tests_pass():
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts_test.yml").read_text()))
    import yaml

    rules = {r["alert"] for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert rules <= tested, f"alerts without a promtool test: {sorted(rules - tested)}"


def dashboards() -> list[Path]:
    return sorted((GRAFANA / "dashboards").glob("*.json"))


def panel_exprs(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            out.append(node["expr"])
        for v in node.values():
            out += panel_exprs(v)
    elif isinstance(node, list):
        for v in node:
            out += panel_exprs(v)
    return out


def test_dashboards_query_only_catalogued_metrics():
    boards = dashboards()
    assert {p.stem for p in boards} >= {"velocity", "gate", "review", "datasets", "ab"}
    known = series_names()
    for path in boards:
        board = json.loads(path.read_text())
        exprs = panel_exprs(board)
        assert len(exprs) >= 5, path.name
        for expr in exprs:
            used = metrics_in(expr)
            assert used, (path.name, expr)
            assert used <= known, (path.name, expr, used - known)


def test_phase_follows_the_seeds_table():
    assert [p for p, _ in PHASES] == ["cold_start", "bootstrap", "acceleration", "maturity"]
    assert phase_of(None) == "cold_start" and phase_of(0.65) == "cold_start"
    assert phase_of(0.70) == "bootstrap" and phase_of(0.85) == "acceleration" and phase_of(0.93) == "maturity"


def test_stagnant_cycles_count_the_latest_run_without_improvement():
    def model(t, delta, kind="candidate"):
        return {"event_type": kind, "created_at": t, "deltas": {"overall": delta}}

    assert stagnant_cycles([]) == 0
    assert (
        stagnant_cycles(
            [
                model(3, 0.0, "rejected"),
                model(1, 0.1),
                model(2, -0.01, "rejected"),
                {"event_type": "bootstrap", "created_at": 0},
            ]
        )
        == 2
    )
    assert stagnant_cycles([model(1, 0.0), model(2, 0.02)]) == 0
