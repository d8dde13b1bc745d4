"""`flywheel ingest` and `flywheel import`: their argument parsers and what they run."""

from __future__ import annotations

import json
import os
import sys


def add_parsers(sub, parser_class) -> None:
    ing = sub.add_parser(
        "ingest",
        help="serve the HTTP ingest API (interactions, actions, batches, OpenAI-shaped calls) "
        "for apps without a Kafka client",
    )
    ing.add_argument("--host", default="127.0.0.1")
    ing.add_argument("--port", type=int, default=8090)
    ing.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="bearer tokens, one a line (besides FLYWHEEL_INGEST_TOKENS, comma-separated)",
    )
    ing.add_argument("--no-auth", action="store_true", help="accept requests without a token (local development only)")
    ing.add_argument(
        "--max-pending",
        type=int,
        default=10_000,
        help="events waiting for the broker beyond which requests get 429 with Retry-After",
    )
    ing.add_argument("--max-batch", type=int, default=1000, help="most events in one /v1/batch request")
    ing.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="the Retry-After of a 429")
    imp = sub.add_parser("import", help="import existing LLM logs as interactions and actions")
    isub = imp.add_subparsers(dest="import_command", required=True, parser_class=parser_class)
    oa = isub.add_parser(
        "openai-jsonl",
        help="chat-format JSONL (messages, or request/response pairs, with optional "
        "feedback fields; see flywheel/importers.py); '-' reads stdin, .gz is read as gzip",
    )
    oa.add_argument("file", metavar="FILE")
    oa.add_argument("--user-id", default="imported", help="the user id of lines that name none")


def run(args, settings) -> int:
    from flywheel import logs

    logs.configure(settings.log_level)
    if args.command == "ingest":
        from flywheel.ingest.server import serve, tokens_from

        tokens = tokens_from(os.environ.get("FLYWHEEL_INGEST_TOKENS", ""), args.token_file)
        if not tokens and not args.no_auth:
            print(
                "flywheel: error: no ingest tokens: set FLYWHEEL_INGEST_TOKENS or --token-file (or --no-auth for local "
                "development)",
                file=sys.stderr,
            )
            return 2
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
    from flywheel.importers import import_openai_jsonl, read_lines
    from flywheel.sdk import FlywheelProducer

    try:
        lines = read_lines(args.file)
        with FlywheelProducer(settings) as producer:
            summary = import_openai_jsonl(lines, producer, default_user=args.user_id)
    except OSError as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict(), sort_keys=True))
    return 0 if summary.interactions or not summary.lines else 1
