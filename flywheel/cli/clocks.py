"""`flywheel clocks show|reset`: the event-time clocks of the join and the dataset builder
(flywheel/clocks.py prints and refuses; streams/*/clockadmin.py do the work)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, LINES, Command


class _Clocks(Command):
    def run(self, args, settings) -> int:
        from flywheel.clocks import run

        return run(args, settings)


class ClocksShow(_Clocks):
    name = "show"
    help = (
        "each partition's event-time clock (the builder's saved clock, the join's state), "
        "marking any that stands further ahead of the wall clock than FLYWHEEL_MAX_EVENT_AHEAD_MS"
    )
    output = LINES
    json_help = "one a partition, instead of a table"

    def add_arguments(self, parser):
        from flywheel.clocks import ROLES

        parser.add_argument("--role", choices=ROLES, default=None, help="only this role (default: both)")
        parser.add_argument(
            "--metrics-url",
            default=None,
            metavar="URL",
            help="a join worker's /metrics to read its live watermarks from "
            "(default: this host's FLYWHEEL_METRICS_PORT)",
        )


class ClocksReset(_Clocks):
    name = "reset"
    help = "set one partition's clock back to a time: prints what changes, applies it only with --yes"
    output = DOCUMENT
    json_help = "the consequences"

    def add_arguments(self, parser):
        from flywheel.clocks import ROLES, parse_partition, parse_time

        parser.add_argument("--role", choices=ROLES, required=True)
        parser.add_argument("--partition", type=parse_partition, required=True, metavar="N")
        parser.add_argument(
            "--to",
            type=parse_time,
            required=True,
            metavar="TIME",
            help="ISO 8601 (UTC by default), ms since the epoch, or now",
        )
        parser.add_argument(
            "--yes", action="store_true", help="apply it (without: print the consequences and change nothing)"
        )


class Clocks(Command):
    name = "clocks"
    help = "event-time clocks of the join and the dataset builder: see them, or reset a poisoned one"
    dest = "clocks_command"
    subcommands = (ClocksShow, ClocksReset)
