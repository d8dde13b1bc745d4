"""Every metric the code defines, read from the source (names, types, labels, help): what the
metrics reference page, the alert rules and the dashboards are checked against. The reading lives
in `flywheel.reference`, which also writes the page."""

from __future__ import annotations

from flywheel.reference import ROOT, MetricDef, metric_defs

__all__ = ["ROOT", "MetricDef", "metric_defs"]
