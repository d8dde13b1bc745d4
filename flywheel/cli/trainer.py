"""`flywheel trainer`: the trainer service (trainer/service.py); blocks."""

from __future__ import annotations

from flywheel.cli.base import Command


class Trainer(Command):
    name = "trainer"
    help = "the trainer: fine-tune on every sealed dataset, evaluate, gate, register (blocks)"

    def run(self, args, settings) -> int:
        from trainer.service import run_trainer

        return self.serve(settings, run_trainer)
