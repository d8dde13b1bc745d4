"""`flywheel erasure status USER`: where an erased user's data may still be (streams/datasets/erasure.py)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, Command, CommandError
from flywheel.cli.services import redis_client


class ErasureStatus(Command):
    name = "status"
    help = (
        "everywhere a user's data may still exist (topics until retention, dead letters, the review "
        "queue, each dataset version, each model), what was removed, and when the rest expires"
    )
    output = DOCUMENT
    json_help = "the report instead of its lines"

    def add_arguments(self, parser):
        parser.add_argument("user_id", metavar="USER")

    def run(self, args, settings) -> int:
        from flywheel.datastore import DatasetStore
        from flywheel.policy import GatePolicy, PolicyError
        from streams.datasets import erasure
        from trainer.registry import Registry

        if not str(args.user_id).strip():
            raise CommandError("USER must be a user id")
        try:
            client = redis_client(settings)
            policy = GatePolicy.load(settings.gate_policy)
            report = erasure.status(
                settings,
                args.user_id,
                client,
                DatasetStore(settings.datasets_url),
                Registry(settings.models_dir, client, settings.app_id, cache_dir=settings.model_cache_dir),
                policy,
            )
        except PolicyError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # Redis away, the store unreadable: one line
            raise CommandError(
                f"the erasure status could not be read ({type(exc).__name__}: {str(exc)[:300]})"
            ) from None
        if args.json:
            self.print_json(report, sort_keys=True)
        else:
            print("\n".join(erasure.lines(report)))
        return 0


class Erasure(Command):
    name = "erasure"
    help = "where an erased user's data may still be"
    dest = "erasure_command"
    subcommands = (ErasureStatus,)
