"""What `flywheel demo` prints, apart from what it does (flywheel/demo/loop.py): the cold start, the
services, a velocity row per cycle as each is trained, a status line per day (rewritten in place on
a terminal, a line a week otherwise), and the report at the end; with `--json`, only the final JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from flywheel.report import render

if TYPE_CHECKING:
    from flywheel.demo.traffic import DemoSpec
    from flywheel.report.velocity import Velocity
    from flywheel.routing import Routing


@dataclass
class DemoPrinter:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    as_json: bool = False
    # no status line rewritten in place, even on a terminal (a caller that prints around the demo)
    quiet_progress: bool = False
    header_done: bool = False

    @property
    def tty(self) -> bool:
        """A terminal gets the day's status line rewritten in place; a pipe or a log gets a line a week."""
        return self.out.isatty() and not self.quiet_progress and not self.as_json

    def say(self, msg: str) -> None:
        if not self.as_json:
            print(msg, file=self.out, flush=True)

    def cold_start_begins(self, spec: DemoSpec) -> None:
        self.say(
            f"cold start: training v1 on {spec.cold_start_examples} synthetic examples of {', '.join(spec.cold_start_tasks)} ..."
        )

    def cold_start_done(self, version: str, quality: float, golden_items: int, task_types: int) -> None:
        self.say(
            f"cold start: {version} scores {quality:.1%} on the golden set "
            f"({golden_items} held-out items, {task_types} task types)"
        )

    def services_started(self, logs: Path, spec: DemoSpec) -> None:
        self.say(
            f"services: worker, dataset builder, trainer, review page (logs in {logs}); "
            f"{spec.weeks} weeks of traffic, {spec.requests_per_day} requests a day"
        )

    def cycle(self, row: list[str]) -> None:
        """A cycle the trainer has given its verdict on: one row of the velocity table (the header first)."""
        if self.as_json:
            return
        if self.tty:
            self.out.write("\r\033[K")
        if not self.header_done:
            self.say(render.table(render.COLUMNS, []))
            self.header_done = True
        self.say(render.table(render.COLUMNS, [row]).splitlines()[-1])

    def day_done(self, day: int, spec: DemoSpec, sent: int, routing: Routing, cycles: int, elapsed: float) -> None:
        if self.tty:
            self.out.write(
                f"\r\033[Kweek {day // 7 + 1}/{spec.weeks} day {day % 7 + 1} | {sent:,} requests | "
                f"production {routing.production or '-'}"
                + (f" | A/B {routing.candidate} at {routing.weight:.0%}" if routing.candidate else "")
                + f" | {cycles} cycles | {elapsed:,.0f}s"
            )
            self.out.flush()
        elif not self.as_json and day % 7 == 6:
            self.say(
                f"-- week {day // 7 + 1}: {sent:,} requests, production {routing.production or '-'}"
                + (f", A/B {routing.candidate} at {routing.weight:.0%}" if routing.candidate else "")
                + f", {elapsed:,.0f}s"
            )

    def days_done(self) -> None:
        if self.tty:
            self.out.write("\r\033[K")

    def finished(self, velocity: Velocity, spec: DemoSpec, sent: int, elapsed: float, html: Path) -> None:
        if self.as_json:
            print(
                json.dumps(
                    {
                        **velocity.to_dict(),
                        "seconds": round(elapsed, 1),
                        "requests": sent,
                        "report": str(html),
                        "weeks": spec.weeks,
                        "seed": spec.seed,
                    },
                    indent=2,
                    sort_keys=True,
                ),
                file=self.out,
            )
        else:
            self.say("")
            self.say(render.text(velocity).rstrip())
            self.say(
                f"\n{spec.weeks} weeks of event time, {sent:,} requests in {elapsed:,.0f} s; report with plots: {html}"
            )
