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
        from flywheel.report.sources import PrometheusError, from_prometheus

        if args.prometheus:
            try:
                velocity = from_prometheus(args.prometheus, since_s=args.since_days * 86400)
            except PrometheusError as exc:
                raise CommandError(str(exc)) from None
        else:
            window_days = load_policy(settings.gate_policy).datasets.window_days
            with self.bar(args, desc="report: topics read", unit="rec") as progress:
                velocity = from_topics(settings, window_days, args.max_requests, progress)
        print(
            json.dumps(velocity.to_dict(), indent=2, sort_keys=True) if args.json else render.text(velocity),
            end="\n" if args.json else "",
        )
        if args.html:
            Path(args.html).write_text(render.page(velocity), encoding="utf-8")
            if not args.json:
                print(f"report written to {args.html}")
        return 0


def from_topics(settings, window_days: int, max_requests: int, progress):
    """flywheel.report.sources.from_topics with a progress bar over the records read.

    The same reading and the same figures; it belongs in flywheel/report/sources.py as a `progress`
    argument of from_topics, and lives here until that module's owner adds it.
    """
    from collections import Counter

    from flywheel.report.sources import ACCEPTING
    from flywheel.report.velocity import build, window_of
    from flywheel.settings import DAY_MS
    from flywheel.tail import read

    def events(topic: str, max_events: int | None = None) -> list[dict]:
        out = []
        for r in read(settings, topic, to_end=True, idle_timeout=3.0, max_events=max_events):
            progress.update(1)
            if isinstance(r.get("event"), dict) and "raw" not in r["event"]:
                out.append(r["event"])
        return out

    window_ms = window_days * DAY_MS
    ready = events(settings.topic_datasets_ready)
    models = sorted(events(settings.topic_models), key=lambda e: e.get("created_at", 0))
    verdicts = [v.get("event_time", 0) for v in events(settings.topic_verdicts)]
    acceptance: dict[tuple[str, int], tuple[int, int]] = {}
    users: dict[int, set] = {}  # only their counts leave this function
    newest = 0
    for c in events(settings.topic_candidates, max_requests):
        t = c.get("timestamp", 0)
        key = (c.get("model_version") or "-", window_of(t, window_ms))
        n, accepted = acceptance.get(key, (0, 0))
        acceptance[key] = (n + 1, accepted + (c.get("user_action") in ACCEPTING))
        users.setdefault(key[1], set()).add(c.get("user_id"))
        newest = max(newest, t)
    requests: Counter = Counter()  # per window, summed over the versions that served it
    for (_, start), (n, _) in acceptance.items():
        requests[start] += n
    windows = {t: (n, len(users[t])) for t, n in requests.items() if t + window_ms <= newest}  # complete ones only
    return build(ready, models, verdicts, acceptance, window_ms, windows)
