"""The `flywheel` command: one small module per command on one base (`base.py`), one error path.

Every command has --help; a wrong argument gives one line and exit 2; an error while it runs gives
one line on stderr and a non-zero exit (the traceback only with --debug or FLYWHEEL_DEBUG=1).
Commands that print data take --json; long ones draw a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from flywheel.cli.base import Command, CommandError, Parser
from flywheel.cli.bootstrap import Bootstrap
from flywheel.cli.calibrate import Calibrate
from flywheel.cli.clocks import Clocks
from flywheel.cli.datasets import Datasets
from flywheel.cli.demo import Demo
from flywheel.cli.erasure import Erasure
from flywheel.cli.gate import Gate
from flywheel.cli.golden import Golden
from flywheel.cli.guards import Guards
from flywheel.cli.importer import Import
from flywheel.cli.ingest import Ingest
from flywheel.cli.models import Models
from flywheel.cli.policy import Policy
from flywheel.cli.report import Report
from flywheel.cli.review import Review, Reviewers
from flywheel.cli.rollout import Rollout
from flywheel.cli.simulate import Simulate
from flywheel.cli.tail import Tail
from flywheel.cli.topics import Topics
from flywheel.cli.trainer import Trainer
from flywheel.cli.up import Up
from flywheel.cli.worker import Worker
from flywheel.settings import Settings, SettingsError

__all__ = ["COMMANDS", "Command", "CommandError", "build_parser", "main"]

# in the order `flywheel --help` and the reference page list them
COMMANDS: tuple[type[Command], ...] = (
    Up,
    Demo,
    Worker,
    Topics,
    Simulate,
    Policy,
    Gate,
    Review,
    Reviewers,
    Calibrate,
    Datasets,
    Erasure,
    Trainer,
    Models,
    Rollout,
    Report,
    Guards,
    Golden,
    Bootstrap,
    Ingest,
    Import,
    Clocks,
    Tail,
)


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-flywheel")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="flywheel", description="A streaming data flywheel for LLM applications.")
    p.add_argument("--version", action="version", version=f"flywheel {_installed_version()}")
    p.add_argument(
        "--debug", action="store_true", help="print the traceback of an unexpected error (or FLYWHEEL_DEBUG=1)"
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for command in COMMANDS:
        command().install(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._command.run(args, Settings.from_env())
    except (CommandError, SettingsError) as exc:
        _one_line(str(exc))
        return exc.code if isinstance(exc, CommandError) else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `flywheel ... | head`: the reader left; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug or a service away: one line, unless the traceback is asked for
        if args.debug or os.environ.get("FLYWHEEL_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        else:
            _one_line(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


def _one_line(message: str) -> None:
    print(f"flywheel: error: {' '.join(message.split())}", file=sys.stderr)
