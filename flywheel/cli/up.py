"""`flywheel up`: the whole stack on one machine (flywheel/stack.py does the work)."""

from __future__ import annotations

import json

from flywheel.cli.base import Command


class Up(Command):
    name = "up"
    help = (
        "start the embedded broker (and Redis if none answers), create topics, run the worker, "
        "review page, dataset builder and trainer as child processes, each restarted if it exits"
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=None, help="embedded broker port (default: a free one)")
        parser.add_argument("--data-dir", default=None, help="where the embedded broker keeps its data")
        parser.add_argument(
            "--no-worker", action="store_true", help="do not run the stream worker (the other roles still run)"
        )
        parser.add_argument("--no-review", action="store_true", help="do not serve the review page beside the worker")
        parser.add_argument(
            "--no-datasets", action="store_true", help="do not run the dataset builder beside the worker"
        )
        parser.add_argument("--no-trainer", action="store_true", help="do not run the trainer beside the worker")

    def run(self, args, settings) -> int:
        import contextlib
        import logging
        import signal
        import threading
        import time

        from flywheel import logs
        from flywheel.stack import embedded_stack, services

        logs.configure(settings.log_level)
        # SIGINT and SIGTERM only ask for a stop, even during start-up: everything started is then stopped
        # in order (roles, then Redis, then the broker, which saves on SIGTERM) and `up` exits 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.set())
        overrides = {k: v for k, v in (("broker_port", args.port), ("data_dir", args.data_dir)) if v is not None}
        with contextlib.ExitStack() as stack:
            live = stack.enter_context(embedded_stack(settings.replace(**overrides)))
            roles = [
                (name, argv)
                for name, argv, off in (
                    ("review", ("review",), args.no_review),
                    ("datasets", ("datasets", "run"), args.no_datasets),
                    ("trainer", ("trainer",), args.no_trainer),
                    ("worker", ("worker",), args.no_worker),
                )
                if not off
            ]
            if not stop.is_set():
                stack.enter_context(services(live, *roles))
            print(json.dumps(_addresses(args, live)), flush=True)
            while not stop.is_set():
                time.sleep(0.1)  # a signal's handler runs between two sleeps
            logging.getLogger("flywheel.up").info("stopping", extra={"roles": [name for name, _ in roles]})
        return 0


def _addresses(args, live) -> dict:
    """Where each started part answers (None: not started), as `up` prints it once the stack runs."""
    return {
        "kafka_bootstrap": live.kafka_bootstrap,
        "redis_url": live.redis_url,
        "metrics": None
        if args.no_worker or not live.metrics_port
        else f"http://127.0.0.1:{live.metrics_port}/metrics",
        "review": None if args.no_review else f"http://{live.review_host}:{live.review_port}/",
        "datasets": None if args.no_datasets else live.datasets_url,
        "trainer_metrics": None
        if args.no_trainer or not live.trainer_metrics_port
        else f"http://127.0.0.1:{live.trainer_metrics_port}/metrics",
        "add_a_reviewer": "flywheel reviewers add NAME",
    }
