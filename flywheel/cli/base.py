"""The base every `flywheel` command derives from, and the CLI's one error path.

A command is a small class: a name, a help line, `add_arguments(parser)` and `run(args, settings)`,
which parses, delegates to the layer that does the work, and prints. A command that prints data
says what `--json` gives (`output`: one JSON document, or JSON lines where it streams), and a long
one says so (`progress`): the base adds `--json` and `--no-progress` to them alike, so every command
spells them the same way. Errors take one path (`main` in `__init__.py`): a `CommandError`, a
settings error or an unexpected exception becomes one line on stderr and a non-zero exit; the
traceback only with `flywheel --debug` or FLYWHEEL_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, ClassVar

DOCUMENT = "document"
LINES = "lines"

JSON_HELP = {
    DOCUMENT: "print the result as one JSON document on stdout",
    LINES: "print JSON lines on stdout, one object a line",
}


class CommandError(Exception):
    """What the user asked for cannot be done, or a record is wrong: one line on stderr, exit `code`
    (2: refused before it ran, the default; 1: it ran and failed)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def key_message(exc: KeyError) -> str:
    """A KeyError's message without the quotes `str()` puts around it."""
    return str(exc.args[0]) if exc.args else str(exc)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind: type, noun: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


positive_int = _positive(int, "an integer")
positive_float = _positive(float, "a number")


class Command:
    """One `flywheel` command, or a group of subcommands (`subcommands`, their name in `args.<dest>`)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    output: ClassVar[str | None] = None  # DOCUMENT or LINES: what --json prints; None: no data printed
    json_help: ClassVar[str] = ""  # what --json changes, when the help line of `output` is not enough
    progress: ClassVar[bool] = False  # a long command: a progress bar on stderr, and --no-progress
    dest: ClassVar[str] = ""  # a group's: the attribute its subcommand's name goes to
    subcommands: ClassVar[tuple[type["Command"], ...]] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own arguments (--json and --no-progress come from the base)."""

    def run(self, args: argparse.Namespace, settings: Any) -> int:
        raise NotImplementedError(self.name)

    @staticmethod
    def serve(settings: Any, service: Callable[[Any], object]) -> int:
        """A service that blocks: structured logs on, the broker required (a clear error when unset), then run."""
        from flywheel import logs

        logs.configure(settings.log_level)
        settings.broker_url
        service(settings)
        return 0

    def install(self, sub: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(self.name, help=self.help)
        self.add_arguments(parser)
        if self.output:
            text = JSON_HELP[self.output] + (f": {self.json_help}" if self.json_help else "")
            parser.add_argument("--json", action="store_true", help=text)
        if self.progress:
            parser.add_argument(
                "--no-progress",
                action="store_true",
                help="no progress bar (there is none when stderr is not a terminal, or with --json)",
            )
        if self.subcommands:
            group = parser.add_subparsers(dest=self.dest, required=True, parser_class=Parser, metavar="COMMAND")
            for command in self.subcommands:
                command().install(group)
        else:
            parser.set_defaults(_command=self)
        return parser

    # -- helpers the commands share -----------------------------------------------------------
    @staticmethod
    def bar(args: argparse.Namespace, total: int | None = None, desc: str = "", unit: str = "it") -> Any:
        """A progress bar on stderr, off with --json or --no-progress, and when stderr is not a terminal."""
        from flywheel.progress import bar

        quiet = getattr(args, "json", False) or getattr(args, "no_progress", False)
        return bar(total=total, desc=desc, unit=unit, force=False if quiet else None)

    @staticmethod
    def print_json(data: Any, **dumps: Any) -> None:
        print(json.dumps(data, **dumps))

    @staticmethod
    def warn(message: str) -> None:
        """A skipped record and the like: one line on stderr; the command goes on."""
        print(f"flywheel: {message}", file=sys.stderr)
