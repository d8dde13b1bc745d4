"""`flywheel calibrate`: review verdicts against the gate, and a proposed threshold
(streams/review/calibrate.py)."""

from __future__ import annotations

import json
from pathlib import Path

from flywheel.cli.base import DOCUMENT, Command, CommandError, positive_float, positive_int
from flywheel.cli.policy import load_policy
from flywheel.cli.services import review_redis


class Calibrate(Command):
    name = "calibrate"
    help = "compare review verdicts with the gate; propose a quality threshold"
    output = DOCUMENT
    json_help = "the calibration report, as without --json"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument(
            "--policy",
            default=None,
            help="the gate policy the verdicts are compared with (default: FLYWHEEL_GATE_POLICY)",
        )
        parser.add_argument(
            "--write", default=None, metavar="FILE", help="write the calibrated policy (a new version) to FILE"
        )
        parser.add_argument(
            "--min-observations",
            type=positive_int,
            default=30,
            help="reviewed items needed before a threshold is proposed",
        )
        parser.add_argument(
            "--idle-timeout",
            type=positive_float,
            default=5.0,
            help="stop reading the verdicts topic after this many idle seconds",
        )

    def run(self, args, settings) -> int:
        from flywheel.tail import read
        from schemas.records import InvalidEvent, ReviewVerdict
        from streams.review.calibrate import calibrate, calibrated_policy
        from streams.review.queue import ReviewQueue, review_prefix

        policy = load_policy(args.policy or settings.gate_policy)
        verdicts, bad = [], 0
        with self.bar(args, desc="verdicts", unit="rec") as progress:
            for rec in read(settings, settings.topic_verdicts, idle_timeout=args.idle_timeout, to_end=True):
                progress.update(1)
                try:
                    verdicts.append(ReviewVerdict.from_dict(rec["event"]).check())
                except (KeyError, TypeError, InvalidEvent) as exc:
                    bad += 1
                    self.warn(f"{rec['topic']}:{rec['partition']}@{rec['offset']}: skipped: {exc}")
        report = calibrate(verdicts, policy, min_observations=args.min_observations)
        report["skipped_records"] = bad
        client = review_redis(settings)
        # the review page exports it
        client.set(ReviewQueue(client, review_prefix(settings)).calibration_key, json.dumps(report))
        if args.write:
            new = calibrated_policy(policy, report)
            if new is None:
                report["written"] = None
                self.print_json(report, indent=2)
                raise CommandError(
                    f"no threshold proposed ({report['threshold']['reason']}); {args.write} not written", code=1
                )
            Path(args.write).write_text(new.to_toml(), encoding="utf-8")
            report["written"] = {"file": args.write, "stamp": new.stamp}
        self.print_json(report, indent=2)
        return 0
