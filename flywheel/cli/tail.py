"""`flywheel tail`: a topic's decoded events as JSON lines (flywheel/tail.py)."""

from __future__ import annotations

import sys

from flywheel.cli.base import LINES, Command, positive_float, positive_int


class Tail(Command):
    name = "tail"
    help = "print decoded events of a topic as JSON lines"
    output = LINES
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument(
            "topic",
            help="interactions | actions | candidates | passed | rejected | verdicts | datasets | erasure | models | "
            "deadletter, or a full topic name",
        )
        parser.add_argument("--new", action="store_true", help="only events that arrive from now on")
        parser.add_argument("--max", type=positive_int, default=None, help="stop after this many events")
        parser.add_argument(
            "--idle-timeout", type=positive_float, default=5.0, help="stop after this many idle seconds"
        )

    def run(self, args, settings) -> int:
        from flywheel.tail import tail

        tail(
            settings,
            args.topic,
            sys.stdout,
            from_beginning=not args.new,
            max_events=args.max,
            idle_timeout=args.idle_timeout,
        )
        return 0
