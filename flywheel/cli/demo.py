"""`flywheel demo`: the whole loop on one machine (flywheel/demo/ does the work)."""

from __future__ import annotations

import os
from pathlib import Path

from flywheel.cli.base import DOCUMENT, Command, CommandError, positive_int

PERFECT_USERS = dict(idle_rate=0.0, wrong_accept_rate=0.0, bad_correction_rate=0.0)


def demo_app_id(seed: int, data_dir: str) -> str:
    """`demo-<seed>-<8 hex of the data dir>`: the demo clears its app's Redis keys when it starts, so
    two runs of one seed at once (a test and a manual run) each need their own app id, and one run's
    data dir always gets the same one."""
    import hashlib

    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode("utf-8")).hexdigest()[:8]
    return f"demo-{seed}-{digest}"


class Demo(Command):
    name = "demo"
    help = "the whole loop on one machine: weeks of simulated traffic, model improving cycle by cycle"
    output = DOCUMENT
    json_help = "the result instead of the table"

    def add_arguments(self, parser):
        parser.add_argument(
            "--weeks", type=positive_int, default=8, help="weeks of event time to simulate (default 8)"
        )
        parser.add_argument(
            "--small", action="store_true", help="a short, light run (fewer requests a day): the CI mode"
        )
        parser.add_argument(
            "--perfect-users",
            action="store_true",
            help="users who never err (no idle, no wrong accepts or corrections): the comparison the noisy default "
            "is measured against",
        )
        parser.add_argument(
            "--requests-per-day", type=positive_int, default=None, metavar="N", help="default 500 (200 with --small)"
        )
        parser.add_argument("--seed", type=int, default=0, help="makes the run repeatable")
        parser.add_argument(
            "--report", default=None, metavar="FILE", help="where to write the HTML report (default: in the data dir)"
        )
        parser.add_argument(
            "--data-dir", default=None, help="a fresh directory for the run (default: a new temporary one)"
        )
        parser.add_argument(
            "--model",
            choices=("default", "smollm2"),
            default="default",
            help="smollm2: the real-model run (SmolLM2-135M-Instruct, offline) against three control arms "
            "(flywheel/demo/real.py)",
        )
        parser.add_argument(
            "--cycles",
            type=positive_int,
            default=None,
            metavar="N",
            help="with --model smollm2: training cycles (default 4)",
        )
        parser.add_argument(
            "--requests-per-cycle",
            type=positive_int,
            default=None,
            metavar="N",
            help="with --model smollm2: requests a cycle (default 144)",
        )

    def run(self, args, settings) -> int:
        import logging

        os.environ.setdefault(
            "HF_HUB_DISABLE_PROGRESS_BARS", "1"
        )  # no "Loading weights" bars in the table (children too)
        logging.basicConfig(level=logging.WARNING)  # the services log to files; the demo prints its table
        if args.model == "smollm2":
            return _real(args)
        return _default(args, settings)


def _default(args, settings) -> int:
    import tempfile

    from flywheel.demo.run import run
    from flywheel.demo.traffic import DemoSpec
    from flywheel.embedded import free_port

    per_day = args.requests_per_day or (200 if args.small else 500)
    try:
        noise = PERFECT_USERS if args.perfect_users else {}
        spec = DemoSpec(weeks=args.weeks, requests_per_day=per_day, seed=args.seed, **noise).check()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="flywheel-demo-")
    # its own ports, so a `flywheel up` on this machine does not get in the way
    demo_settings = settings.replace(
        data_dir=data_dir,
        app_id=demo_app_id(args.seed, data_dir),
        metrics_port=free_port(),
        review_port=free_port(),
        datasets_metrics_port=free_port(),
        trainer_metrics_port=free_port(),
        kafka_bootstrap="",
        dataset_store=str(Path(data_dir) / "datasets"),
    )
    try:
        run(demo_settings, spec, as_json=args.json, report_path=args.report)
    except (ValueError, TimeoutError) as exc:
        raise CommandError(str(exc), code=1) from None
    return 0


def _real(args) -> int:
    import tempfile

    from flywheel.demo.real import RealSpec, run as run_real

    try:
        noise = PERFECT_USERS if args.perfect_users else {}
        sizes = {k: v for k, v in (("cycles", args.cycles), ("requests_per_cycle", args.requests_per_cycle)) if v}
        spec = RealSpec(seed=args.seed, **sizes, **noise).check()
        run_real(
            spec,
            as_json=args.json,
            report_path=args.report,
            data_dir=args.data_dir or tempfile.mkdtemp(prefix="flywheel-demo-smollm2-"),
        )
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc), code=1) from None
    return 0
