"""`flywheel policy show|check`: the quality gate's policy (flywheel/policy)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, Command, CommandError


def load_policy(path):
    """The gate policy at `path`; a PolicyError becomes the CLI's one-line error."""
    from flywheel.policy import GatePolicy, PolicyError

    try:
        return GatePolicy.load(path)
    except PolicyError as exc:
        raise CommandError(str(exc)) from None


class PolicyShow(Command):
    name = "show"
    help = "print the effective policy as JSON (FLYWHEEL_GATE_POLICY, or the defaults)"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("--file", default=None, help="a policy file instead of FLYWHEEL_GATE_POLICY")

    def run(self, args, settings) -> int:
        self.print_json(load_policy(args.file or settings.gate_policy).show(), indent=2)
        return 0


class PolicyCheck(Command):
    name = "check"
    help = "validate a policy file: exit 0 and its stamp, or one line saying what is wrong"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("file", help="the policy TOML file")

    def run(self, args, settings) -> int:
        self.print_json({"ok": True, "stamp": load_policy(args.file).stamp})
        return 0


class Policy(Command):
    name = "policy"
    help = "the quality gate's policy"
    dest = "policy_command"
    subcommands = (PolicyShow, PolicyCheck)
