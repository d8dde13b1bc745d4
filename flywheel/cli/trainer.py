"""`flywheel trainer`: the trainer service (trainer/service.py); blocks."""

from __future__ import annotations

from flywheel.cli.base import Command


class Trainer(Command):
    name = "trainer"
    help = "the trainer: fine-tune on every sealed dataset, evaluate, gate, register (blocks)"

    def run(self, args, settings) -> int:
        from flywheel import logs
        from trainer.service import run_trainer

        logs.configure(settings.log_level)
        settings.broker_url  # a clear error when unset
        run_trainer(settings)
        return 0
