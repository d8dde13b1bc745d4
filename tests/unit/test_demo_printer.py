"""What the default demo prints (flywheel/demo/printer.py), apart from the loop that runs it: a velocity row
per cycle under one header, a line a week to a pipe, a status line rewritten in place on a terminal, and with
--json nothing but the final JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

from flywheel.demo.printer import DemoPrinter
from flywheel.demo.traffic import DemoSpec
from flywheel.report import render
from flywheel.report.velocity import build
from flywheel.routing import Routing

W = 7 * 86_400_000


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def velocity():
    ready = [{"dataset_id": "ds-0", "window_start": 0, "counts": {"records": 900, "window.decisions": 2000}}]
    models = [
        {"event_type": "bootstrap", "version": "v0001", "metrics": {"overall": 0.5}, "created_at": 1},
        {"event_type": "candidate", "version": "v0002", "dataset_id": "ds-0", "metrics": {"overall": 0.8}},
    ]
    return build(ready, models, [], {}, W)


def days(printer: DemoPrinter, spec: DemoSpec) -> None:
    for day in range(spec.weeks * 7):
        printer.day_done(day, spec, 500 * (day + 1), Routing("v0001", "v0002", 0.25), 0, float(day))


def test_a_pipe_gets_the_table_under_one_header_and_a_line_a_week():
    out, spec = io.StringIO(), DemoSpec(weeks=2)
    p = DemoPrinter(out)
    p.cold_start_begins(spec)
    p.cold_start_done("v0001", 0.448, 58, 4)
    row = render.rows(velocity())[0]
    p.cycle(row)
    p.cycle(row)
    days(p, spec)
    lines = out.getvalue().splitlines()
    assert lines[0] == "cold start: training v1 on 1200 synthetic examples of qa, sql, support ..."
    assert lines[1] == "cold start: v0001 scores 44.8% on the golden set (58 held-out items, 4 task types)"
    assert lines[2] == render.table(render.COLUMNS, []).splitlines()[0] and set(lines[3]) == {"-", " "}
    assert lines[4] == lines[5] and lines[4].split()[:2] == ["1", "1970-01-01"]
    assert lines[6:] == [
        "-- week 1: 3,500 requests, production v0001, A/B v0002 at 25%, 6s",
        "-- week 2: 7,000 requests, production v0001, A/B v0002 at 25%, 13s",
    ]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_a_status_line_rewritten_in_place_and_quiet_progress_turns_it_off():
    spec = DemoSpec(weeks=1)
    term = Terminal()
    days(DemoPrinter(term), spec)
    assert term.getvalue().count("\r\033[K") == 7 and "week 1/1 day 7 | 3,500 requests" in term.getvalue()
    quiet = Terminal()
    days(DemoPrinter(quiet, quiet_progress=True), spec)
    assert "\r" not in quiet.getvalue() and quiet.getvalue().startswith("-- week 1: 3,500 requests")


def test_json_mode_prints_only_the_final_json(tmp_path: Path):
    out, spec = io.StringIO(), DemoSpec(weeks=1)
    p = DemoPrinter(out, as_json=True)
    p.cold_start_begins(spec)
    p.services_started(tmp_path, spec)
    p.cycle(render.rows(velocity())[0])
    days(p, spec)
    p.days_done()
    p.finished(velocity(), spec, 3500, 12.34, tmp_path / "report.html")
    result = json.loads(out.getvalue())
    assert (result["requests"], result["seconds"], result["weeks"], result["seed"]) == (3500, 12.3, 1, 0)
    assert result["cycles"][0]["quality"] == 0.8 and result["report"] == str(tmp_path / "report.html")


def test_the_summary_is_the_report_text_and_where_the_page_is(tmp_path: Path):
    out, spec = io.StringIO(), DemoSpec(weeks=1)
    DemoPrinter(out).finished(velocity(), spec, 3500, 61.0, tmp_path / "report.html")
    text = out.getvalue()
    assert render.text(velocity()).rstrip() in text
    assert text.endswith(f"1 weeks of event time, 3,500 requests in 61 s; report with plots: {tmp_path}/report.html\n")
