"""`flywheel report`: the flywheel's velocity cycle by cycle (flywheel/report/ builds and renders it)."""

from __future__ import annotations

from pathlib import Path

from flywheel.cli.base import DOCUMENT, Command, CommandError, positive_int
from flywheel.cli.policy import load_policy


class Report(Command):
    name = "report"
    help = "the flywheel's velocity cycle by cycle: text, --json, or an HTML page with plots"
    output = DOCUMENT
    json_help = "the figures instead of the table"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument("--html", default=None, metavar="FILE", help="also write the report with plots to FILE")
        parser.add_argument(
            "--prometheus",
            default=None,
            metavar="URL",
            help="read the metrics' history from this Prometheus server instead of the topics",
        )
        parser.add_argument(
            "--since-days", type=positive_int, default=56, metavar="D", help="with --prometheus: how far back"
        )
        parser.add_argument(
            "--max-requests",
            type=positive_int,
            default=1_000_000,
            metavar="N",
            help="joined requests read for acceptance per version (the topics source)",
        )

    def run(self, args, settings) -> int:
        import json

        from flywheel.report import render
        from flywheel.report.sources import PrometheusError, from_prometheus, from_topics

        if args.prometheus:
            try:
                velocity = from_prometheus(args.prometheus, since_s=args.since_days * 86400)
            except PrometheusError as exc:
                raise CommandError(str(exc)) from None
        else:
            window_days = load_policy(settings.gate_policy).datasets.window_days
            with self.bar(args, desc="report: topics read", unit="rec") as progress:
                velocity = from_topics(settings, window_days, args.max_requests, progress=progress)
        print(
            json.dumps(velocity.to_dict(), indent=2, sort_keys=True) if args.json else render.text(velocity),
            end="\n" if args.json else "",
        )
        if args.html:
            Path(args.html).write_text(render.page(velocity), encoding="utf-8")
            if not args.json:
                print(f"report written to {args.html}")
        return 0
