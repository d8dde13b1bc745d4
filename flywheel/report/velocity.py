"""The velocity report's content (pure): one row per training cycle, the seed's Section 06 figures.

Built from what the flywheel's own topics record: the dataset-ready events (window, records, the
gate's decisions and passes in the window), the models events (cold start, each cycle's candidate
with its golden-set quality, delta and time to improvement, rollout decisions), reviewers'
verdicts (counted by their candidate's window) and acceptance per model version per window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

from flywheel.report.growth import SATURATED, Growth, growth
from flywheel.report.growth import diagnosis as growth_diagnosis
from trainer.phase import phase_of

ROLLOUT_ENDS = {"rollout_promote": "promoted", "rollout_rollback": "rolled_back", "rollout_retire": "retired"}


@dataclass
class CycleRow:
    cycle: int
    dataset_id: str
    window_start: int
    collected: int  # the gate's decisions in the window
    passed: int
    reviewed: int  # verdicts on candidates of the window
    records: int  # training records in the dataset (SFT and preference)
    outcome: str = "pending"  # candidate | rejected | refused | pending (not trained yet)
    version: str = ""
    quality: float | None = None  # the candidate's golden-set score
    incumbent_quality: float | None = None
    delta: float | None = None
    time_to_improvement_s: float | None = None
    rollout: str = ""  # testing | promoted | rolled_back | retired
    production_quality: float | None = None  # after this cycle
    phase: str = ""

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.collected if self.collected else None

    def to_dict(self) -> dict:
        return {**asdict(self), "pass_rate": self.pass_rate}


@dataclass
class Velocity:
    cycles: list[CycleRow]
    cold_start: dict | None  # {"version", "quality"} of the bootstrap model
    production: str | None
    production_quality: float | None
    phase: str
    acceptance: dict[str, list[tuple[int, float, int]]] = field(
        default_factory=dict
    )  # version -> (window start, ratio, n)
    diagnosis: list[str] = field(default_factory=list)
    series: dict[str, dict[str, list[tuple[float, float]]]] = field(
        default_factory=dict
    )  # from Prometheus: title -> lines
    windows: list[tuple[int, int, int]] = field(
        default_factory=list
    )  # complete windows: (start, requests, distinct users)
    growth: list[Growth] = field(default_factory=list)  # quality, requests, users

    def to_dict(self) -> dict:
        return {
            "phase": self.phase,
            "series": self.series,
            "production": self.production,
            "production_quality": self.production_quality,
            "cold_start": self.cold_start,
            "diagnosis": self.diagnosis,
            "cycles": [c.to_dict() for c in self.cycles],
            "windows": [{"window_start": t, "requests": n, "users": u} for t, n, u in self.windows],
            "growth": [g.to_dict() for g in self.growth],
            "acceptance": {
                v: [{"window_start": t, "acceptance": a, "requests": n} for t, a, n in rows]
                for v, rows in self.acceptance.items()
            },
        }


def window_of(t: int, window_ms: int) -> int:
    return t // window_ms * window_ms


def build(
    ready: Iterable[Mapping],
    models: Iterable[Mapping],
    verdict_times: Iterable[int],
    acceptance: Mapping[tuple[str, int], tuple[int, int]],
    window_ms: int,
    windows: Mapping[int, tuple[int, int]] | None = None,
) -> Velocity:
    """`ready`: dataset-ready events; `models`: models events in log order; `verdict_times`: the event time of
    every verdict's candidate; `acceptance`: (version, window start) -> (requests, accepted); `windows`:
    complete event-time windows' start -> (requests, distinct users)."""
    reviewed: dict[int, int] = {}
    for t in verdict_times:
        reviewed[window_of(t, window_ms)] = reviewed.get(window_of(t, window_ms), 0) + 1
    # one cycle per window: a window sealed again (an erasure re-seals it under a new id) is the same
    # cycle, shown with its newest version's counts; a models event about either version lands on it
    rows: dict[str, CycleRow] = {}
    by_window: dict[int, CycleRow] = {}
    for r in sorted(ready, key=lambda r: (r["window_start"], r.get("sealed_at") or 0)):
        counts = r.get("counts") or {}
        row = CycleRow(
            0,
            r["dataset_id"],
            r["window_start"],
            counts.get("window.decisions", 0),
            counts.get("window.passed", 0),
            reviewed.get(window_of(r["window_start"], window_ms), 0),
            counts.get("records", 0),
        )
        earlier = by_window.get(r["window_start"])
        if earlier is not None:  # the newest version's figures, on the row that any version's models events reach
            for name in ("dataset_id", "collected", "passed", "records"):
                setattr(earlier, name, getattr(row, name))
            row = earlier
        by_window[r["window_start"]] = rows[r["dataset_id"]] = row
    quality: dict[str, float] = {}
    by_version: dict[str, CycleRow] = {}
    cold_start, production = None, None
    # production after each models event, and each cycle's last event (its outcome or its rollout's end)
    production_after: list[str | None] = []
    last_event: dict[int, int] = {}  # id(row) -> index into production_after
    for e in models:
        kind, version = e["event_type"], e.get("version") or ""
        overall = (e.get("metrics") or {}).get("overall")
        if overall is not None and version:
            quality[version] = overall
        if kind == "bootstrap":
            cold_start, production = {"version": version, "quality": overall}, version
        elif kind in ("candidate", "rejected", "refused") and e.get("dataset_id") in rows:
            row = rows[e["dataset_id"]]
            row.outcome, row.version, row.quality = kind, version, overall if kind != "refused" else None
            row.incumbent_quality = (e.get("incumbent_metrics") or {}).get("overall")
            row.delta = (e.get("deltas") or {}).get("overall")
            tti = e.get("time_to_improvement_ms")
            row.time_to_improvement_s = tti / 1000 if tti else None
            row.rollout = "testing" if kind == "candidate" else ""
            by_version[version] = row
        elif kind == "rollout_started" and not production:
            production = e.get("base_model") or production
        elif kind in ROLLOUT_ENDS and version in by_version:
            by_version[version].rollout = ROLLOUT_ENDS[kind]
            if kind == "rollout_promote":
                production = version
            elif kind == "rollout_rollback":
                production = e.get("base_model") or production
        production_after.append(production)
        if version in by_version and kind in ("candidate", "rejected", "refused", *ROLLOUT_ENDS):
            last_event[id(by_version[version])] = len(production_after) - 1
    cycles = sorted(by_window.values(), key=lambda r: r.window_start)
    # a cycle's production quality is production's once it and every earlier cycle had their last event: in
    # window order it never goes back in time. (Production as of the cycle's own outcome did: a cycle trained
    # while the previous cycle's candidate was still in its A/B test showed the production before that
    # candidate's promotion, and its phase fell back, "bootstrap" after "maturity".)
    current = cold_start["quality"] if cold_start else None
    reached = -1
    for i, row in enumerate(cycles, 1):
        row.cycle = i
        reached = max(reached, last_event.get(id(row), -1))
        now = quality.get(production_after[reached] or "") if reached >= 0 else None
        if now is not None:
            current = now
        row.production_quality = current
        row.phase = phase_of(current)
    acc: dict[str, list[tuple[int, float, int]]] = {}
    for (version, start), (n, accepted) in sorted(acceptance.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if n:
            acc.setdefault(version, []).append((start, accepted / n, n))
    production_quality = quality.get(production or "")
    v = Velocity(cycles, cold_start, production, production_quality, phase_of(production_quality), acc)
    v.windows = [(t, n, u) for t, (n, u) in sorted((windows or {}).items())]
    quality = [cold_start["quality"] if cold_start else None] + [
        c.production_quality for c in cycles if c.outcome != "pending"
    ]
    v.growth = [
        growth("quality", quality, ceiling=SATURATED),
        growth("requests", [n for _, n, _ in v.windows]),
        growth("users", [u for _, _, u in v.windows]),
    ]
    v.diagnosis = diagnose(v)
    return v


def diagnose(v: Velocity) -> list[str]:
    """The seed's stagnation causes, where the figures show them."""
    out = []
    trained = [c for c in v.cycles if c.delta is not None]
    if len(trained) >= 2 and all(c.delta <= 0 for c in trained[-2:]):
        out.append("quality flat: no positive delta in the last two cycles")
    recent = [c for c in v.cycles[-2:] if c.collected]
    if recent and all((c.pass_rate or 0) < 0.1 for c in recent):
        out.append("filter too strict: under 10 % of decisions pass")
    if recent and all(c.records < 100 for c in recent):
        out.append("datasets too small: under 100 records per cycle")
    return out + growth_diagnosis(v.growth)
