"""`flywheel rollout ...`: the A/B rollout of a candidate model, seen or overridden
(streams/rollout/ does the work)."""

from __future__ import annotations

import os

from flywheel.cli.base import DOCUMENT, Command, CommandError
from flywheel.cli.policy import load_policy
from flywheel.cli.services import announce_model_event, redis_client


def _controller(settings):
    """The rollout controller over Redis with the policy's rollout section."""
    from streams.rollout.controller import RolloutController

    return RolloutController(redis_client(settings), settings.app_id, load_policy(settings.gate_policy).rollout)


class RolloutStatus(Command):
    name = "status"
    help = "the rollout as JSON: arms, counts, acceptance, the test, the routing table, history"
    output = DOCUMENT
    json_help = "as it prints without --json"

    def run(self, args, settings) -> int:
        self.print_json(_controller(settings).status(), indent=2, sort_keys=True)
        return 0


class _Override(Command):
    output = DOCUMENT
    json_help = "the action and the models event it sent, as without --json"

    def run(self, args, settings) -> int:
        controller = _controller(settings)
        try:
            event = controller.override(self.name, who=os.environ.get("USER", "cli"))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        announce_model_event(settings, event)
        self.print_json(
            {
                "action": self.name,
                "event": event.event_type,
                "candidate": event.version,
                "incumbent": event.base_model,
            },
            sort_keys=True,
        )
        return 0


class RolloutPromote(_Override):
    name = "promote"
    help = "roll the candidate out to everyone now"


class RolloutRollback(_Override):
    name = "rollback"
    help = "back to the incumbent now"


class RolloutPause(_Override):
    name = "pause"
    help = "stop the ramp and send the candidate no traffic"


class RolloutResume(_Override):
    name = "resume"
    help = "continue a paused rollout"


class Rollout(Command):
    name = "rollout"
    help = "the A/B rollout of a candidate model: see it, or override it"
    dest = "rollout_command"
    subcommands = (RolloutStatus, RolloutPromote, RolloutRollback, RolloutPause, RolloutResume)
