"""The velocity report as a text table and as a self-contained HTML page with SVG plots (no plotting
library, nothing fetched: it opens offline)."""

from __future__ import annotations

import html
import time
from typing import Sequence

from flywheel.report.velocity import Velocity

COLUMNS = (
    "cycle",
    "window",
    "collected",
    "passed",
    "pass",
    "reviewed",
    "records",
    "quality",
    "delta",
    "improved in",
    "outcome",
    "rollout",
    "phase",
)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def _days(s: float | None) -> str:
    return "-" if s is None else f"{s / 86400:.1f}d"


def _date(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def rows(v: Velocity) -> list[list[str]]:
    return [
        [
            str(c.cycle),
            _date(c.window_start),
            f"{c.collected:,}",
            f"{c.passed:,}",
            _pct(c.pass_rate),
            f"{c.reviewed:,}",
            f"{c.records:,}",
            _pct(c.quality),
            _signed(c.delta),
            _days(c.time_to_improvement_s),
            c.outcome,
            c.rollout or "-",
            c.phase,
        ]
        for c in v.cycles
    ]


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])


def text(v: Velocity) -> str:
    out = [
        f"flywheel velocity: phase {v.phase}, production {v.production or '-'} (golden {_pct(v.production_quality)})"
    ]
    if v.cold_start:
        out.append(f"cold start: {v.cold_start['version']} at {_pct(v.cold_start['quality'])}")
    if v.series:
        for title, lines in v.series.items():
            out.append(
                f"{title}: "
                + (", ".join(f"{name} {pts[-1][1]:.3g}" for name, pts in lines.items() if pts) or "no data")
            )
    else:
        out += ["", table(COLUMNS, rows(v)) if v.cycles else "no sealed datasets yet"]
    if v.acceptance:
        out += ["", "acceptance per model version (accepted or copied per request, by window):"]
        for version, points in v.acceptance.items():
            out.append(f"  {version}: " + ", ".join(f"{_date(t)} {_pct(a)} (n={n:,})" for t, a, n in points))
    if v.growth:
        out += [
            "",
            "growth (a healthy flywheel compounds; quality per cycle, requests and users per complete window):",
        ]
        out += [f"  {line}" for line in growth_lines(v)]
    out += ["", "diagnosis: " + ("; ".join(v.diagnosis) if v.diagnosis else "no stagnation signs")]
    return "\n".join(out) + "\n"


def growth_lines(v: Velocity) -> list[str]:
    lines = []
    for g in v.growth:
        value = _pct if g.curve == "quality" else (lambda x: "-" if x is None else f"{x:,.0f}")
        rate = "" if g.rate is None else f", {100 * g.rate:+.1f} % a {g.period}"
        lines.append(
            f"{g.curve:<8} {value(g.first)} -> {value(g.last)} over {g.points} {g.period}s{rate}: {g.shape.replace('_', ' ')}"
        )
    return lines


class _Frame:
    """The plot area's scales, shared by a chart and what is drawn over it (the arms' interval bars), so the
    two cannot disagree. The y axis runs from 0 (or the lowest value, if negative) to the highest, and
    takes in `y_extra` (values drawn over the lines, such as interval ends), so nothing is clipped;
    `inset` keeps pixels free inside each end of the x axis for marks drawn beside a point."""

    def __init__(
        self,
        points: Sequence[tuple[float, float]],
        n_series: int,
        width: int,
        height: int,
        y_extra: Sequence[float] = (),
        inset: float = 0.0,
    ):
        self.pad_l, self.pad_r, self.pad_b = 56, 12, 40
        self.pad_t = 40 + 14 * ((n_series + PER_ROW - 1) // PER_ROW)
        self.width, self.height, self.inset = width, height, inset
        xs, ys = [p[0] for p in points], [p[1] for p in points] + list(y_extra)
        self.x0, self.x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        low = min(0.0, min(ys))
        self.y0, self.y1 = low, max(ys) if max(ys) > low else low + 1

    def sx(self, x: float) -> float:
        span = self.width - self.pad_l - self.pad_r - 2 * self.inset
        return self.pad_l + self.inset + (x - self.x0) / (self.x1 - self.x0) * span

    def sy(self, y: float) -> float:
        return self.height - self.pad_b - (y - self.y0) / (self.y1 - self.y0) * (self.height - self.pad_t - self.pad_b)


PER_ROW = 4  # legend entries per line


def svg_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    y_label: str = "",
    percent: bool = False,
    width: int = 560,
    height: int = 260,
    frame: _Frame | None = None,
) -> str:
    """A line chart: one polyline (with points) per series, x and y scaled to the data (or to `frame`)."""
    points = [p for s in series.values() for p in s]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
    ]
    if not points:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">no data yet</text></svg>')
        return "".join(out)
    f = frame or _Frame(points, len(series), width, height)
    x0, x1, y0, y1, sx, sy = f.x0, f.x1, f.y0, f.y1, f.sx, f.sy
    pad_l, pad_r, pad_b = f.pad_l, f.pad_r, f.pad_b
    fmt = (lambda y: f"{100 * y:.0f}%") if percent else (lambda y: f"{y:,.0f}" if abs(y) >= 10 else f"{y:.2f}")
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
            f'<text x="{pad_l - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="11">{fmt(y)}</text>'
        )
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        out.append(
            f'<text x="{sx(x):.1f}" y="{height - pad_b + 14}" text-anchor="middle" font-size="11">{x:,.3g}</text>'
        )
    out.append(
        f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" font-size="11">{html.escape(y_label)}</text>'
    )
    for i, (name, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        out.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"><title>{html.escape(name)}</title></polyline>'
        )
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in s]
        out.append(
            f'<text x="{pad_l + 8 + 125 * (i % PER_ROW)}" y="{36 + 14 * (i // PER_ROW)}" font-size="11" '
            f'fill="{color}">&#9632; {html.escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def plots(v: Velocity) -> list[str]:
    if v.series:  # from Prometheus: each title's lines over days before now
        return [
            svg_chart(title, lines, "days before now", percent="records" not in title)
            for title, lines in v.series.items()
        ]
    cycles = v.cycles
    quality = {
        "candidate": [(c.cycle, c.quality) for c in cycles if c.quality is not None],
        "production": [(c.cycle, c.production_quality) for c in cycles if c.production_quality is not None],
    }
    if v.cold_start and v.cold_start.get("quality") is not None:
        # the control: production never retrained scores the cold start's quality at every cycle
        quality["never retrained (control)"] = [
            (0, v.cold_start["quality"]),
            (max(1, len(cycles)), v.cold_start["quality"]),
        ]
    volume = {
        "collected": [(c.cycle, c.collected) for c in cycles],
        "passed": [(c.cycle, c.passed) for c in cycles],
        "dataset records": [(c.cycle, c.records) for c in cycles],
    }
    passing = {"pass rate": [(c.cycle, c.pass_rate) for c in cycles if c.pass_rate is not None]}
    t0 = min([t for pts in v.acceptance.values() for t, _, _ in pts] + [t for t, _, _ in v.windows], default=0)
    weeks = lambda t: (t - t0) / 86_400_000 / 7  # noqa: E731
    acceptance = {version: [(weeks(t), a) for t, a, _ in pts] for version, pts in v.acceptance.items()}
    growth = {
        "requests": [(weeks(t), n) for t, n, _ in v.windows],
        "distinct users": [(weeks(t), u) for t, _, u in v.windows],
    }
    return [
        svg_chart("Golden-set quality per cycle", quality, "cycle", percent=True),
        svg_chart("Data volume per cycle", volume, "cycle"),
        svg_chart("Gate pass rate per cycle", passing, "cycle", percent=True),
        svg_chart("Acceptance per model version", acceptance, "weeks of event time", percent=True),
        svg_chart("Requests and users per window", growth, "weeks of event time"),
    ]


def page(v: Velocity) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(v))
    diagnosis = "".join(f"<li>{html.escape(d)}</li>" for d in v.diagnosis) or "<li>no stagnation signs</li>"
    growth = "".join(f"<li>{html.escape(line)}</li>" for line in growth_lines(v)) or "<li>no figures yet</li>"
    cold = (
        f"; cold start {html.escape(v.cold_start['version'])} at {_pct(v.cold_start['quality'])}"
        if v.cold_start
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flywheel velocity</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}}.plots{{display:flex;flex-wrap:wrap;gap:16px}}</style>
</head><body>
<h1>Flywheel velocity</h1>
<p>Phase <b>{html.escape(v.phase)}</b>; production {html.escape(v.production or "-")} at {_pct(v.production_quality)} on the golden set{cold}.</p>
<div class="plots">{"".join(plots(v))}</div>
<h2>Cycles</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Growth</h2><ul>{growth}</ul>
<h2>Diagnosis</h2><ul>{diagnosis}</ul>
</body></html>
"""


# ---- the real-model demo's arms (flywheel/demo/real.py): golden quality per arm per cycle, with intervals

ARM_COLUMNS = ("cycle", "arm", "golden", "95% interval", "outcome", "candidate", "trained on", "steps")


def _arm_label(name: str) -> str:
    from flywheel.demo.real import ARM_LABELS

    return ARM_LABELS.get(name, name)


def arm_rows(report: dict) -> list[list[str]]:
    out = []
    cycles = max(len(rows) for rows in report["arms"].values())
    for i in range(cycles):
        for name, rows in report["arms"].items():
            if i >= len(rows):
                continue
            r, c = rows[i], rows[i].get("candidate") or {}
            out.append(
                [
                    str(r["cycle"]),
                    _arm_label(name),
                    _pct(r["quality"]),
                    f"{_pct(r['low'])} - {_pct(r['high'])}",
                    r["outcome"],
                    _pct(c.get("quality")) if c else "-",
                    f"{c['examples']}+{c['replayed']}" if c else "-",
                    str(c.get("steps", "-")) if c else "-",
                ]
            )
    return out


def arms_text(report: dict) -> str:
    out = [
        f"real-model flywheel: {report['model']}, {report['golden_items']} golden items about unseen inputs "
        f"({', '.join(report['golden_tasks'])}), {report['requests']:,} requests, {report['seconds']:,.0f} s",
        "",
        table(ARM_COLUMNS, arm_rows(report)),
        "",
        "the shipped arm at the last cycle against each control (paired bootstrap over golden items, 95 %):",
    ]
    for c in report["comparisons"]:
        out.append(
            f"  vs {_arm_label(c['arm'])}: {_signed(c['delta'])} points [{_signed(c['low'])}, {_signed(c['high'])}]: {c['verdict']}"
        )
    out += ["", "traffic per cycle (served by the shipped arm's production model):"]
    for t in report["traffic"]:
        out.append(
            f"  cycle {t['cycle']}: {t['requests']} requests, {_pct(t['served_right'])} answered right; users acted on "
            f"{t['labelled']} ({t['labelled_wrong']} with a wrong target); gate passed {t['gate_passed']}, reviewers failed "
            f"{t['review_failed']} of {t['reviewed']}; shipped dataset {t['shipped_records']} ({t['shipped_wrong']} wrong); {t['seconds']:.0f} s"
        )
    out += ["", "findings:"] + [f"  - {f}" for f in report["findings"]]
    return "\n".join(out) + "\n"


def arms_chart(report: dict, width: int = 640, height: int = 300) -> str:
    """Golden quality per cycle, one line per arm, with its 95 % interval as a vertical bar. The axes take in
    every interval (an interval reaches past the highest or lowest quality) and the bars, set side by side,
    stay inside the plot."""
    series = {_arm_label(name): [(r["cycle"], r["quality"]) for r in rows] for name, rows in report["arms"].items()}
    points = [p for s in series.values() for p in s]
    if not points:
        return svg_chart("Golden quality per cycle, by arm (95 % intervals)", series, "cycle", percent=True)
    step = 4  # pixels between the bars of neighbouring arms
    spread = (len(report["arms"]) - 1) / 2 * step
    ends = [r[k] for rows in report["arms"].values() for r in rows for k in ("low", "high") if r.get(k) is not None]
    frame = _Frame(points, len(series), width, height, y_extra=ends, inset=spread + 2)
    svg = svg_chart(
        "Golden quality per cycle, by arm (95 % intervals)",
        series,
        "cycle",
        percent=True,
        width=width,
        height=height,
        frame=frame,
    )
    bars = []
    for i, rows in enumerate(report["arms"].values()):
        color = PALETTE[i % len(PALETTE)]
        offset = i * step - spread  # side by side, so bars of equal arms do not hide each other
        for r in rows:
            x = frame.sx(r["cycle"]) + offset
            bars.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.sy(r["low"]):.1f}" y2="{frame.sy(r["high"]):.1f}" '
                f'stroke="{color}" stroke-width="1.5" opacity="0.6"/>'
            )
    return svg.replace("</svg>", "".join(bars) + "</svg>")


def arms_page(report: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ARM_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in arm_rows(report))
    comps = "".join(
        f"<li>vs {html.escape(_arm_label(c['arm']))}: {_signed(c['delta'])} points "
        f"[{_signed(c['low'])}, {_signed(c['high'])}]: {html.escape(c['verdict'])}</li>"
        for c in report["comparisons"]
    )
    finds = "".join(f"<li>{html.escape(f)}</li>" for f in report["findings"])
    traffic = "".join(
        f"<li>cycle {t['cycle']}: {t['requests']} requests, {_pct(t['served_right'])} answered right; "
        f"users acted on {t['labelled']} ({t['labelled_wrong']} wrong targets); gate passed {t['gate_passed']}; "
        f"reviewers failed {t['review_failed']} of {t['reviewed']}; shipped dataset {t['shipped_records']} "
        f"({t['shipped_wrong']} wrong)</li>"
        for t in report["traffic"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flywheel: real-model run against controls</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}}</style>
</head><body>
<h1>Real-model flywheel against controls</h1>
<p>{html.escape(report["model"])}; {report["golden_items"]} golden items about inputs that never occur in traffic
({html.escape(", ".join(report["golden_tasks"]))}); {report["requests"]:,} requests; {report["seconds"]:,.0f} s.</p>
{arms_chart(report)}
<h2>Golden quality per arm per cycle</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>The shipped arm at the last cycle against each control</h2><ul>{comps}</ul>
<h2>Findings</h2><ul>{finds}</ul>
<h2>Traffic</h2><ul>{traffic}</ul>
</body></html>
"""
