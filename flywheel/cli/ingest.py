"""`flywheel ingest`: the HTTP ingest API for apps without a Kafka client (flywheel/ingest/server.py)."""

from __future__ import annotations

import os

from flywheel.cli.base import Command, CommandError


class Ingest(Command):
    name = "ingest"
    help = (
        "serve the HTTP ingest API (interactions, actions, batches, OpenAI-shaped calls) "
        "for apps without a Kafka client"
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8090)
        parser.add_argument(
            "--token-file",
            default=None,
            metavar="FILE",
            help="bearer tokens, one a line (besides FLYWHEEL_INGEST_TOKENS, comma-separated)",
        )
        parser.add_argument(
            "--no-auth", action="store_true", help="accept requests without a token (local development only)"
        )
        parser.add_argument(
            "--max-pending",
            type=int,
            default=10_000,
            help="events waiting for the broker beyond which requests get 429 with Retry-After",
        )
        parser.add_argument("--max-batch", type=int, default=1000, help="most events in one /v1/batch request")
        parser.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="the Retry-After of a 429")

    def run(self, args, settings) -> int:
        from flywheel import logs
        from flywheel.ingest.server import serve, tokens_from

        logs.configure(settings.log_level)
        tokens = tokens_from(os.environ.get("FLYWHEEL_INGEST_TOKENS", ""), args.token_file)
        if not tokens and not args.no_auth:
            raise CommandError(
                "no ingest tokens: set FLYWHEEL_INGEST_TOKENS or --token-file (or --no-auth for local development)"
            )
        settings.broker_url  # a clear error when unset
        serve(
            settings,
            host=args.host,
            port=args.port,
            tokens=tokens,
            max_pending=args.max_pending,
            max_batch=args.max_batch,
            retry_after_s=args.retry_after,
        )
        return 0
