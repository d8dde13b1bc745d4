"""The velocity report from constructed topic contents: cycles in window order with their quality,
delta, rollout outcome and phase; acceptance per version; stagnation diagnosed; text, JSON and
an HTML page whose plots hold the figures."""

from __future__ import annotations

import json
import re

import pytest

from flywheel.report import render
from flywheel.report.velocity import build

W = 7 * 86_400_000


def ready(i: int, records: int, decisions: int, passed: int) -> dict:
    return {
        "dataset_id": f"ds-{i}",
        "window_start": i * W,
        "counts": {"records": records, "window.decisions": decisions, "window.passed": passed, "sft.train": records},
    }


def cycle_event(kind: str, version: str, i: int, quality: float, delta: float, t: int) -> dict:
    return {
        "event_type": kind,
        "version": version,
        "dataset_id": f"ds-{i}",
        "metrics": {"overall": quality},
        "incumbent_metrics": {"overall": quality - delta},
        "deltas": {"overall": delta},
        "created_at": t,
        "time_to_improvement_ms": 20 * 86_400_000 if kind == "candidate" else None,
    }


def velocity():
    models = [
        {"event_type": "bootstrap", "version": "v0001", "metrics": {"overall": 0.62}, "created_at": 1},
        cycle_event("candidate", "v0002", 0, 0.72, 0.10, 10),
        {"event_type": "rollout_started", "version": "v0002", "base_model": "v0001", "created_at": 11},
        {"event_type": "rollout_promote", "version": "v0002", "base_model": "v0001", "created_at": 12},
        cycle_event("candidate", "v0003", 1, 0.70, -0.02, 20),  # worse, yet the trainer's gate let it through
        {"event_type": "rollout_rollback", "version": "v0003", "base_model": "v0002", "created_at": 22},
        cycle_event("rejected", "v0004", 2, 0.71, -0.01, 30),
    ]
    # given out of order: the report sorts by window and by creation time
    return build(
        [
            ready(2, 1300, 3000, 1900),
            ready(0, 900, 2000, 1200),
            ready(1, 1100, 2500, 1500),
            ready(3, 1200, 2600, 1700),
        ],
        models,
        [5, 6, W + 1],
        {("v0001", 0): (200, 120), ("v0002", W): (300, 210), ("v0001", W): (100, 60)},
        W,
    )


def test_cycles_carry_quality_delta_rollout_and_phase():
    v = velocity()
    assert [c.dataset_id for c in v.cycles] == ["ds-0", "ds-1", "ds-2", "ds-3"]
    c1, c2, c3, c4 = v.cycles
    assert (c1.cycle, c1.collected, c1.passed, c1.records, c1.reviewed) == (1, 2000, 1200, 900, 2)
    assert c1.pass_rate == 0.6 and c1.quality == 0.72 and c1.delta == 0.10 and c1.time_to_improvement_s == 20 * 86400
    assert c1.rollout == "promoted" and c1.production_quality == 0.72 and c1.phase == "bootstrap"
    assert c2.rollout == "rolled_back" and c2.production_quality == 0.72  # production stayed v0002
    assert c3.outcome == "rejected" and c3.rollout == "" and c3.production_quality == 0.72
    assert c4.outcome == "pending" and c4.quality is None and c4.phase == "bootstrap"
    assert v.production == "v0002" and v.production_quality == 0.72 and v.phase == "bootstrap"
    assert v.cold_start == {"version": "v0001", "quality": 0.62}
    assert v.acceptance["v0001"] == [(0, 0.6, 200), (W, 0.6, 100)] and v.acceptance["v0002"] == [(W, 0.7, 300)]
    assert v.diagnosis == ["quality flat: no positive delta in the last two cycles"]


def test_a_window_sealed_again_is_one_cycle_with_its_newest_figures():
    """An erasure re-seals a window under a new id and announces it again: still one cycle, counted
    once, with the new version's figures and the training outcome of the version that was trained."""
    resealed = {**ready(0, 890, 2000, 1190), "dataset_id": "ds-0-erased", "sealed_at": 5}
    models = [
        {"event_type": "bootstrap", "version": "v0001", "metrics": {"overall": 0.62}, "created_at": 1},
        cycle_event("candidate", "v0002", 0, 0.72, 0.10, 10),
    ]
    v = build([resealed, {**ready(0, 900, 2000, 1200), "sealed_at": 1}, ready(1, 1100, 2500, 1500)], models, [], {}, W)
    assert [(c.cycle, c.dataset_id, c.records, c.passed) for c in v.cycles] == [
        (1, "ds-0-erased", 890, 1190),
        (2, "ds-1", 1100, 1500),
    ]
    assert v.cycles[0].outcome == "candidate" and v.cycles[0].quality == 0.72


def test_text_json_and_page():
    v = velocity()
    text = render.text(v)
    assert "phase bootstrap, production v0002 (golden 72.0%)" in text and "cold start: v0001 at 62.0%" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("1 "))
    assert "2,000" in row and "60.0%" in row and "+10.0" in row and "20.0d" in row and "promoted" in row
    assert "quality flat" in text
    data = json.loads(json.dumps(v.to_dict()))
    assert data["cycles"][0]["pass_rate"] == 0.6 and data["acceptance"]["v0002"][0]["acceptance"] == 0.7
    page = render.page(v)
    assert page.count("<svg") == 5 and page.count("<polyline") >= 7
    assert all(
        t in page
        for t in (
            "Golden-set quality per cycle",
            "Data volume per cycle",
            "Gate pass rate per cycle",
            "Acceptance per model version",
            "Requests and users per window",
        )
    )
    # the quality plot's candidate line has one point per trained cycle, highest quality highest on the page
    quality_svg = page[page.index("Golden-set quality") : page.index("</svg>", page.index("Golden-set quality"))]
    first = re.search(r'<polyline[^>]*points="([^"]+)"', quality_svg).group(1).split()
    ys = [float(p.split(",")[1]) for p in first]
    assert len(ys) == 3 and ys[0] == min(ys)  # 0.72 at cycle 1 is the top point (SVG y grows downward)


def test_an_empty_flywheel_reports_the_cold_start():
    v = build([], [], [], {}, W)
    assert v.phase == "cold_start" and "no sealed datasets yet" in render.text(v)
    assert "no data yet" in render.page(v)


def test_growth_of_requests_users_and_quality_is_reported_and_diagnosed():
    models = [
        {"event_type": "bootstrap", "version": "v0001", "metrics": {"overall": 0.30}, "created_at": 1},
        cycle_event("candidate", "v0002", 0, 0.60, 0.30, 10),
        {"event_type": "rollout_promote", "version": "v0002", "base_model": "v0001", "created_at": 12},
        cycle_event("candidate", "v0003", 1, 0.95, 0.35, 20),
        {"event_type": "rollout_promote", "version": "v0003", "base_model": "v0002", "created_at": 22},
        cycle_event("rejected", "v0004", 2, 0.95, 0.0, 30),
    ]
    windows = {0: (1000, 100), W: (2000, 100), 2 * W: (4000, 100), 3 * W: (8000, 99)}  # requests double, users do not
    v = build([ready(i, 900, 2000, 1200) for i in range(3)], models, [], {}, W, windows)
    shapes = {g.curve: g.shape for g in v.growth}
    assert shapes == {"quality": "saturated", "requests": "compounding", "users": "flat"}
    assert v.windows == [(0, 1000, 100), (W, 2000, 100), (2 * W, 4000, 100), (3 * W, 8000, 99)]
    assert "users growth flat: -0.3 % a window over 4 windows" in v.diagnosis
    assert "quality saturated at 95 %: expand into adjacent tasks or domains" in v.diagnosis
    assert not any(d.startswith("requests") for d in v.diagnosis)
    text = render.text(v)
    assert "requests 1,000 -> 8,000 over 4 windows, +100.0 % a window: compounding" in text
    data = json.loads(json.dumps(v.to_dict()))
    assert data["windows"][3] == {"window_start": 3 * W, "requests": 8000, "users": 99}
    assert {g["curve"]: g["rate"] for g in data["growth"]}["requests"] == pytest.approx(1.0)
    page = render.page(v)
    growth_svg = page[page.index("Requests and users per window") :]
    assert growth_svg[: growth_svg.index("</svg>")].count("<circle") == 8  # four windows, two curves
    assert "users growth flat" in page and "requests 1,000 -&gt; 8,000" in page


def test_the_arms_chart_takes_in_every_interval_bar_whole():
    """Intervals reach past the highest and lowest quality, and the bars of four arms sit side by side
    around each cycle: every bar is drawn whole, inside the plot, at the scale of the quality lines."""

    def rows(qualities: list[float]) -> list[dict]:
        return [
            {"cycle": i, "quality": q, "low": max(0.0, q - 0.2), "high": min(1.0, q + 0.3), "outcome": "promoted"}
            for i, q in enumerate(qualities)
        ]

    arms = {
        "never_retrained": rows([0.1, 0.1, 0.1]),
        "shipped": rows([0.1, 0.4, 0.6]),
        "no_gate": rows([0.1, 0.35, 0.55]),
        "cold_start_data": rows([0.1, 0.15, 0.2]),
    }
    width, height = 640, 300
    svg = render.arms_chart({"arms": arms}, width=width, height=height)
    bars = [
        tuple(float(v) for v in m)
        for m in re.findall(r'<line x1="([-\d.]+)" x2="[-\d.]+" y1="([-\d.]+)" y2="([-\d.]+)"[^>]*opacity="0.6"', svg)
    ]
    assert len(bars) == 12
    pad_l, pad_r, pad_t, pad_b = 56, 12, 40 + 14, 40  # four arms: one legend line
    for x, y_low, y_high in bars:
        assert pad_l <= x <= width - pad_r, x
        assert pad_t - 0.1 <= y_high <= y_low <= height - pad_b + 0.1, (y_low, y_high)
    # one scale for every bar: pixels per point of quality are the same for all (none is cut at an edge)
    spans = [r["high"] - r["low"] for name in arms for r in arms[name]]
    scales = [(y_low - y_high) / span for (_, y_low, y_high), span in zip(bars, spans)]
    assert max(scales) - min(scales) < 1, scales  # pixels per unit, within the SVG's 0.1 px rounding
    # and the quality lines use it too: the axis' top label is the highest interval end, 90 %
    assert ">90%</text>" in svg


def test_a_cycle_trained_while_the_previous_candidate_is_in_its_ab_test_keeps_the_phase_reached():
    """As in the default demo's run of 2026-12-07 (docs/demo.md): cycle 3 is trained while cycle 2's v0003 is
    still in its A/B test, so the trainer fine-tunes production, v0002, and measures against it (the same
    +17.2 as cycle 2's when both score 54 of 58 items); v0003 is promoted after cycle 3's outcome. Production
    after cycle 3 is v0003: the phase stays "maturity" (it read "bootstrap", production as of cycle 3's own
    outcome, as if production had gone back)."""
    models = [
        {"event_type": "bootstrap", "version": "v0001", "metrics": {"overall": 0.448}, "created_at": 1},
        cycle_event("candidate", "v0002", 0, 0.759, 0.311, 10),
        {"event_type": "rollout_started", "version": "v0002", "base_model": "v0001", "created_at": 11},
        {"event_type": "rollout_promote", "version": "v0002", "base_model": "v0001", "created_at": 12},
        cycle_event("candidate", "v0003", 1, 0.931, 0.172, 20),
        {"event_type": "rollout_started", "version": "v0003", "base_model": "v0002", "created_at": 21},
        cycle_event("candidate", "v0004", 2, 0.931, 0.172, 30),  # from v0002: v0003 is still being tested
        {"event_type": "rollout_promote", "version": "v0003", "base_model": "v0002", "created_at": 32},
        {"event_type": "rollout_started", "version": "v0004", "base_model": "v0003", "created_at": 33},
        cycle_event("rejected", "v0005", 3, 0.966, 0.034, 40),
    ]
    v = build([ready(i, 900, 3500, 1600) for i in range(5)], models, [], {}, W)
    assert [(c.version, c.quality, c.delta) for c in v.cycles[:4]] == [
        ("v0002", 0.759, 0.311),
        ("v0003", 0.931, 0.172),
        ("v0004", 0.931, 0.172),
        ("v0005", 0.966, 0.034),
    ]
    assert [c.production_quality for c in v.cycles] == [0.759, 0.931, 0.931, 0.931, 0.931]
    assert [c.phase for c in v.cycles] == ["bootstrap", "maturity", "maturity", "maturity", "maturity"]
    assert [c.rollout for c in v.cycles[:4]] == ["promoted", "promoted", "testing", ""]
    assert v.production == "v0003" and v.phase == "maturity"
    assert [g.last for g in v.growth if g.curve == "quality"] == [0.931]
