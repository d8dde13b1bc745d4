"""`flywheel worker`: the stream worker (streams/app.py), against FLYWHEEL_KAFKA_BOOTSTRAP."""

from __future__ import annotations

from flywheel.cli.base import Command


class Worker(Command):
    name = "worker"
    help = "run a stream worker against FLYWHEEL_KAFKA_BOOTSTRAP"

    def run(self, args, settings) -> int:
        settings.broker_url  # a clear error when unset
        from streams.app import run_worker

        run_worker(settings)
        return 0
