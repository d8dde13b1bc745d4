"""Every metric the code defines, read from the source (names, types, labels, help): what the
README's catalogue, the alert rules and the dashboards are checked against."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"Counter": "counter", "CounterMetricFamily": "counter", "Gauge": "gauge", "GaugeMetricFamily": "gauge",
         "Histogram": "histogram"}
SOURCES = ("flywheel", "streams", "trainer")


@dataclass(frozen=True)
class MetricDef:
    name: str  # as exposed: counters end in _total
    kind: str
    labels: tuple[str, ...]
    help: str
    path: str

    def series(self) -> set[str]:
        """Every series name Prometheus stores for it."""
        if self.kind == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def _labels(call: ast.Call) -> tuple[str, ...]:
    node = call.args[2] if len(call.args) > 2 else next((k.value for k in call.keywords if k.arg in ("labels", "labelnames")), None)
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(e.value for e in node.elts if isinstance(e, ast.Constant))
    return ()


def _help(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    return ""


def metric_defs() -> dict[str, MetricDef]:
    out: dict[str, MetricDef] = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                first = node.args[0]
                if fn not in KINDS or not (isinstance(first, ast.Constant) and str(first.value).startswith("flywheel_")):
                    continue
                kind, name = KINDS[fn], first.value
                if kind == "counter" and not name.endswith("_total"):
                    name += "_total"
                out[name] = MetricDef(name, kind, _labels(node), _help(node.args[1]) if len(node.args) > 1 else "",
                                      str(path.relative_to(ROOT)))
    return out
