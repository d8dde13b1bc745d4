"""`flywheel guards ...`: the negative-flywheel monitors (streams/guards/), seen or released."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, Command, CommandError
from flywheel.cli.policy import load_policy
from flywheel.cli.services import redis_client


def _keeper(settings):
    from streams.guards.keeper import keeper_for

    return keeper_for(redis_client(settings), settings.app_id, load_policy(settings.gate_policy))


class GuardsStatus(Command):
    name = "status"
    help = "every monitor's value, bound and state, satisfaction per model version, the holds (JSON)"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def run(self, args, settings) -> int:
        self.print_json(_keeper(settings).judge().to_dict(), indent=2, sort_keys=True)
        return 0


class GuardsRelease(Command):
    name = "release"
    help = "lift a guard's hold (datasets: due windows are sealed again)"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def add_arguments(self, parser):
        parser.add_argument("target", help="what is held: datasets")

    def run(self, args, settings) -> int:
        keeper = _keeper(settings)
        try:
            released = keeper.store.release(args.target)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.print_json({"target": args.target, "released": released}, sort_keys=True)
        return 0


class Guards(Command):
    name = "guards"
    help = "the negative-flywheel monitors: see them, or release what they hold"
    dest = "guards_command"
    subcommands = (GuardsStatus, GuardsRelease)
