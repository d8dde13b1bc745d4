"""`flywheel simulate`: realistic traffic (flywheel/simulate.py) through the SDK's producer."""

from __future__ import annotations

import argparse

from flywheel.cli.base import DOCUMENT, Command, CommandError, positive_float, positive_int


def _mix(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        try:
            out[name.strip()] = float(share)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME=SHARE") from None
    return out


class Simulate(Command):
    name = "simulate"
    help = "produce realistic traffic through the SDK"
    output = DOCUMENT
    json_help = "the counts of what was sent, as without --json"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=positive_int, default=1000, help="requests to simulate")
        parser.add_argument(
            "--rate",
            type=positive_float,
            default=None,
            help="events per second of wall clock (default: as fast as possible)",
        )
        parser.add_argument("--event-rate", type=positive_float, default=5.0, help="requests per second of event time")
        parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same traffic")
        parser.add_argument(
            "--mix",
            type=_mix,
            default=None,
            help="primary behaviour shares, e.g. "
            "accepted=0.4,copied=0.1,corrected=0.1,regenerated=0.15,abandoned=0.05,none=0.2",
        )
        parser.add_argument(
            "--pii-rate", type=float, default=None, help="share of requests carrying personal data (default 0.03)"
        )
        parser.add_argument(
            "--toxic-rate", type=float, default=None, help="share of requests with an abusive response (default 0.01)"
        )
        parser.add_argument(
            "--no-tail-ticks",
            action="store_true",
            help="do not advance event time past the last settle window at the end",
        )

    def run(self, args, settings) -> int:
        from flywheel.sdk import FlywheelProducer
        from flywheel.simulate import TrafficSpec, generate, send

        spec_args = {"requests": args.requests, "seed": args.seed, "event_rate": args.event_rate}
        if args.mix:
            spec_args["action_mix"] = args.mix
        for name in ("pii_rate", "toxic_rate"):
            if getattr(args, name) is not None:
                spec_args[name] = getattr(args, name)
        try:
            spec = TrafficSpec(**spec_args)
            traffic = generate(spec, settings.settle_window_ms)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        with (
            FlywheelProducer(settings) as producer,
            self.bar(args, total=len(traffic.events), desc="simulate", unit="ev") as progress,
        ):
            counts = send(
                traffic,
                _Counted(producer, progress),
                rate=args.rate,
                tail_ticks=not args.no_tail_ticks,
                settle_window_ms=settings.settle_window_ms,
            )
        self.print_json(counts, sort_keys=True, default=str)
        return 0


class _Counted:
    """The producer, with each interaction and action `send` logs counted on the progress bar."""

    def __init__(self, producer, progress):
        self._producer, self._progress = producer, progress

    def __getattr__(self, name: str):
        return getattr(self._producer, name)

    def log_interaction(self, **record):
        self._progress.update(1)
        return self._producer.log_interaction(**record)

    def log_action(self, **record):
        self._progress.update(1)
        return self._producer.log_action(**record)
