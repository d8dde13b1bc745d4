"""`flywheel bootstrap`: the cold start, model v1 trained and made production (trainer/bootstrap.py)."""

from __future__ import annotations

from flywheel.cli.base import DOCUMENT, Command, CommandError, positive_int
from flywheel.cli.services import announce_model_event, registry


class Bootstrap(Command):
    name = "bootstrap"
    help = "cold start: train model v1 on synthetic examples (and labels), register it as production"
    output = DOCUMENT
    json_help = "the new production version, as without --json"
    progress = True

    def add_arguments(self, parser):
        parser.add_argument(
            "--synthetic", type=positive_int, required=True, metavar="N", help="synthetic examples to generate"
        )
        parser.add_argument(
            "--labels",
            default=None,
            metavar="FILE",
            help="manually labelled examples, JSONL or CSV (prompt, target[, task_type])",
        )
        parser.add_argument("--tasks", default=None, help="synthetic task families, comma-separated (default: all)")
        parser.add_argument(
            "--base",
            default="",
            metavar="NAME_OR_DIR",
            help="start from this base (a name `flywheel models import` gave, or a model directory) instead of "
            "building the default small model",
        )

    def run(self, args, settings) -> int:
        from flywheel import logs
        from flywheel.policy import GatePolicy, PolicyError
        from trainer import synthetic
        from trainer.bootstrap import bootstrap
        from trainer.cycle import Refused
        from trainer.files import RecordFileError
        from trainer.golden import GoldenStore
        from trainer.labels import load_labels

        logs.configure(settings.log_level)
        try:
            tasks = (
                tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else tuple(synthetic.TASKS)
            )
            for t in tasks:
                synthetic.task(t)
            labels = load_labels(args.labels) if args.labels else []
            policy = GatePolicy.load(settings.gate_policy)
            with self.bar(args, desc="bootstrap: training", unit="step") as progress:

                def step(epoch: int, n: int, loss: float) -> None:
                    progress.update(1)
                    progress.set_postfix(epoch=epoch, loss=f"{loss:.3f}", refresh=False)

                result = bootstrap(
                    registry(settings),
                    GoldenStore(settings.golden_path),
                    policy.trainer,
                    args.synthetic,
                    labels,
                    tasks,
                    args.base,
                    progress=step,
                )
        except (RecordFileError, PolicyError, Refused, ValueError, FileNotFoundError, KeyError) as exc:
            raise CommandError(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from None
        e = result.event
        try:  # the cold start is a models event like any other, so rollout and reports see v1
            announced = announce_model_event(settings, e)
        except Exception as exc:
            raise CommandError(
                f"{result.version} is registered as production but its models event was not sent: {exc}", code=1
            ) from None
        self.print_json(
            {
                "version": result.version,
                "production": True,
                "examples": e.examples,
                "metrics": e.metrics,
                "golden_version": e.golden_version,
                "examples_per_s": round(result.examples_per_s, 1),
                "announced": announced,
            },
            sort_keys=True,
        )
        return 0
